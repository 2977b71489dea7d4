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
    return spec, counts.rates(), train, held_out


@pytest.mark.parametrize("name", registry.names())
def test_untrained_model_predicts_each_tasks_base_rate(feed, name):
    """The prior is solved on a training batch; a held-out batch's mean prediction
    is within 10% (relative) of every task's training positive rate."""
    spec, rates, train, held_out = feed
    keras.utils.set_random_seed(0)
    built = models.build(name, spec)
    assert not np.any(base.output_bias_layer(built).bias.numpy())  # starts at 0
    base.set_output_bias(built, rates, train)
    out = built.model(held_out)
    for t in spec.task_names:
        mean = float(out[t].numpy().mean())
        assert abs(mean / rates[t] - 1) < 0.10, (name, t, mean, rates[t])


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
    spec, rates, _, _ = feed
    built = models.build("dnn", spec)
    values = base.set_output_bias(built, rates)
    np.testing.assert_allclose(base.output_bias_layer(built).bias.numpy(),
                               base.prior_logits(rates, spec.task_names))
    np.testing.assert_allclose(values, base.prior_logits(rates, spec.task_names))


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
