"""The output heads every model shares: the output-bias prior and a loss computed
from logits (tfmdl.models.base, docs/training.md)."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl import models
from tfmdl.models import base
from tfmdl.models import registry
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import config as train_config
from tfmdl.training import trainer

SMALL_MDL = {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1}


@pytest.fixture(scope="module")
def feed(tmp_path_factory):
    """A `feed` data set with the trainer's prior batch of training rows and a
    held-out batch large enough that its mean prediction of a 0.1% task is not
    carried by one row (DCN's untrained logits reach 6 at a std of 0.5)."""
    from tests.conftest import _small_data  # pylint: disable=g-import-not-at-top

    data_dir = _small_data(tmp_path_factory, "feed", train=trainer.PRIOR_BATCH, eval=12000)
    spec = spec_lib.load_spec(data_dir)
    counts = label_stats.train_counts(spec, data_dir,
                                      reader.resolve_files(data_dir, "train", "auto"), out=None)
    train = next(iter(reader.make_dataset(spec, data_dir, trainer.PRIOR_BATCH, split="train",
                                          seed=0)))[0]
    held_out = next(iter(reader.make_dataset(spec, data_dir, 12000, split="eval",
                                             shuffle=False)))[0]
    return spec, counts, train, held_out


def _shrunk_cell_rate(counts, rates, s, k, t):
    pos = counts.cell_positives[s, k]
    n = pos + counts.cell_negatives[s, k]
    return (pos + base.PRIOR_CELL_ROWS * rates[t]) / (n + base.PRIOR_CELL_ROWS)


@pytest.mark.parametrize("name", registry.names())
def test_untrained_model_predicts_each_tasks_and_cells_base_rate(feed, name):
    """The prior is solved on a training batch; a held-out batch's mean prediction
    is within 10% (relative) of every task's training positive rate, and within
    20% of every (scenario, task) cell's (shrunk) rate: the cells' rates differ by
    up to 3x on `feed`, so a per-task bias alone misses them."""
    spec, counts, train, held_out = feed
    rates = counts.rates()
    keras.utils.set_random_seed(0)
    built = models.build(name, spec)
    layer = base.output_bias_layer(built)
    assert not np.any(layer.bias.numpy()) and not np.any(layer.scenario_bias.numpy())
    base.set_output_bias(built, rates, train, counts=counts)
    out = built.model(held_out)
    scen = held_out[spec.scenario.feature].numpy()
    for k, t in enumerate(spec.task_names):
        pred = out[t].numpy()[:, 0]
        assert abs(pred.mean() / rates[t] - 1) < 0.10, (name, t, pred.mean(), rates[t])
        for s in range(spec.scenario.count):
            cell = _shrunk_cell_rate(counts, rates, s, k, t)
            got = pred[scen == s].mean()
            assert abs(got / cell - 1) < 0.20, (name, spec.scenario.names[s], t, got, cell)


def test_feed_cells_rates_differ_enough_for_the_cell_test_to_fail_without_offsets(feed):
    """Guards the test above: with the per-task bias alone (no counts), some cell
    is off its rate by more than the 20% tolerance."""
    spec, counts, train, held_out = feed
    rates = counts.rates()
    keras.utils.set_random_seed(0)
    built = models.build("dnn", spec)
    base.set_output_bias(built, rates, train)
    assert not np.any(base.output_bias_layer(built).scenario_bias.numpy())
    out = built.model(held_out)
    scen = held_out[spec.scenario.feature].numpy()
    worst = max(abs(out[t].numpy()[scen == s, 0].mean()
                    / _shrunk_cell_rate(counts, rates, s, k, t) - 1)
                for k, t in enumerate(spec.task_names) for s in range(spec.scenario.count))
    assert worst > 0.20, worst


def test_prior_offsets_are_the_shrunk_cells_log_odds_offsets():
    counts = label_stats.LabelCounts(["a", "b"], ["x", "y"])
    # x: 900 rows, a 10% / b 0 positives; y: 100 rows, a 30% / b unlabelled
    labels = np.zeros([1000, 2], np.float32)
    labels[:90, 0] = 1
    labels[900:930, 0] = 1
    labels[900:, 1] = -1
    counts.add(labels, np.array([0] * 900 + [1] * 100))
    rates = counts.rates()
    assert rates["a"] == pytest.approx(0.12) and rates["b"] == 0.0
    got = base.prior_offsets(counts, rates, ["a", "b"], ["x", "y"])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(got[0, 0], logit((90 + 100 * 0.12) / 1000) - logit(0.12), rtol=1e-5)
    np.testing.assert_allclose(got[1, 0], logit((30 + 100 * 0.12) / 200) - logit(0.12), rtol=1e-5)
    # b has no positives anywhere: its cells' shrunk rates are its (clipped) rate
    np.testing.assert_allclose(got[:, 1], 0.0, atol=1e-5)
    # the task and scenario order of the result follows the arguments
    np.testing.assert_allclose(base.prior_offsets(counts, rates, ["b", "a"], ["y", "x"]),
                               got[::-1, ::-1], rtol=1e-6)


def test_prior_logits_are_the_log_odds_and_handle_degenerate_rates():
    got = base.prior_logits({"a": 0.2, "b": 0.0, "c": 1.0, "d": math.nan}, ["a", "b", "c", "d", "e"])
    np.testing.assert_allclose(got[0], math.log(0.2 / 0.8), rtol=1e-6)
    lo = math.log(base.PRIOR_MIN_RATE / (1 - base.PRIOR_MIN_RATE))
    np.testing.assert_allclose(got[1:], [lo, -lo, 0.0, 0.0], rtol=1e-5)


def test_calibrated_bias_matches_a_numpy_root():
    z = np.random.default_rng(0).normal(0, 3, size=5000)
    b = base.calibrated_bias(z, 0.001)
    assert abs(np.mean(1 / (1 + np.exp(-(z + b)))) - 0.001) < 1e-6
    # no spread: the plain log-odds
    np.testing.assert_allclose(base.calibrated_bias(np.zeros(10), 0.3),
                               math.log(0.3 / 0.7), atol=1e-6)


def test_without_features_the_bias_is_the_plain_log_odds(feed):
    spec, counts, _, _ = feed
    rates = counts.rates()
    built = models.build("dnn", spec)
    values = base.set_output_bias(built, rates)
    np.testing.assert_allclose(base.output_bias_layer(built).bias.numpy(),
                               base.prior_logits(rates, spec.task_names))
    np.testing.assert_allclose(values, base.prior_logits(rates, spec.task_names))
    # with counts: the offsets too, and the bias stays the plain log-odds
    base.set_output_bias(built, rates, counts=counts)
    np.testing.assert_allclose(base.output_offsets(built), base.prior_offsets(
        counts, rates, spec.task_names, spec.scenario.names), rtol=1e-6)
    np.testing.assert_allclose(base.output_bias_layer(built).bias.numpy(), values)


def test_output_bias_layer_config_round_trips_and_compiles_under_xla():
    layer = base.OutputBias(name="output_bias")
    clone = base.OutputBias.from_config(layer.get_config())
    assert clone.name == "output_bias" and clone.dtype == "float32"
    x = tf.constant([[1.0, -2.0], [0.5, 0.0]], tf.bfloat16)
    layer(x)
    layer.bias.assign([0.25, -1.0])
    expected = np.array([[1.25, -3.0], [0.75, -1.0]], np.float32)
    got = tf.function(layer, jit_compile=True)(x)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-2)


