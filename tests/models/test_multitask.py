"""The multi-task baselines: shared_bottom, mmoe, ple."""

import numpy as np
import pytest
import tensorflow as tf

from tests.models import zoo_checks
from tfmdl import models
from tfmdl.models import common
from tfmdl.layers import moe
from tfmdl.pipelines import spec as spec_lib

SMALL = {
    "shared_bottom": {"backbone_hidden": [32, 16], "tower_hidden": [8]},
    "mmoe": {"num_experts": 3, "expert_hidden": [16], "tower_hidden": [8]},
    "ple": {"levels": 2, "task_experts": 1, "shared_experts": 2, "expert_hidden": [16],
            "tower_hidden": [8]},
}
MODELS = sorted(SMALL)
FULL_CYCLE = MODELS   # build, XLA train, save/load (test_trainer checks all are covered)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    zoo_checks.check_full_cycle(name, SMALL[name], feed_dir, tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_rankmixer_backbone(name, feed_dir):
    zoo_checks.check_rankmixer_backbone(name, SMALL[name], feed_dir)


def _input_width(built, spec):
    emb = built.core.get_layer("feature_embedding")
    return sum(emb.dim(n) for n in spec.feature_names) + spec.scenario.count


def test_mmoe_experts_and_gates_sit_on_the_raw_embeddings(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    K = len(spec.tasks)
    built = models.build("mmoe", spec, SMALL["mmoe"])
    names = {l.name for l in built.core.submodules}
    assert "backbone_mlp" not in names                       # default backbone_hidden: []
    layer = built.core.get_layer("mmoe")
    assert isinstance(layer, moe.MixtureOfExperts)
    d = _input_width(built, spec)
    assert layer.experts.layers_[0].kernel.shape == (3, d, 16)    # E experts on [e; m]
    assert layer.gate.logits.kernel.shape == (K, d, 3)            # one gate per task
    assert built.core.get_layer("task_towers").num_tasks == K


def test_ple_levels_and_experts(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    K = len(spec.tasks)
    built = models.build("ple", spec, dict(SMALL["ple"], levels=3))
    cgcs = [built.core.get_layer(f"cgc_{j}") for j in range(3)]
    assert [c.shared_output for c in cgcs] == [True, True, False]
    for c in cgcs:
        assert c.experts.num_experts == K * 1 + 2
        assert c.task_gate.logits.kernel.shape[::2] == (K, 1 + 2)       # own + shared
        assert (c.shared_gate is None) or c.shared_gate.logits.kernel.shape[::2] == (1, K + 2)
    # level 2 reads level 1's K task outputs and its shared output (K + 1 slots)
    assert cgcs[1].input_shape == (None, K + 1, 16)
    assert cgcs[2].output_shape == (None, K, 16)


def _perturb_scenario_slices(layer, S, K, s=1):
    """Adds noise to the rows of (scenario ``s``, task) towers/gates of a layer
    whose weights have a leading ``S·K`` axis."""
    rng = np.random.default_rng(0)
    touched = 0
    for w in layer.weights:
        if w.shape[0] == S * K:
            value = w.numpy()
            value[s * K:(s + 1) * K] += rng.normal(size=value[s * K:(s + 1) * K].shape)
            w.assign(value)
            touched += 1
    assert touched


@pytest.mark.parametrize("name,params,layer", [
    ("shared_bottom", {"scenario_towers": True}, "scenario_task_towers"),
    ("mmoe", {"scenario_towers": True}, "scenario_task_towers"),
    ("mmoe", {"scenario_gates": True}, "mmoe"),
    ("mmoe", {"scenario_gates": True, "scenario_towers": True}, "mmoe"),
    ("ple", {"scenario_towers": True}, "scenario_task_towers"),
])
def test_scenario_specific_parts_follow_the_instances_scenario(feed_dir, name, params, layer):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    built = models.build(name, spec, dict(SMALL[name], **params))
    f = zoo_checks.batch(spec, feed_dir, 64)
    scen = f["scenario_id"].numpy()
    assert (scen == 0).any() and (scen == 1).any()
    before = built.model(f)
    _perturb_scenario_slices(built.core.get_layer(layer), S, K)
    after = built.model(f)
    for t in spec.task_names:
        b, a = before[t].numpy()[:, 0], after[t].numpy()[:, 0]
        np.testing.assert_allclose(a[scen == 0], b[scen == 0], rtol=1e-6, atol=1e-7)
        assert np.abs(a[scen == 1] - b[scen == 1]).max() > 1e-4, t


def test_scenario_mean_over_multi_valued_scenarios():
    spec = spec_lib.FeatureSpec.from_dict({
        "name": "t", "scenario": {"feature": "scenario_id", "names": ["a", "b", "c"],
                                  "multi_valued": True},
        "tasks": [{"name": "click", "label": "label_click"}],
        "features": [{"name": "x", "type": "numeric"}]})
    ids = tf.constant([[0, -1, -1], [2, 1, -1], [1, 1, -1]], tf.int64)
    x = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32)
    out = common.scenario_mean(spec, {"scenario_id": ids}, tf.constant(x)).numpy()
    expected = np.stack([x[0, 0], (x[1, 2] + x[1, 1]) / 2, x[2, 1]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("name,params,message", [
    ("mmoe", {"num_experts": 0}, "num_experts must be >= 1, got 0"),
    ("mmoe", {"expert_hidden": []}, r"expert_hidden must hold a non-empty list of positive "
                                    r"widths, got \[\]"),
    ("mmoe", {"scenario_gate": True}, "Did you mean 'scenario_gates'"),
    ("ple", {"levels": 0}, "levels must be >= 1, got 0"),
    ("ple", {"task_experts": 0, "shared_experts": 0}, "shared_experts \\+ task_experts must "
                                                      "be >= 1"),
    ("ple", {"shared_experts": -1}, "shared_experts must be >= 0, got -1"),
    ("shared_bottom", {"tower_hidden": [8, 0]}, r"tower_hidden must hold positive widths"),
    ("shared_bottom", {"backbone": "mlp"}, "backbone: expected one of dnn, rankmixer"),
])
def test_config_errors_name_the_key(feed_dir, name, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build(name, spec, params)
