"""Tests for tfmdl.layers.star (StarDense, PartitionedNormalization) against NumPy."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.star import PartitionedNormalization, StarDense

MASK = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 1],
                 [1, 0, 0], [0, 0, 1]], np.float32)                     # row 5: two scenarios


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomize(layer, seed=0, skip=()):
    rng = np.random.default_rng(seed)
    layer.set_weights([w if i in skip else
                       (rng.normal(size=w.shape) * 0.5 + (1.0 if w.ndim == 3 else 0.0))
                       .astype(np.float32)
                       for i, w in enumerate(layer.get_weights())])


# ----------------------------------------------------------------------------- StarDense
def np_star_dense(x, mask, layer, act=lambda z: z):
    W, b = layer.shared_kernel.numpy(), layer.shared_bias.numpy()
    Ws, bs = layer.scenario_kernel.numpy(), layer.scenario_bias.numpy()
    out = []
    for row, m in zip(x, mask):
        own = np.flatnonzero(m)
        pre = np.mean([row @ (W * Ws[s]) + bs[s] for s in own], axis=0) + b
        out.append(act(pre))
    return np.stack(out)


def test_star_dense_weight_product_matches_numpy():
    layer = StarDense(num_scenarios=3, units=4, activation="relu")
    x = x_input([8, 5])
    layer(x, MASK)
    assert layer.shared_kernel.shape == (5, 4) and layer.scenario_kernel.shape == (3, 5, 4)
    randomize(layer)
    out = layer(x, MASK).numpy()
    np.testing.assert_allclose(out, np_star_dense(x, MASK, layer, lambda z: np.maximum(z, 0)),
                               rtol=1e-5, atol=1e-5)
    # the same input in another scenario gives another output
    other = np.roll(MASK[:5], 1, axis=1)
    assert not np.allclose(layer(x[:5], other).numpy(), out[:5])


def test_star_dense_starts_as_the_shared_layer():
    layer = StarDense(num_scenarios=3, units=4)
    x = x_input([8, 5])
    out = layer(x, MASK).numpy()
    np.testing.assert_allclose(out, x @ layer.shared_kernel.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PN
def np_moments(x, mask, shared):
    if shared:
        mean, var = x.mean(0), x.var(0)
        return np.tile(mean, (mask.shape[1], 1)), np.tile(var, (mask.shape[1], 1))
    means, variances = [], []
    for s in range(mask.shape[1]):
        rows = x[mask[:, s] > 0]
        means.append(rows.mean(0) if len(rows) else np.zeros(x.shape[1]))
        variances.append(rows.var(0) if len(rows) else np.zeros(x.shape[1]))
    return np.stack(means), np.stack(variances)


def np_pn(x, mask, layer, mean, var):
    """STAR Eq. 1-2: (γ·γ_s)(z - μ_s)/sqrt(σ²_s + ε) + (β + β_s), averaged over the
    instance's scenarios."""
    g, b = layer.gamma.numpy(), layer.beta.numpy()
    gs, bs = layer.scenario_gamma.numpy(), layer.scenario_beta.numpy()
    out = []
    for row, m in zip(x, mask):
        out.append(np.mean([(g * gs[s]) * (row - mean[s]) / np.sqrt(var[s] + layer.epsilon)
                            + b + bs[s] for s in np.flatnonzero(m)], axis=0))
    return np.stack(out)


def _pn(scenario_statistics=True, d=4):
    layer = PartitionedNormalization(3, momentum=0.9, scenario_statistics=scenario_statistics)
    layer(x_input([8, d]), MASK, training=False)
    rng = np.random.default_rng(0)
    for w in (layer.gamma, layer.beta, layer.scenario_gamma, layer.scenario_beta):
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("shared", [False, True])
def test_partitioned_normalization_training_matches_numpy(shared):
    layer = _pn(scenario_statistics=not shared)
    x = x_input([8, 4]) * 3 + 1
    out = layer(x, MASK, training=True).numpy()
    mean, var = np_moments(x, MASK, shared)
    np.testing.assert_allclose(out, np_pn(x, MASK, layer, mean, var), rtol=1e-4, atol=1e-4)
    # moving averages: 0.9 * initial + 0.1 * batch statistic, per scenario
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-4)


def test_partitioned_normalization_inference_uses_per_scenario_moving_statistics():
    layer = _pn()
    mean, var = x_input([3, 4], seed=3), np.abs(x_input([3, 4], seed=4)) + 0.5
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(var)
    x = x_input([8, 4], seed=5)
    for training in (False, None):
        out = layer(x, MASK, training=training).numpy()
        np.testing.assert_allclose(out, np_pn(x, MASK, layer, mean, var), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean)          # not updated


