"""Tests for tfmdl.layers.per_token_ffn against a NumPy loop over tokens."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import per_token_ffn
from tfmdl.layers.per_token_ffn import PerTokenDense, PerTokenFFN
from tests.layers.numpy_reference import np_pffn, np_per_token_dense_weights


def randomize(layer, seed=0):
    """Random weights everywhere (biases start at zero and would hide bugs)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_per_token_dense_matches_numpy_loop():
    x = x_input([3, 4, 5])
    layer = PerTokenDense(6)
    layer(x)
    randomize(layer)
    assert layer.kernel.shape == (4, 5, 6) and layer.bias.shape == (4, 6)
    expected = np_per_token_dense_weights(x, layer.kernel.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_per_token_dense_without_bias():
    x = x_input([2, 3, 4])
    layer = PerTokenDense(2, use_bias=False)
    out = layer(x)
    assert layer.bias is None and len(layer.weights) == 1
    np.testing.assert_allclose(out.numpy(),
                               np_per_token_dense_weights(x, layer.kernel.numpy(), None),
                               rtol=1e-5, atol=1e-6)


def test_per_token_ffn_matches_numpy_loop_and_tokens_differ():
    ffn = PerTokenFFN(hidden_dim=7)
    x = np.repeat(x_input([2, 1, 5]), 3, axis=1)  # the same input at every token
    out = ffn(x)
    randomize(ffn)
    out = ffn(x).numpy()
    assert out.shape == (2, 3, 5)  # output_dim None keeps d_in
    np.testing.assert_allclose(out, np_pffn(x, ffn), rtol=1e-4, atol=1e-5)
    # Same input, different weights per token -> different outputs per token.
    assert not np.allclose(out[:, 0], out[:, 1])


def test_per_token_ffn_output_dim_and_kernel_shapes():
    ffn = PerTokenFFN(hidden_dim=8, output_dim=3)
    assert ffn(x_input([2, 4, 5])).shape == (2, 4, 3)
    assert ffn.hidden.kernel.shape == (4, 5, 8)
    assert ffn.out.kernel.shape == (4, 8, 3)
    assert ffn.compute_output_shape([None, 4, 5]) == tf.TensorShape([None, 4, 3])


def test_per_token_initializer_uses_each_tokens_fans():
    layer = PerTokenDense(32)
    layer.build([None, 16, 32])
    std = layer.kernel.numpy().std()
    # Glorot for one [32, 32] Dense; Keras' default 3-D fans would give sqrt(2/1024).
    assert abs(std / math.sqrt(2.0 / 64.0) - 1.0) < 0.1


def test_dropout_only_in_training():
    ffn = PerTokenFFN(hidden_dim=64, dropout=0.5)
    x = x_input([4, 3, 8])
    np.testing.assert_allclose(ffn(x, training=False).numpy(), ffn(x).numpy())
    assert not np.allclose(ffn(x, training=True).numpy(), ffn(x, training=False).numpy())


@pytest.mark.parametrize("cls,kwargs", [
    (PerTokenDense, dict(units=3, use_bias=False, kernel_initializer="he_normal")),
    (PerTokenFFN, dict(hidden_dim=6, output_dim=2, activation="relu", use_bias=False,
                       dropout=0.25, kernel_initializer="lecun_uniform")),
])
def test_get_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    x = x_input([2, 3, 4])
    layer(x)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if key == "kernel_initializer":
            got = got["class_name"]
            value = type(keras.initializers.get(value)).__name__
        assert got == value, key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())
    # registered under the tfmdl package
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is cls and again.get_config() == config


@pytest.mark.parametrize("make,message", [
    (lambda: PerTokenDense(0), "units=0"),
    (lambda: PerTokenDense("3"), "units='3'"),
    (lambda: PerTokenFFN(hidden_dim=-2), "hidden_dim=-2"),
    (lambda: PerTokenFFN(hidden_dim=4, output_dim=0), "output_dim=0"),
    (lambda: PerTokenFFN(hidden_dim=4, dropout=1.5), "dropout=1.5"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_build_needs_static_tokens():
    with pytest.raises(ValueError, match="static"):
        PerTokenDense(3).build([None, None, 4])


def test_jit_compile_matches_eager():
    ffn = PerTokenFFN(hidden_dim=6, output_dim=3)
    x = tf.constant(x_input([2, 4, 5]))
    eager = ffn(x).numpy()
    compiled = tf.function(lambda t: ffn(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d_in,units,narrow", [(128, 2, True), (64, 64, True), (8, 8, True),
                                               (4, 8, False), (128, 65, False), (256, 128, False)])
def test_narrow_kernels_are_those_with_few_units(d_in, units, narrow):
    assert per_token_ffn.is_narrow(d_in, units) is narrow


def _product_and_grads(x, w, dy, jit):
    @tf.function(jit_compile=jit)
    def step(x, w, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = per_token_ffn.kernel_product(x, w)
        return [y] + tape.gradient(y, [x, w], output_gradients=dy)
    return [t.numpy() for t in step(x, w, dy)]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kernel_shape", [(3, 6, 2), (6, 2), (3, 6, 9)])
def test_kernel_product_and_its_gradients_equal_the_plain_product(kernel_shape, jit):
    # narrow ([.., 6, 2]: units-major, behind XLA barriers under jit) and wide kernels
    rng = np.random.default_rng(0)
    w = rng.normal(size=kernel_shape).astype(np.float32)
    x = rng.normal(size=kernel_shape[:-2] + (5, kernel_shape[-2])).astype(np.float32)
    dy = rng.normal(size=kernel_shape[:-2] + (5, kernel_shape[-1])).astype(np.float32)
    y, dx, dw = _product_and_grads(x, w, dy, jit)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dy @ np.swapaxes(w, -1, -2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, np.swapaxes(x, -1, -2) @ dy, rtol=1e-5, atol=1e-5)


def test_narrow_kernel_is_multiplied_units_major():
    layer = PerTokenDense(2)
    layer.build([None, 3, 16])

    def ops_of(jit):
        fn = tf.function(layer.token_major_call, jit_compile=jit)
        graph = fn.get_concrete_function(tf.TensorSpec([3, 4, 16])).graph
        return {op.type: op for op in graph.get_operations()}

    plain = ops_of(False)
    assert plain["BatchMatMulV2"].get_attr("adj_y") is True
    assert "XlaOptimizationBarrier" not in plain       # only XLA folds transposes
    assert "XlaOptimizationBarrier" in ops_of(True)
    wide = PerTokenDense(32)
    wide.build([None, 3, 16])
    graph = tf.function(wide.token_major_call).get_concrete_function(
        tf.TensorSpec([3, 4, 16])).graph
    matmul = [op for op in graph.get_operations() if op.type == "BatchMatMulV2"][0]
    assert matmul.get_attr("adj_y") is False
