"""Tests for tfmdl.layers.ctr (FieldProjection, FM, CrossV1, CIN) against NumPy."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.ctr import CompressedInteraction, CrossV1, FieldProjection, FMInteraction


def randomize(layer, seed=0):
    """Random weights everywhere (zero biases would hide bugs)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------- FieldProjection -------------------------------- #
def test_field_projection_keeps_common_width_fields_and_projects_the_others():
    widths = [4, 1, 6, 4, 3]
    layer = FieldProjection(widths, dim=4)
    x = x_input([3, sum(widths)])
    layer(x)
    randomize(layer)                    # also fills the zero-padded kernel rows
    kernel = layer.kernel.numpy()
    assert kernel.shape == (3, 6, 4)    # fields 1, 2, 4 are projected, padded to width 6
    out = layer(x).numpy()
    assert out.shape == (3, 5, 4)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    projected = 0
    for i, (start, w) in enumerate(zip(starts, widths)):
        field = x[:, start:start + w]
        if w == 4:
            np.testing.assert_array_equal(out[:, i], field)
        else:
            np.testing.assert_allclose(out[:, i], field @ kernel[projected, :w],
                                       rtol=1e-5, atol=1e-5)
            projected += 1
    # a numeric (width-1) field becomes x_i * p_i, FM's real-valued feature
    np.testing.assert_allclose(out[:, 1], x[:, 4:5] * kernel[0, 0], rtol=1e-5, atol=1e-6)


def test_field_projection_init_and_identity_only():
    layer = FieldProjection([2, 8], dim=8)
    layer.build([None, 10])
    assert np.all(layer.kernel.numpy()[0, 2:] == 0.0)       # padded rows start at zero
    same = FieldProjection([3, 3], dim=3)
    x = x_input([2, 6])
    np.testing.assert_array_equal(same(x).numpy(), x.reshape(2, 2, 3))
    assert same.kernel is None and not same.weights
    with pytest.raises(ValueError, match=r"field_widths=\[3, 0\]"):
        FieldProjection([3, 0], dim=2)
    with pytest.raises(ValueError, match="dim=0"):
        FieldProjection([3], dim=0)
    with pytest.raises(ValueError, match=r"sum\(field_widths\)=5"):
        FieldProjection([2, 3], dim=2)(tf.zeros([1, 4]))


# ---------------------------------- FM ------------------------------------------ #
def test_fm_equals_brute_force_pairwise_sum():
    v = x_input([4, 5, 3])                                   # [B, F, k]
    out = FMInteraction()(v).numpy()
    brute = np.array([[sum(float(v[b, i] @ v[b, j])
                           for i, j in itertools.combinations(range(5), 2))]
                      for b in range(4)])
    assert out.shape == (4, 1)
    np.testing.assert_allclose(out, brute, rtol=1e-4, atol=1e-4)
    # hand case: three all-ones fields of width 2 -> 3 pairs x 2
    np.testing.assert_allclose(FMInteraction()(np.ones([1, 3, 2], np.float32)).numpy(), [[6.0]])


# -------------------------------- CrossV1 --------------------------------------- #
def np_cross_v1(x0, x, w, b):
    out = np.zeros_like(x0)
    for n in range(x0.shape[0]):
        out[n] = x0[n] * float(x[n] @ w[:, 0]) + b + x[n]
    return out


def test_cross_v1_matches_numpy_over_two_layers():
    x0 = x_input([3, 5])
    c1, c2 = CrossV1(), CrossV1()
    c2(x0, c1(x0))
    randomize(c1, 1)
    randomize(c2, 2)
    assert c1.kernel.shape == (5, 1) and c1.bias.shape == (5,)   # a vector, not a matrix
    x1 = np_cross_v1(x0, x0, c1.kernel.numpy(), c1.bias.numpy())
    x2 = np_cross_v1(x0, x1, c2.kernel.numpy(), c2.bias.numpy())
    np.testing.assert_allclose(c2(x0, c1(x0)).numpy(), x2, rtol=1e-4, atol=1e-5)
    nb = CrossV1(use_bias=False)
    nb(x0)
    assert nb.bias is None and len(nb.weights) == 1
    with pytest.raises(ValueError, match="same width"):
        CrossV1()(x0, tf.zeros([3, 4]))