def test_partitioned_normalization_keeps_absent_scenarios_statistics():
    layer = _pn()
    before = layer.moving_mean.numpy().copy()
    only_0_and_1 = MASK[:2]
    layer(x_input([2, 4]), only_0_and_1, training=True)
    after = layer.moving_mean.numpy()
    np.testing.assert_allclose(after[2], before[2])
    assert not np.allclose(after[:2], before[:2])


def test_partitioned_normalization_scale_and_shift_are_per_scenario():
    layer = _pn()
    x = x_input([8, 4])
    before = layer(x, MASK, training=True).numpy()
    layer.scenario_gamma.assign(layer.scenario_gamma.numpy() * np.array([[1], [2], [1]]))
    after = layer(x, MASK, training=True).numpy()
    touches_1 = MASK[:, 1] > 0
    np.testing.assert_allclose(after[~touches_1], before[~touches_1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[touches_1], before[touches_1])


def test_partitioned_normalization_under_mixed_precision():
    layer = PartitionedNormalization(3, dtype="mixed_float16")
    x = tf.constant(x_input([8, 4]), tf.float16)
    out = layer(x, MASK, training=True)
    assert out.dtype == tf.float16 and layer.moving_mean.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()


# ----------------------------------------------------------------------------- generic
LAYERS = [
    (StarDense, dict(num_scenarios=3, units=4, activation="relu",
                     kernel_initializer="he_normal")),
    (PartitionedNormalization, dict(num_scenarios=3, momentum=0.95, epsilon=1e-4,
                                    scenario_statistics=False)),
]


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_get_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    x = x_input([8, 5])
    layer(x, MASK)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if key == "kernel_initializer":
            got, value = got["class_name"], type(keras.initializers.get(value)).__name__
        assert got == value, key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(x, MASK)
    randomize(layer, skip=(5,) if cls is PartitionedNormalization else ())
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, MASK).numpy(), layer(x, MASK).numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is cls and again.get_config() == config


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_jit_compile_matches_eager(cls, kwargs):
    layer = cls(**kwargs)
    x, mask = tf.constant(x_input([8, 5])), tf.constant(MASK)
    layer(x, mask)
    if cls is PartitionedNormalization:   # training: batch statistics + moving-average assign
        start = [w.numpy() for w in layer.non_trainable_weights]
        eager = layer(x, mask, training=True).numpy()
        eager_moving = [w.numpy() for w in layer.non_trainable_weights]
        for w, v in zip(layer.non_trainable_weights, start):
            w.assign(v)
        compiled = tf.function(lambda a, m: layer(a, m, training=True), jit_compile=True)
        np.testing.assert_allclose(compiled(x, mask).numpy(), eager, rtol=1e-5, atol=1e-5)
        for w, v in zip(layer.non_trainable_weights, eager_moving):
            np.testing.assert_allclose(w.numpy(), v, rtol=1e-5, atol=1e-6)
    eager = layer(x, mask).numpy()
    compiled = tf.function(lambda a, m: layer(a, m), jit_compile=True)
    np.testing.assert_allclose(compiled(x, mask).numpy(), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_runs_in_mirrored_strategy(cls, kwargs, mirrored):
    x, mask = tf.constant(x_input([8, 5])), tf.constant(MASK)
    with mirrored.scope():
        layer = cls(**kwargs)
        layer(x, mask)
    eager = layer(x, mask).numpy()
    per_replica = mirrored.run(tf.function(lambda a, m: layer(a, m)), args=(x, mask))
    for value in mirrored.experimental_local_results(per_replica):
        np.testing.assert_allclose(value.numpy(), eager, rtol=1e-5, atol=1e-5)
    if cls is PartitionedNormalization:    # training step updates the ON_READ statistics
        mirrored.run(tf.function(lambda a, m: layer(a, m, training=True)), args=(x, mask))
        assert np.abs(layer.moving_mean.numpy()).max() > 0


@pytest.mark.parametrize("make,message", [
    (lambda: StarDense(0, 4), "num_scenarios=0"),
    (lambda: StarDense(2, 0), "units=0"),
    (lambda: PartitionedNormalization(2, momentum=1.0), "momentum=1.0"),
    (lambda: PartitionedNormalization(2, epsilon=0), "epsilon=0"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mask_shape_error_names_the_layer():
    with pytest.raises(ValueError, match=r"star.*scenario_mask must be \[batch, 3\]"):
        StarDense(3, 4, name="star")(x_input([2, 5]), np.eye(2, dtype=np.float32))
