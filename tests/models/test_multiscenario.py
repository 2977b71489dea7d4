"""The multi-scenario baselines: ple_md, star, hmoe."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tests.models import zoo_checks
from tfmdl import models
from tfmdl.layers import moe
from tfmdl.layers import star
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

SMALL = {
    "ple_md": {"levels": 2, "task_experts": 1, "shared_experts": 1, "expert_hidden": [8],
               "tower_hidden": [8]},
    "star": {"star_hidden": [16, 8], "aux_hidden": [8], "scenario_embedding_dim": 4},
    "hmoe": {"num_experts": 3, "expert_hidden": [16], "tower_hidden": [8]},
}
MODELS = sorted(SMALL)
FULL_CYCLE = MODELS   # build, XLA train, save/load (test_trainer checks all are covered)


@pytest.mark.parametrize("name", FULL_CYCLE)
def test_builds_trains_under_xla_and_round_trips(name, feed_dir, tmp_path):
    zoo_checks.check_full_cycle(name, SMALL[name], feed_dir, tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_rankmixer_backbone(name, feed_dir):
    zoo_checks.check_rankmixer_backbone(name, SMALL[name], feed_dir)


def _rows(spec, feed_dir, n=64):
    f = zoo_checks.batch(spec, feed_dir, n)
    scen = f["scenario_id"].numpy()
    assert (scen == 0).any() and (scen == 1).any()
    return f, scen


def _assert_only_scenario_1_changed(spec, before, after, scen):
    for t in spec.task_names:
        b, a = before[t].numpy()[:, 0], after[t].numpy()[:, 0]
        np.testing.assert_allclose(a[scen == 0], b[scen == 0], rtol=1e-6, atol=1e-7)
        assert np.abs(a[scen == 1] - b[scen == 1]).max() > 1e-5, t


def _add_noise(variable, index, rng):
    value = variable.numpy()
    value[index] += rng.normal(size=value[index].shape)
    variable.assign(value)


# ----------------------------------------------------------------------------- PLE-MD
def test_ple_md_is_one_ple_per_scenario(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    built = models.build("ple_md", spec, SMALL["ple_md"])
    cgcs = [built.core.get_layer(f"cgc_{j}") for j in range(2)]
    per_group = K + 1
    for c in cgcs:
        assert c.num_groups == S and c.experts.num_experts == S * per_group
    assert built.core.get_layer("scenario_task_towers").num_tasks == S * K
    # scenario 1's experts, gates and towers do not touch scenario 0's predictions
    f, scen = _rows(spec, feed_dir)
    before = built.model(f)
    rng = np.random.default_rng(0)
    for c in cgcs:
        for layer in c.experts.layers_:
            _add_noise(layer.kernel, slice(per_group, 2 * per_group), rng)
        _add_noise(c.task_gate.logits.kernel, slice(K, 2 * K), rng)
        if c.shared_gate is not None:
            _add_noise(c.shared_gate.logits.kernel, slice(1, 2), rng)
    _assert_only_scenario_1_changed(spec, before, built.model(f), scen)


# ----------------------------------------------------------------------------- STAR
def test_star_layout_and_scenario_partners(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    built = models.build("star", spec, SMALL["star"])
    pn = built.core.get_layer("partitioned_norm")
    assert isinstance(pn, star.PartitionedNormalization) and pn.moving_mean.shape[0] == S
    layers = [built.core.get_layer(n) for n in ("star_0", "star_1", "star_logits")]
    assert [l.units for l in layers] == [16, 8, K]
    assert all(l.scenario_kernel.shape[0] == S for l in layers)
    # the main network reads the features without the scenario multi-hot
    emb = built.core.get_layer("feature_embedding")
    assert layers[0].shared_kernel.shape[0] == sum(emb.dim(n) for n in spec.feature_names)
    assert built.core.get_layer("scenario_embedding").kernel.shape == (S, 4)
    assert built.core.get_layer("aux_logits").units == K

    f, scen = _rows(spec, feed_dir)
    before = built.model(f)
    rng = np.random.default_rng(0)
    for l in layers:
        _add_noise(l.scenario_kernel, 1, rng)
        _add_noise(l.scenario_bias, 1, rng)
    _add_noise(pn.scenario_gamma, 1, rng)
    _add_noise(pn.scenario_beta, 1, rng)
    _assert_only_scenario_1_changed(spec, before, built.model(f), scen)


def test_star_without_pn_and_aux(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("star", spec, dict(SMALL["star"], partitioned_norm=False,
                                            aux_network=False))
    names = {l.name for l in built.core.submodules}
    assert not {"partitioned_norm", "aux_logits", "scenario_embedding"} & names
    zoo_checks.check_builds(built, spec, feed_dir, 8)


@pytest.mark.slow
def test_star_trains_in_two_replica_mirrored_strategy(feed_dir, mirrored):
    spec = spec_lib.load_spec(feed_dir)
    with mirrored.scope():
        built = models.build("star", spec, SMALL["star"])
        built.model.compile(optimizer=keras.optimizers.Adam(1e-2),
                            loss={t: "binary_crossentropy" for t in spec.task_names})
    ds = reader.make_dataset(spec, feed_dir, 128, split="train", seed=0).map(
        lambda f, l, w: (f, {k: v[:, None] for k, v in l.items()})).take(4)
    hist = built.model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    pn = built.core.get_layer("partitioned_norm")
    moving = pn.moving_mean.numpy()
    assert np.abs(moving).max() > 0 and not np.allclose(moving[0], moving[1])


# ----------------------------------------------------------------------------- HMoE
def test_hmoe_borrowed_predictions_carry_no_gradient(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    built = models.build("hmoe", spec, SMALL["hmoe"])
    f, scen = _rows(spec, feed_dir)
    rows = np.flatnonzero(scen == 0)[:8]
    towers = built.core.get_layer("scenario_task_towers")
    gates = built.core.get_layer("implicit_moe").gate.logits.kernel
    fusion = built.core.get_layer("label_space_fusion")
    variables = [w for l in towers.layers_ for w in l.weights] + [gates]
    one = {k: tf.gather(v, rows) for k, v in f.items()}
    with tf.GradientTape() as tape:
        out = built.model(one, training=True)
        loss = tf.add_n([tf.reduce_sum(v) for v in out.values()])     # own-scenario loss
    grads = tape.gradient(loss, variables + fusion.trainable_weights)
    for w, g in zip(variables, grads):
        g = tf.convert_to_tensor(g).numpy()
        assert np.abs(g[K:2 * K]).max() == 0, w.name         # scenario 1's towers and gates
        assert np.abs(g[:K]).max() > 0, w.name               # scenario 0's own
    assert all(np.abs(tf.convert_to_tensor(g).numpy()).max() > 0
               for g in grads[len(variables):])              # the fusion gate still learns

    # ... yet scenario 1's towers do shape scenario 0's predictions (forward path)
    before = built.model(one)
    rng = np.random.default_rng(0)
    for l in towers.layers_:
        _add_noise(l.kernel, slice(K, 2 * K), rng)
    after = built.model(one)
    assert max(np.abs(after[t].numpy() - before[t].numpy()).max()
               for t in spec.task_names) > 1e-5


def test_hmoe_layout(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    S, K = spec.scenario.count, len(spec.tasks)
    built = models.build("hmoe", spec, SMALL["hmoe"])
    mixture = built.core.get_layer("implicit_moe")
    assert isinstance(mixture, moe.MixtureOfExperts)
    assert mixture.gate.num_gates == S * K and mixture.experts.num_experts == 3
    fusion = built.core.get_layer("label_space_fusion")
    assert isinstance(fusion, moe.LabelSpaceFusion)
    assert fusion.gate.logits.kernel.shape[::2] == (S * K, S)


@pytest.mark.parametrize("name,params,message", [
    ("star", {"star_hidden": [0]}, r"star_hidden must hold positive widths, got \[0\]"),
    ("star", {"norm_momentum": 1.0}, r"norm_momentum must be in \[0, 1\), got 1\.0"),
    ("star", {"scenario_embedding_dim": 0}, "scenario_embedding_dim must be >= 1, got 0"),
    ("hmoe", {"num_experts": 0}, "num_experts must be >= 1, got 0"),
    ("ple_md", {"levels": 0}, "levels must be >= 1, got 0"),
    ("ple_md", {"scenario_towers": True}, "scenario_towers: unknown key"),
])
def test_config_errors_name_the_key(feed_dir, name, params, message):
    spec = spec_lib.load_spec(feed_dir)
    with pytest.raises(ValueError, match=message):
        models.build(name, spec, params)
