"""Tests for tfmdl.layers.mdl_block.MDLBlock: equations, gradients, ablations, XLA, replicas."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.fusion import scenario_mask
from tfmdl.layers.mdl_block import MDLBlock
from tfmdl.layers.tokenization import FeatureTokenizer
from tests.layers.numpy_reference import (np_daa, np_fused, np_layer_norm, np_pffn,
                                         np_rank_mixer)


# ------------------------------ NumPy re-computation ----------------------------- #
def np_mdl_block(x, z, u, mask, block):
    """docs/design.md 2.2 steps 1-6 (and the "mixing" joins of 2.4), from the block's weights."""
    joined = [x] + ([z] if block.scenario_mode == "mixing" else []) \
        + ([u] if block.task_mode == "mixing" else [])
    mixed = np_rank_mixer(np.concatenate(joined, axis=1), block.rank_mixer)
    x_new = mixed[:, :x.shape[1]]
    out = {"features": x_new}
    if block.scenario_mode == "daa":
        update, out["scenario_attention"] = np_daa(z, x, block.scenario_attention)
        z_hat = z + update
        z_new = z_hat + np_pffn(np_layer_norm(z_hat, block.scenario_norm), block.scenario_ffn)
    else:
        z_new = mixed[:, x.shape[1]:x.shape[1] + z.shape[1]]
    if block.task_mode == "daa":
        update, out["task_attention"] = np_daa(u, x, block.task_attention)
        u_hat = u + update
    else:
        u_hat = mixed[:, -u.shape[1]:]
    u_tilde = np_fused(z_new, u_hat, mask, block.use_global)
    out["scenario_tokens"] = z_new
    out["task_tokens"] = u_tilde + np_pffn(np_layer_norm(u_tilde, block.task_norm),
                                           block.task_ffn)
    return out


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.3
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def make_inputs(batch=3, tokens=4, scenarios=2, tasks=1, width=8, seed=0):
    mask = np.zeros((batch, scenarios), np.float32)
    mask[np.arange(batch), np.arange(batch) % scenarios] = 1.0
    mask[0] = 1.0  # a multi-scenario instance
    return (x_input([batch, tokens, width], seed + 1),
            x_input([batch, scenarios + 1, width], seed + 2),
            x_input([batch, tasks, width], seed + 3), mask)


# ------------------------------------ equations ---------------------------------- #
@pytest.mark.parametrize("modes,sizes", [
    (dict(), dict()),
    (dict(use_global=False), dict()),
    (dict(scenario_mode="mixing", task_mode="mixing"), dict()),   # 4 + 3 + 1 tokens, d = 8
    (dict(scenario_mode="daa", task_mode="mixing"), dict(tasks=4)),  # 4 + 4 tokens
])
def test_block_matches_numpy(modes, sizes):
    x, z, u, mask = make_inputs(**sizes)
    block = MDLBlock(ffn_mult=2, num_heads=2, **modes)
    block(x, z, u, mask)
    randomize(block)
    got = block(x, z, u, mask)
    expected = np_mdl_block(x, z, u, mask, block)
    for key in ("features", "scenario_tokens", "task_tokens", "scenario_attention",
                "task_attention"):
        if key not in expected:
            assert got[key] is None, key
            continue
        np.testing.assert_allclose(got[key].numpy(), expected[key], rtol=1e-4, atol=1e-4,
                                   err_msg=key)


# ------------------------------------ gradients ---------------------------------- #
def _scenario_rows_with_gradient(mask, use_global=True):
    x, z, u, _ = make_inputs(batch=1, scenarios=3, tasks=2)
    block = MDLBlock(ffn_mult=1, num_heads=2, use_global=use_global)
    z = tf.constant(z)
    block(x, z, u, np.array([mask], np.float32))
    randomize(block, seed=7)
    probe = tf.constant(x_input([1, 2, 8], seed=9))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = block(x, z, u, tf.constant([mask]))
        loss = tf.reduce_sum(out["task_tokens"] * probe)
    grad = tape.gradient(loss, z).numpy()[0]
    return np.abs(grad).sum(-1) > 0


@pytest.mark.parametrize("mask,expected", [
    ([0., 1., 0.], [False, True, False, True]),     # one scenario + the global token
    ([1., 0., 1.], [True, False, True, True]),      # multi-hot
])
def test_task_outputs_only_touch_own_scenario_tokens_and_global(mask, expected):
    np.testing.assert_array_equal(_scenario_rows_with_gradient(mask), expected)


def test_no_global_token_gets_no_gradient_without_use_global():
    np.testing.assert_array_equal(_scenario_rows_with_gradient([1., 1., 0.], use_global=False),
                                  [True, True, False, False])


# ------------------------------------ ablations ---------------------------------- #
MODES = ("daa", "mixing", "none")