# ---------------------------------- CIN ----------------------------------------- #
def np_cin(x0, layer):
    """Explicit loops over maps h, rows i of X^{k-1} and fields j (xDeepFM eq. 6)."""
    batch, m, dim = x0.shape
    act = (lambda t: np.maximum(t, 0.0)) if layer.activation is keras.activations.relu \
        else (lambda t: t)
    x, pooled = x0, []
    last = len(layer.kernels) - 1
    for k, kernel in enumerate(layer.kernels):
        w = kernel.numpy()
        hk = w.shape[0]
        nxt = np.zeros((batch, hk, dim), np.float64)
        for b in range(batch):
            for h in range(hk):
                for i in range(x.shape[1]):
                    for j in range(m):
                        nxt[b, h] += w[h, i, j] * x[b, i] * x0[b, j]
                if layer.biases[k] is not None:
                    nxt[b, h] += layer.biases[k].numpy()[h, 0]
        nxt = act(nxt)
        if layer.split_half and k < last:
            pooled.append(nxt[:, hk // 2:].sum(-1))
            x = nxt[:, :hk // 2]
        else:
            pooled.append(nxt.sum(-1))
            x = nxt
    return np.concatenate(pooled, axis=1)


def test_cin_hand_computed_case():
    # X^0 rows (1, 2) and (3, 4); one map with W = I: X^1 = x_0∘x_0 + x_1∘x_1 = (10, 20)
    layer = CompressedInteraction([1], use_bias=False)
    x0 = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    layer(x0)
    layer.set_weights([np.eye(2, dtype=np.float32)[None]])
    np.testing.assert_allclose(layer(x0).numpy(), [[30.0]])
    # a second layer with W[0] = [[1, 0]] multiplies X^1 by x_0: (10, 40) -> 50
    two = CompressedInteraction([1, 1], split_half=False, use_bias=False)
    two(x0)
    two.set_weights([np.eye(2, dtype=np.float32)[None], np.array([[[1.0, 0.0]]], np.float32)])
    np.testing.assert_allclose(two(x0).numpy(), [[30.0, 50.0]])


@pytest.mark.parametrize("sizes,split,activation", [
    ([4, 3], True, "linear"), ([2, 3, 2], False, "relu"), ([4], True, "linear")])
def test_cin_matches_numpy_loops(sizes, split, activation):
    x0 = x_input([2, 3, 4])
    layer = CompressedInteraction(sizes, split_half=split, activation=activation)
    layer(x0)
    randomize(layer)
    out = layer(x0).numpy()
    assert out.shape == (2, layer.output_dim)
    expected = sum(h // 2 for h in sizes[:-1]) + sizes[-1] if split else sum(sizes)
    assert layer.output_dim == expected
    np.testing.assert_allclose(out, np_cin(x0.astype(np.float64), layer), rtol=1e-4, atol=1e-4)


def test_cin_kernel_shapes_and_validation():
    layer = CompressedInteraction([4, 2])
    layer.build([None, 5, 3])
    assert layer.kernels[0].shape == (4, 5, 5) and layer.kernels[1].shape == (2, 2, 5)
    # each map initialised like a Dense(H_{k-1}·m -> 1): glorot std sqrt(2 / (25 + 1))
    big = CompressedInteraction([256])
    big.build([None, 10, 2])
    assert abs(big.kernels[0].numpy().std() / math.sqrt(2.0 / 101.0) - 1.0) < 0.1
    with pytest.raises(ValueError, match=r"layer_sizes=\[3, 2\]"):
        CompressedInteraction([3, 2])
    with pytest.raises(ValueError, match=r"layer_sizes=\[\]"):
        CompressedInteraction([])
    CompressedInteraction([3, 2], split_half=False)


# ------------------------------- common checks ---------------------------------- #
LAYERS = [
    (lambda: FieldProjection([3, 1, 2], dim=2, kernel_initializer="he_normal"), [2, 6]),
    (lambda: FMInteraction(), [2, 3, 4]),
    (lambda: CrossV1(use_bias=False, kernel_initializer="lecun_normal"), [2, 5]),
    (lambda: CompressedInteraction([4, 2], split_half=True, activation="relu",
                                   use_bias=False), [2, 3, 4]),
]


@pytest.mark.parametrize("make,shape", LAYERS)
def test_get_config_round_trip(make, shape):
    layer = make()
    x = x_input(shape)
    ref = layer(x).numpy()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), ref, rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))   # registered as tfmdl>
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("make,shape", LAYERS)
def test_jit_compile_matches_eager(make, shape):
    layer = make()
    x = tf.constant(x_input(shape))
    eager = layer(x).numpy()
    compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)


def test_layers_in_two_replica_mirrored_strategy(mirrored):
    with mirrored.scope():
        proj = FieldProjection([3, 2], dim=2)
        cross = CrossV1()
        cin = CompressedInteraction([2, 2])
        fm = FMInteraction()
        proj.build([None, 5])
        cross.build([None, 4])
        cin.build([None, 2, 2])

    @tf.function
    def step(x):
        def replica(t):
            with tf.GradientTape() as tape:
                v = proj(t)
                loss = tf.reduce_sum(cin(v)) + tf.reduce_sum(fm(v)) \
                    + tf.reduce_sum(cross(tf.reshape(v, [-1, 4])))
            weights = proj.trainable_weights + cross.trainable_weights + cin.trainable_weights
            return tape.gradient(loss, weights)
        return mirrored.run(replica, args=(x,))

    grads = step(tf.constant(x_input([4, 5])))
    assert all(g is not None for g in grads)
