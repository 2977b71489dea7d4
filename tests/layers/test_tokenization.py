"""Tests for tfmdl.layers.tokenization against NumPy re-computations."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.tokenization import (DomainTokenizer, FeatureTokenizer, ScenarioTokenizer,
                                       TaskTokenizer, stack_token_inputs)
from tests.layers.numpy_reference import np_pffn


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------- FeatureTokenizer ------------------------------- #
def test_feature_tokenizer_equals_separate_group_projections():
    widths = [3, 1, 5, 2]
    tok = FeatureTokenizer(widths, token_dim=4)
    x = x_input([3, sum(widths)])
    tok(x)
    # Random values also in the padded kernel rows: the zero padding must hide them.
    randomize(tok)
    kernel, bias = tok.kernel.numpy(), tok.bias.numpy()
    assert kernel.shape == (4, 5, 4) and bias.shape == (4, 4)
    out = tok(x).numpy()
    assert out.shape == (3, 4, 4)
    start = 0
    for i, width in enumerate(widths):
        group = x[:, start:start + width]
        np.testing.assert_allclose(out[:, i], group @ kernel[i, :width] + bias[i],
                                   rtol=1e-5, atol=1e-5)
        start += width


def test_feature_tokenizer_init_per_group_fan_and_zero_padding():
    tok = FeatureTokenizer([32, 96], token_dim=32)
    tok.build([None, 128])
    kernel = tok.kernel.numpy()
    assert np.all(kernel[0, 32:] == 0.0)
    # Glorot of a [32, 32] Dense for group 0 and of a [96, 32] Dense for group 1.
    assert abs(kernel[0, :32].std() / math.sqrt(2.0 / 64.0) - 1.0) < 0.15
    assert abs(kernel[1].std() / math.sqrt(2.0 / 128.0) - 1.0) < 0.15


def test_feature_tokenizer_validation():
    with pytest.raises(ValueError, match=r"group_widths=\[3, 0\]"):
        FeatureTokenizer([3, 0], token_dim=4)
    with pytest.raises(ValueError, match=r"group_widths=\[\]"):
        FeatureTokenizer([], token_dim=4)
    with pytest.raises(ValueError, match="token_dim=0"):
        FeatureTokenizer([3], token_dim=0)
    with pytest.raises(ValueError, match=r"sum\(group_widths\)=5"):
        FeatureTokenizer([3, 2], token_dim=4)(x_input([2, 6]))


def test_feature_tokenizer_functional_model():
    inp = keras.Input((6,))
    model = keras.Model(inp, FeatureTokenizer([2, 4], token_dim=3)(inp))
    assert model.output_shape == (None, 2, 3)
    assert model(x_input([5, 6])).shape == (5, 2, 3)


# ------------------------------- DomainTokenizer -------------------------------- #
@pytest.mark.parametrize("cls", [DomainTokenizer, ScenarioTokenizer, TaskTokenizer])
def test_domain_tokenizer_matches_numpy_per_token_ffn(cls):
    tok = cls(num_tokens=3, token_dim=4, hidden_dim=6)
    x = x_input([2, 3, 5])
    tok(x)
    randomize(tok)
    ffn = tok.ffn
    expected = np_pffn(x, ffn)
    np.testing.assert_allclose(tok(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert ffn.hidden.kernel.shape == (3, 5, 6) and ffn.out.kernel.shape == (3, 6, 4)


def test_domain_tokenizer_validation():
    with pytest.raises(ValueError, match="num_tokens=3"):
        DomainTokenizer(num_tokens=3, token_dim=4, hidden_dim=6)(x_input([2, 4, 5]))
    with pytest.raises(ValueError, match="hidden_dim=0"):
        TaskTokenizer(num_tokens=3, token_dim=4, hidden_dim=0)
    with pytest.raises(ValueError, match="num_tokens=1"):
        ScenarioTokenizer(num_tokens=1, token_dim=4, hidden_dim=6)


@pytest.mark.parametrize("layer,x", [
    (FeatureTokenizer([2, 3], token_dim=4, kernel_initializer="he_uniform"), x_input([2, 5])),
    (DomainTokenizer(3, 4, 6, activation="relu"), x_input([2, 3, 5])),
    (ScenarioTokenizer(3, 4, 6, kernel_initializer="lecun_normal"), x_input([2, 3, 5])),
    (TaskTokenizer(2, 4, 5), x_input([2, 2, 5])),
])
def test_get_config_round_trip(layer, x):
    layer(x)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("layer,x", [
    (FeatureTokenizer([2, 3, 1], token_dim=4), x_input([2, 6])),
    (ScenarioTokenizer(3, 4, 6), x_input([2, 3, 5])),
])
def test_jit_compile_matches_eager(layer, x):
    x = tf.constant(x)
    eager = layer(x).numpy()
    compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)


# ------------------------------ stack_token_inputs ------------------------------ #
def test_stack_token_inputs_concatenates_and_zero_pads():
    shared = x_input([2, 3], seed=1)
    p0, p2 = x_input([2, 2], seed=2), x_input([2, 4], seed=3)
    out = stack_token_inputs(tf.constant(shared), [tf.constant(p0), None, tf.constant(p2)])
    out = out.numpy()
    assert out.shape == (2, 3, 7)
    for n in range(3):
        np.testing.assert_array_equal(out[:, n, :3], shared)
    np.testing.assert_array_equal(out[:, 0, 3:5], p0)
    np.testing.assert_array_equal(out[:, 0, 5:], 0.0)
    np.testing.assert_array_equal(out[:, 1, 3:], 0.0)
    np.testing.assert_array_equal(out[:, 2, 3:], p2)


def test_stack_token_inputs_without_shared_or_priors():
    p = x_input([2, 2])
    out = stack_token_inputs(None, [tf.constant(p), None]).numpy()
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[:, 0], p)
    np.testing.assert_array_equal(out[:, 1], 0.0)
    shared = x_input([2, 3])
    out = stack_token_inputs(tf.constant(shared), [None, None]).numpy()
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[:, 1], shared)
    with pytest.raises(ValueError, match="every input is None"):
        stack_token_inputs(None, [None])
    with pytest.raises(ValueError, match=r"per_token\[0\]"):
        stack_token_inputs(tf.constant(shared), [tf.zeros([2, 2, 2])])


def test_stack_token_inputs_feeds_scenario_tokenizer_in_functional_model():
    shared, prior = keras.Input((3,)), keras.Input((2,))
    stacked = stack_token_inputs(shared, [prior, None, None])   # 2 scenarios + global
    tokens = ScenarioTokenizer(3, token_dim=4, hidden_dim=5)(stacked)
    model = keras.Model([shared, prior], tokens)
    assert model.output_shape == (None, 3, 4)
    assert model([x_input([2, 3]), x_input([2, 2])]).shape == (2, 3, 4)