def _gradient_is_nonzero(block, args, output_key, wrt):
    args = [None if a is None else tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args[wrt])
        out = block(*args)[output_key]
    grad = tape.gradient(out, args[wrt], unconnected_gradients="zero")
    return bool(np.any(grad.numpy() != 0))


@pytest.mark.parametrize("scenario_mode,task_mode", list(itertools.product(MODES, MODES)))
def test_every_ablation_builds_runs_and_changes_the_graph(scenario_mode, task_mode):
    # T = 2, S + 1 = 2, K = 2, d = 12: every joined token count (2, 4, 6) divides d.
    # Seeded: the weights must not depend on which tests ran before in this process
    # (an unseeded run once saw an all-zero gradient that 800 seeded runs never did).
    keras.utils.set_random_seed(0)
    x, z, u, mask = make_inputs(batch=2, tokens=2, scenarios=1, tasks=2, width=12)
    z = None if scenario_mode == "none" else z
    u = None if task_mode == "none" else u
    mask = None if scenario_mode == "none" else mask
    block = MDLBlock(ffn_mult=1, num_heads=2, scenario_mode=scenario_mode,
                     task_mode=task_mode)
    out = block(x, z, u, mask)
    assert set(out) == {"features", "scenario_tokens", "task_tokens", "scenario_attention",
                        "task_attention"}
    assert out["features"].shape == (2, 2, 12)

    # outputs
    assert (out["scenario_tokens"] is None) == (scenario_mode == "none")
    assert (out["task_tokens"] is None) == (task_mode == "none")
    assert (out["scenario_attention"] is None) == (scenario_mode != "daa")
    assert (out["task_attention"] is None) == (task_mode != "daa")
    if scenario_mode != "none":
        assert out["scenario_tokens"].shape == (2, 2, 12)
    if scenario_mode == "daa":
        assert out["scenario_attention"].shape == (2, 2, 2, 2)
    if task_mode != "none":
        assert out["task_tokens"].shape == (2, 2, 12)

    # sublayers and weights
    names = [w.name for w in block.weights]
    assert len(names) == len(set(names))
    assert (block.scenario_attention is not None) == (scenario_mode == "daa")
    assert (block.scenario_ffn is not None) == (scenario_mode == "daa")
    assert any("scenario" in n for n in names) == (scenario_mode == "daa")
    assert (block.task_attention is not None) == (task_mode == "daa")
    assert (block.task_ffn is not None) == (task_mode != "none")
    assert any("task_" in n for n in names) == (task_mode != "none")
    assert (block.domain_fused is not None) == ("none" not in (scenario_mode, task_mode))
    joined = 2 + 2 * (scenario_mode == "mixing") + 2 * (task_mode == "mixing")
    assert block.rank_mixer.ffn.hidden.kernel.shape[0] == joined

    # data flow: feature tokens see scenario/task tokens only when they join the mixing
    args = (x, z, u, mask)
    if scenario_mode != "none":
        assert _gradient_is_nonzero(block, args, "features", 1) == (scenario_mode == "mixing")
    if task_mode != "none":
        assert _gradient_is_nonzero(block, args, "features", 2) == (task_mode == "mixing")
        if scenario_mode != "none":  # the domain-fused module links them
            assert _gradient_is_nonzero(block, args, "task_tokens", 1)


def test_mixing_needs_width_divisible_by_joined_tokens():
    x, z, u, mask = make_inputs(tokens=4, scenarios=2, width=12)   # 4 + 3 = 7 tokens
    with pytest.raises(ValueError, match=r"d=12, T=7") as err:
        MDLBlock(num_heads=2, scenario_mode="mixing")(x, z, u, mask)
    assert "divisible by the number of tokens" in str(err.value)
    # self-attention interaction has no such constraint
    out = MDLBlock(num_heads=2, scenario_mode="mixing", interaction="self_attention")(
        x, z, u, mask)
    assert out["scenario_tokens"].shape == z.shape


def test_call_validation():
    x, z, u, mask = make_inputs()
    with pytest.raises(ValueError, match="scenario_mode='none' takes no scenario_tokens"):
        MDLBlock(num_heads=2, scenario_mode="none")(x, z, u, mask)
    with pytest.raises(ValueError, match="task_mode='daa' needs task_tokens"):
        MDLBlock(num_heads=2)(x, z, None, mask)
    with pytest.raises(ValueError, match="needs scenario_mask"):
        MDLBlock(num_heads=2)(x, z, u, None)
    with pytest.raises(ValueError, match="feature width d=8"):
        MDLBlock(num_heads=2)(x, z, x_input([3, 1, 4]), mask)
    with pytest.raises(ValueError, match=r"d=8, num_heads=3"):
        MDLBlock(num_heads=3)(x, z, u, mask)


