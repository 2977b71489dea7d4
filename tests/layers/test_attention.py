"""Tests for tfmdl.layers.attention.DomainAwareAttention against NumPy."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.attention import DomainAwareAttention
from tests.layers.numpy_reference import np_daa


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.4
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("heads,feature_width", [(2, 8), (1, 8), (4, 8), (2, 6)])
def test_daa_matches_numpy(heads, feature_width):
    queries, features = x_input([2, 3, 8], seed=1), x_input([2, 5, feature_width], seed=2)
    layer = DomainAwareAttention(num_heads=heads)
    layer(queries, features)
    randomize(layer)
    assert layer.query_projection.kernel.shape == (3, 8, 8)        # per query token
    assert layer.key_projection.kernel.shape == (5, feature_width, 8)  # per feature token
    assert layer.value_projection.kernel.shape == (5, feature_width, 8)
    assert layer.output_projection.kernel.shape == (8, 8)          # shared
    out, weights = layer(queries, features)
    expected_out, expected_weights = np_daa(queries, features, layer)
    assert out.shape == (2, 3, 8) and weights.shape == (2, heads, 3, 5)
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), expected_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-5)


def test_query_projection_is_per_token():
    layer = DomainAwareAttention(num_heads=2)
    queries = np.repeat(x_input([1, 1, 4]), 3, axis=1)  # three identical queries
    out, weights = layer(queries, x_input([1, 5, 4]))
    assert not np.allclose(weights.numpy()[0, :, 0], weights.numpy()[0, :, 1])
    assert not np.allclose(out.numpy()[0, 0], out.numpy()[0, 1])


def test_dropout_on_weights_only_in_training():
    layer = DomainAwareAttention(num_heads=2, dropout=0.5)
    queries, features = x_input([4, 3, 8]), x_input([4, 6, 8])
    out_eval, w_eval = layer(queries, features)
    out_train, w_train = layer(queries, features, training=True)
    np.testing.assert_allclose(w_train.numpy(), w_eval.numpy())  # returned before dropout
    assert not np.allclose(out_train.numpy(), out_eval.numpy())


def test_validation():
    with pytest.raises(ValueError, match="num_heads=0"):
        DomainAwareAttention(num_heads=0)
    with pytest.raises(ValueError, match="dropout=1.0"):
        DomainAwareAttention(num_heads=2, dropout=1.0)
    with pytest.raises(ValueError, match=r"d=10, num_heads=4"):
        DomainAwareAttention(num_heads=4)(tf.zeros([1, 2, 10]), tf.zeros([1, 3, 10]))


def test_get_config_round_trip():
    layer = DomainAwareAttention(num_heads=2, dropout=0.1, use_bias=False,
                                 kernel_initializer="he_uniform")
    queries, features = x_input([2, 3, 8]), x_input([2, 5, 8])
    layer(queries, features)
    assert layer.query_projection.bias is None
    config = layer.get_config()
    clone = DomainAwareAttention.from_config(config)
    assert clone.get_config() == config
    clone(queries, features)
    clone.set_weights(layer.get_weights())
    for a, b in zip(clone(queries, features), layer(queries, features)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is DomainAwareAttention and again.get_config() == config


def test_functional_model_returns_weights():
    queries, features = keras.Input((3, 8)), keras.Input((5, 8))
    out, weights = DomainAwareAttention(num_heads=2)(queries, features)
    model = keras.Model([queries, features], [out, weights])
    got = model([x_input([2, 3, 8]), x_input([2, 5, 8])])
    assert got[0].shape == (2, 3, 8) and got[1].shape == (2, 2, 3, 5)


def test_jit_compile_matches_eager():
    layer = DomainAwareAttention(num_heads=2)
    queries, features = tf.constant(x_input([2, 3, 8])), tf.constant(x_input([2, 5, 8]))
    eager = layer(queries, features)
    compiled = tf.function(lambda q, f: layer(q, f), jit_compile=True)(queries, features)
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
