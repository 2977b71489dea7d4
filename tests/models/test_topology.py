"""shared_top, specific_top, specific_all: which parts follow the instance's scenario."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tests.models import baseline_checks as checks
from tfmdl import models
from tfmdl.models import common
from tfmdl.pipelines import spec as spec_lib

SMALL = {
    "shared_top": {"domain_hidden": [16, 8], "tower_hidden": [8]},
    "specific_top": {"backbone_hidden": [16], "tower_hidden": [8]},
    "specific_all": {"domain_hidden": [16], "tower_hidden": [8]},
}
MODELS = sorted(SMALL)
FULL_CYCLE = MODELS   # build, XLA train, save/load (test_trainer checks all are covered)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    checks.check_full_cycle(name, SMALL[name], feed_dir, tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_rankmixer_backbone(name, feed_dir):
    checks.check_rankmixer_backbone(name, SMALL[name], feed_dir)


@pytest.mark.parametrize("name", MODELS)
def test_configs_load_and_build(name, feed_dir, search_dir):
    checks.check_configs(name, {"feed": feed_dir, "search": search_dir})


def _perturb_scenario_1(built, name):
    """Adds noise to the weights that belong to scenario 1 only."""
    rng = np.random.default_rng(0)
    S = built.spec.scenario.count
    K = len(built.spec.tasks)
    touched = 0
    for layer in built.core.submodules:
        if layer.name.startswith("domain_bottom_"):             # kernel [S, d_in, d_out]
            for w in layer.weights:
                value = w.numpy()
                value[1] += rng.normal(size=value[1].shape)
                w.assign(value)
                touched += 1
        if layer.name == "scenario_task_towers":                  # tower s*K + k
            for sub in layer.layers_:
                for w in sub.weights:
                    value = w.numpy()
                    value[K:2 * K] += rng.normal(size=value[K:2 * K].shape)
                    w.assign(value)
                    touched += 1
        if layer.name == "feature_embedding":                     # row r*S + s
            for key, table in layer.tables.items():
                if key.startswith("domain/"):
                    value = table.numpy()
                    value[1::S] += rng.normal(size=value[1::S].shape)
                    table.assign(value)
                    touched += 1
    assert touched, name


@pytest.mark.parametrize("name,extra", [
    ("shared_top", {}), ("specific_top", {}), ("specific_all", {}),
    ("specific_all", {"domain_hidden": []})])
def test_domain_specific_parts_follow_the_instances_scenario(feed_dir, name, extra):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build(name, spec, dict(SMALL[name], **extra))
    f = checks.batch(spec, feed_dir, 64)
    scen = f["scenario_id"].numpy()
    assert (scen == 0).any() and (scen == 1).any()
    before = built.model(f)
    _perturb_scenario_1(built, name)
    after = built.model(f)
    for t in spec.task_names:
        b, a = before[t].numpy()[:, 0], after[t].numpy()[:, 0]
        np.testing.assert_allclose(a[scen == 0], b[scen == 0], rtol=1e-6, atol=1e-7)
        # scenario-1 rows move (a row may not, when the perturbed units are inactive
        # for it or its probability is saturated)
        assert (np.abs(a[scen == 1] - b[scen == 1]) > 0).mean() > 0.8, t


def test_layer_layout(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    shared = models.build("shared_top", spec, SMALL["shared_top"])
    assert shared.core.get_layer("domain_bottom_0").kernel.shape[0] == S
    assert shared.core.get_layer("task_towers").num_tasks == K
    assert "backbone_mlp" not in {l.name for l in shared.core.submodules}   # raw embeddings
    top = models.build("specific_top", spec, SMALL["specific_top"])
    assert top.core.get_layer("scenario_task_towers").num_tasks == S * K
    assert top.core.get_layer("backbone_mlp").units == [16]
    every = models.build("specific_all", spec, SMALL["specific_all"])
    tables = every.core.get_layer("feature_embedding").tables
    for n in spec.feature_sets.domain_specific:
        assert tables[f"domain/{n}"].shape[0] == tables[n].shape[0] * S


def test_scenario_mean_over_multi_valued_scenarios():
    spec = types.SimpleNamespace(scenario=types.SimpleNamespace(feature="scenario_id", count=3))
    ids = tf.constant([[0, -1], [2, 1], [1, 1]], tf.int64)       # -1 pads, a repeated id
    x = np.random.default_rng(0).normal(size=(3, 3, 4)).astype(np.float32)
    out = common.scenario_mean(spec, {"scenario_id": ids}, tf.constant(x)).numpy()
    expected = np.stack([x[0, 0], (x[1, 2] + x[1, 1]) / 2, x[2, 1]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("name,params,message", [
    ("shared_top", {"domain_hidden": []}, "domain_hidden must hold at least one positive"),
    ("specific_all", {"domain_hidden": [0]}, r"domain_hidden must hold positive widths, "
                                             r"got \[0\]"),
    ("specific_top", {"tower_hiden": [4]}, "Did you mean 'tower_hidden'"),
    ("specific_top", {"backbone_layers": 0}, "backbone_layers must be >= 1"),
])
def test_config_errors_name_the_key(feed_dir, name, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build(name, spec, params)


def test_specific_all_needs_domain_specific_features(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    bare = spec_lib.FeatureSpec.from_dict(dict(
        spec.to_dict(), feature_sets=dict(spec.to_dict()["feature_sets"], domain_specific=[])))
    with pytest.raises(ValueError, match="feature_sets.domain_specific"):
        models.build("specific_all", bare, SMALL["specific_all"])