@pytest.mark.parametrize("kwargs,message", [
    (dict(scenario_mode="attention"), "scenario_mode='attention'"),
    (dict(task_mode="mix"), "task_mode='mix'"),
    (dict(interaction="cross"), "interaction='cross'"),
    (dict(ffn_mult=0), "ffn_mult=0"),
    (dict(num_heads=-1), "num_heads=-1"),
    (dict(dropout=2.0), "dropout=2.0"),
    (dict(use_global="yes"), "use_global='yes'"),
])
def test_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MDLBlock(**kwargs)


# ------------------------------- config, XLA, replicas --------------------------- #
def test_get_config_round_trip():
    layer = MDLBlock(ffn_mult=2, num_heads=2, dropout=0.1, interaction="self_attention",
                     scenario_mode="daa", task_mode="mixing", use_global=False)
    args = make_inputs()
    layer(*args)
    config = layer.get_config()
    for key, value in dict(ffn_mult=2, num_heads=2, dropout=0.1, interaction="self_attention",
                           scenario_mode="daa", task_mode="mixing", use_global=False).items():
        assert config[key] == value, key
    clone = MDLBlock.from_config(config)
    assert clone.get_config() == config
    clone(*args)
    clone.set_weights(layer.get_weights())
    got, expected = clone(*args), layer(*args)
    for key in ("features", "scenario_tokens", "task_tokens", "scenario_attention"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is MDLBlock and again.get_config() == config


@pytest.mark.parametrize("modes", [dict(), dict(scenario_mode="mixing", task_mode="mixing"),
                                   dict(interaction="self_attention")])
def test_jit_compile_matches_eager(modes):
    block = MDLBlock(ffn_mult=2, num_heads=2, **modes)
    args = [tf.constant(a) for a in make_inputs()]
    eager = block(*args)
    compiled = tf.function(lambda *a: block(*a), jit_compile=True)(*args)
    for key, value in eager.items():
        if value is None:
            assert compiled[key] is None
        else:
            np.testing.assert_allclose(compiled[key].numpy(), value.numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=key)


def test_mirrored_strategy_training_step(two_cpus, mirrored):
    strategy = mirrored
    assert strategy.num_replicas_in_sync == 2
    x, z, u, mask = make_inputs(batch=4, tasks=2)
    labels = (x_input([4, 2], seed=11) > 0).astype(np.float32)
    with strategy.scope():
        block = MDLBlock(ffn_mult=1, num_heads=2, dropout=0.1)
        head, feature_head = keras.layers.Dense(1), keras.layers.Dense(1)
        out = block(x, z, u, mask)                       # build in cross-replica context
        head(out["task_tokens"])
        feature_head(out["features"][:, 0])
        optimizer = keras.optimizers.SGD(0.1)
    variables = (block.trainable_variables + head.trainable_variables
                 + feature_head.trainable_variables)
    before = [v.numpy().copy() for v in variables]
    dataset = tf.data.Dataset.from_tensor_slices((x, z, u, mask, labels)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def train_step(inputs):
        def replica_step(x, z, u, mask, labels):
            with tf.GradientTape() as tape:
                out = block(x, z, u, mask, training=True)
                # A block's own X^l feeds only the next block (DAA reads X^{l-1}); pool it
                # into the logits so the RankMixer weights get gradients here too.
                logits = (tf.squeeze(head(out["task_tokens"]), -1)
                          + feature_head(tf.reduce_mean(out["features"], axis=1)))
                loss = tf.nn.compute_average_loss(
                    tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), -1),
                    global_batch_size=4)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        per_replica = strategy.run(replica_step, args=inputs)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    loss = float(train_step(batch))
    assert np.isfinite(loss) and loss > 0
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, variables)]
    assert all(changed), [v.name for v, c in zip(variables, changed) if not c]
    for v in block.trainable_variables[:3]:   # mirrored copies stay in sync
        values = strategy.experimental_local_results(v)
        np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())


def test_functional_model_compiles_under_xla():
    """Feature tokenizer -> MDL block -> per-task logits, trained with jit_compile."""
    groups, ids = keras.Input((10,)), keras.Input((2,), dtype=tf.int64)
    scen, task = keras.Input((3, 8)), keras.Input((2, 8))
    features = FeatureTokenizer([3, 3, 2, 2], token_dim=8)(groups)
    out = MDLBlock(ffn_mult=1, num_heads=2)(features, scen, task, scenario_mask(ids, 2))
    logits = tf.squeeze(keras.layers.Dense(1)(out["task_tokens"]), -1)
    model = keras.Model([groups, ids, scen, task], logits)
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  jit_compile=True)
    data = [x_input([4, 10]), np.array([[0, -1], [1, -1], [0, 1], [1, 1]]),
            x_input([4, 3, 8]), x_input([4, 2, 8])]
    loss = model.train_on_batch(data, np.ones([4, 2], np.float32))
    assert np.isfinite(loss)