def test_scenario_offsets_match_numpy_and_round_trip():
    """``z + b + w d`` against NumPy, for single-scenario and split (multi-valued)
    shares, eagerly and under XLA; the config keeps ``num_scenarios``."""
    layer = base.OutputBias(3, name="output_bias")
    clone = base.OutputBias.from_config(layer.get_config())
    assert clone.num_scenarios == 3
    rng = np.random.default_rng(0)
    z = rng.normal(size=[4, 2]).astype(np.float32)
    w = np.array([[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0, 0]], np.float32)
    layer(z, scenario_share=w)
    b = np.array([0.25, -1.0], np.float32)
    d = rng.normal(size=[3, 2]).astype(np.float32)
    layer.bias.assign(b)
    layer.scenario_bias.assign(d)
    expected = z + b + w @ d
    np.testing.assert_allclose(layer(z, scenario_share=w).numpy(), expected, rtol=1e-6)
    xla = tf.function(lambda a, c: layer(a, scenario_share=c), jit_compile=True)
    np.testing.assert_allclose(xla(z, w).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"needs the scenario_share \[batch, 3\]"):
        layer(z)
    with pytest.raises(ValueError, match=r"scenario_share must be \[batch, 3\]"):
        layer(z, scenario_share=w[:, :2])
    with pytest.raises(ValueError, match="num_scenarios should be a non-negative integer"):
        base.OutputBias(-1)


@pytest.mark.parametrize("jit", [False, True])
def test_a_head_far_below_1e7_still_gets_a_gradient(feed_dir, jit):
    """Keras' loss on a probability-only output clips it to [1e-7, 1 - 1e-7] and
    has zero gradient below: a head pushed there never recovers (the collapse of
    MDL's rare-task heads). The sigmoid output layer hands Keras the logit, so a
    head at σ(-30) still moves, in the full and the core model, with and without
    XLA."""
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("mdl", spec, SMALL_MDL)
    layer = base.output_bias_layer(built)
    layer.bias.assign(np.full([len(spec.tasks)], -30.0, np.float32))
    f, labels, _ = next(iter(reader.make_dataset(spec, feed_dir, 256, split="train",
                                                 shuffle=False)))
    y = {t: tf.ones_like(v)[:, None] for t, v in labels.items()}  # every label positive
    cfg = train_config.TrainingConfig(
        dense_optimizer=train_config.OptimizerConfig(name="sgd", learning_rate=0.1))
    model = trainer.compile_model(built, cfg, jit=jit, metrics=False)
    x = built.lookup(f) if model is built.core else f
    before = layer.bias.numpy().copy()
    model.train_on_batch(x, y)
    moved = layer.bias.numpy() - before
    assert (moved > 0.05).all(), moved
