"""Tests for tfmdl.layers.mixing: token mixing permutation and RankMixer block."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.mixing import RankMixerBlock, TokenMixing
from tests.layers.numpy_reference import np_rank_mixer, np_token_mixing


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.3
                       for w in layer.get_weights()])


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------- TokenMixing ---------------------------------- #
@pytest.mark.parametrize("tokens,width", [(3, 6), (4, 8), (2, 10)])
def test_token_mixing_permutation_element_by_element(tokens, width):
    x = np.arange(2 * tokens * width, dtype=np.float32).reshape(2, tokens, width)
    out = TokenMixing()(x).numpy()
    w = width // tokens
    for b in range(2):
        for h in range(tokens):            # output token h
            for t in range(tokens):        # ... holds head h of every input token t
                for j in range(w):
                    assert out[b, h, t * w + j] == x[b, t, h * w + j]
    np.testing.assert_array_equal(out, np_token_mixing(x))


def test_token_mixing_is_an_involution():
    x = x_input([2, 4, 8])
    mix = TokenMixing()
    np.testing.assert_array_equal(mix(mix(x)).numpy(), x)
    assert not mix.weights


def test_token_mixing_needs_divisible_width():
    with pytest.raises(ValueError, match=r"d=10, T=3") as err:
        TokenMixing()(tf.zeros([2, 3, 10]))
    assert "divisible by the number of tokens" in str(err.value)


# -------------------------------- RankMixerBlock -------------------------------- #
@pytest.mark.parametrize("interaction", ["mixing", "self_attention"])
def test_rank_mixer_block_matches_numpy(interaction):
    block = RankMixerBlock(ffn_mult=2, interaction=interaction, num_heads=2)
    x = x_input([2, 4, 8])
    block(x)
    randomize(block)
    assert block.ffn.hidden.kernel.shape == (4, 8, 16)
    np.testing.assert_allclose(block(x).numpy(), np_rank_mixer(x, block),
                               rtol=1e-4, atol=1e-4)


def test_rank_mixer_block_weights_by_interaction():
    mixing = RankMixerBlock(ffn_mult=1)
    mixing(tf.zeros([1, 4, 8]))
    attention = RankMixerBlock(ffn_mult=1, interaction="self_attention", num_heads=2)
    attention(tf.zeros([1, 4, 8]))
    mixing_names = {w.name for w in mixing.weights}
    attention_names = {w.name for w in attention.weights}
    assert not any("self_attention" in n for n in mixing_names)
    assert any("self_attention/query" in n for n in attention_names)
    # LayerNorm gamma/beta x2 and the PFFN's two kernels and biases; MHA adds 8
    assert len(mixing_names) == len(mixing.weights) == 8  # and no clashing names
    assert len(attention_names) == len(attention.weights) == 16


def test_rank_mixer_validation():
    with pytest.raises(ValueError, match="interaction='moe'"):
        RankMixerBlock(interaction="moe")
    with pytest.raises(ValueError, match="ffn_mult=0"):
        RankMixerBlock(ffn_mult=0)
    with pytest.raises(ValueError, match="dropout=-0.1"):
        RankMixerBlock(dropout=-0.1)
    with pytest.raises(ValueError, match=r"d=10, T=3"):
        RankMixerBlock()(tf.zeros([1, 3, 10]))
    with pytest.raises(ValueError, match=r"d=10, num_heads=4"):
        RankMixerBlock(interaction="self_attention", num_heads=4)(tf.zeros([1, 3, 10]))
    # self-attention does not need d % T == 0
    assert RankMixerBlock(interaction="self_attention", num_heads=2)(
        tf.zeros([1, 3, 10])).shape == (1, 3, 10)


@pytest.mark.parametrize("layer", [
    TokenMixing(),
    RankMixerBlock(ffn_mult=2, dropout=0.1, interaction="self_attention", num_heads=2),
    RankMixerBlock(ffn_mult=3, num_heads=1),
])
def test_get_config_round_trip(layer):
    x = x_input([2, 4, 8])
    layer(x)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy(), rtol=1e-6)
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("layer", [
    TokenMixing(), RankMixerBlock(ffn_mult=2),
    RankMixerBlock(ffn_mult=2, interaction="self_attention", num_heads=2)])
def test_jit_compile_matches_eager(layer):
    x = tf.constant(x_input([2, 4, 8]))
    eager = layer(x).numpy()
    compiled = tf.function(lambda t: layer(t), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
