"""Tests for tfmdl.layers.fusion: scenario masks and the domain-fused module."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.fusion import DomainFused, scenario_mask
from tests.layers.numpy_reference import np_fused


def x_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------- scenario_mask -------------------------------- #
def test_scenario_mask_single_valued():
    got = scenario_mask(tf.constant([2, 0, 1], tf.int64), 3).numpy()
    np.testing.assert_array_equal(got, np.eye(3)[[2, 0, 1]])
    assert got.dtype == np.float32


def test_scenario_mask_multi_valued_with_pads_and_repeats():
    ids = tf.constant([[0, 2, -1], [1, -1, -1], [2, 2, 0]], tf.int64)
    got = scenario_mask(ids, 3).numpy()
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize("ids", [[0, 3], [-1, 1], [[0, 4]], [[-2, 0]]])
def test_scenario_mask_rejects_out_of_range_ids(ids):
    with pytest.raises(tf.errors.InvalidArgumentError, match="scenario id out of range"):
        scenario_mask(tf.constant(ids, tf.int32), 3)


def test_scenario_mask_under_xla_poisons_instead_of_silent_zero():
    fn = tf.function(lambda ids: scenario_mask(ids, 3), jit_compile=True)
    np.testing.assert_array_equal(fn(tf.constant([[0, -1]])).numpy(), [[1, 0, 0]])
    assert np.isnan(fn(tf.constant([[0, 5]])).numpy()).all()


def test_scenario_mask_validation():
    with pytest.raises(ValueError, match="num_scenarios=0"):
        scenario_mask(tf.constant([0]), 0)
    with pytest.raises(ValueError, match="shape"):
        scenario_mask(tf.zeros([2, 2, 2], tf.int32), 3)


# ---------------------------------- DomainFused ---------------------------------- #
MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], np.float32)


@pytest.mark.parametrize("use_global", [True, False])
def test_domain_fused_masked_mean_matches_numpy(use_global):
    scenario_tokens, task_tokens = x_input([4, 4, 6], seed=1), x_input([4, 2, 6], seed=2)
    got = DomainFused(use_global)(scenario_tokens, task_tokens, MULTI_HOT).numpy()
    expected = np_fused(scenario_tokens, task_tokens, MULTI_HOT, use_global)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # explicit cases: instance 0 with the global token is (Z0 + Z2 + Zg) / 3
    if use_global:
        z = scenario_tokens[0]
        np.testing.assert_allclose(got[0, 1] - task_tokens[0, 1], (z[0] + z[2] + z[3]) / 3,
                                   rtol=1e-5, atol=1e-6)
        # an instance in no scenario gets the global token alone
        np.testing.assert_allclose(got[3] - task_tokens[3], np.stack([scenario_tokens[3, 3]] * 2),
                                   rtol=1e-5, atol=1e-6)
    else:  # an instance in no scenario gets nothing added
        np.testing.assert_allclose(got[3], task_tokens[3])


def test_domain_fused_without_global_accepts_s_tokens_and_bool_mask():
    scenario_tokens, task_tokens = x_input([4, 3, 6]), x_input([4, 2, 6])
    got = DomainFused(use_global=False)(scenario_tokens, task_tokens,
                                        tf.constant(MULTI_HOT > 0)).numpy()
    np.testing.assert_allclose(got, np_fused(scenario_tokens, task_tokens, MULTI_HOT, False),
                               rtol=1e-5, atol=1e-6)


def test_domain_fused_with_scenario_mask_helper():
    ids = tf.constant([[0, 2], [1, -1]], tf.int64)
    scenario_tokens, task_tokens = x_input([2, 4, 6]), x_input([2, 3, 6])
    got = DomainFused()(scenario_tokens, task_tokens, scenario_mask(ids, 3)).numpy()
    mask = np.array([[1, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(got, np_fused(scenario_tokens, task_tokens, mask, True),
                               rtol=1e-5, atol=1e-6)


def _scenario_gradient(mask, use_global=True):
    scenario_tokens = tf.constant(x_input([1, 5, 6], seed=3))   # S = 4, global last
    task_tokens = tf.constant(x_input([1, 2, 6], seed=4))
    weights = tf.constant(x_input([1, 2, 6], seed=5))
    with tf.GradientTape() as tape:
        tape.watch(scenario_tokens)
        out = DomainFused(use_global)(scenario_tokens, task_tokens, tf.constant([mask]))
        loss = tf.reduce_sum(out * weights)
    grad = tape.gradient(loss, scenario_tokens).numpy()[0]
    return np.abs(grad).sum(-1) > 0                                 # [S + 1]


@pytest.mark.parametrize("mask,expected", [
    ([0., 0., 1., 0.], [False, False, True, False, True]),          # single scenario
    ([1., 0., 1., 1.], [True, False, True, True, True]),            # multi-hot
    ([0., 0., 0., 0.], [False, False, False, False, True]),         # global only
])
def test_gradient_reaches_only_own_scenarios_and_global(mask, expected):
    np.testing.assert_array_equal(_scenario_gradient(mask), expected)


def test_gradient_without_global_skips_global_token():
    np.testing.assert_array_equal(_scenario_gradient([0., 1., 1., 0.], use_global=False),
                                  [False, True, True, False, False])


def test_validation():
    with pytest.raises(ValueError, match="use_global=1"):
        DomainFused(use_global=1)
    with pytest.raises(ValueError, match=r"scenario_tokens must be \[batch, S \+ 1, d\]"):
        DomainFused()(tf.zeros([2, 3, 4]), tf.zeros([2, 2, 4]), tf.ones([2, 3]))
    with pytest.raises(ValueError, match="task_tokens"):
        DomainFused()(tf.zeros([2, 4, 4]), tf.zeros([2, 2, 5]), tf.ones([2, 3]))


def test_get_config_round_trip():
    layer = DomainFused(use_global=False)
    config = layer.get_config()
    assert config["use_global"] is False
    clone = DomainFused.from_config(config)
    assert clone.get_config() == config
    args = (x_input([4, 4, 6]), x_input([4, 2, 6]), MULTI_HOT)
    np.testing.assert_allclose(clone(*args).numpy(), layer(*args).numpy())
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is DomainFused and again.get_config() == config


def test_jit_compile_matches_eager():
    layer = DomainFused()
    args = [tf.constant(a) for a in (x_input([4, 4, 6]), x_input([4, 2, 6]), MULTI_HOT)]
    eager = layer(*args).numpy()
    compiled = tf.function(lambda *a: layer(*a), jit_compile=True)(*args).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)
