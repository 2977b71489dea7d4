"""``jit_compile="dense"``: XLA for the dense network, sparse table updates outside."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl import models
from tfmdl.models import base
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import config as train_config
from tfmdl.training import trainer

SMALL = {"mmoe": {"num_experts": 2, "expert_hidden": [16], "tower_hidden": [8]}}


class RecordingAdagrad(keras.optimizers.legacy.Adagrad):
    """Adagrad that records the gradient types it is given (while tracing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        self.seen = [(type(g).__name__, v.name) for g, v in grads_and_vars]
        return super().apply_gradients(grads_and_vars, *args, **kwargs)


def _train(name, data_dir, jit_compile, steps=4, optimizer=None, before=None):
    spec = spec_lib.load_spec(data_dir)
    keras.utils.set_random_seed(0)
    built = models.build(name, spec, SMALL[name])
    if before is not None:
        before.update({k: v.numpy() for k, v in
                       built.core.get_layer("feature_embedding").tables.items()})
    cfg = train_config.TrainingConfig()
    optimizer = optimizer or trainer.split_optimizer(
        built, cfg, dense_gradients=jit_compile is True)
    built.core.compile(optimizer=optimizer, jit_compile=jit_compile,
                       loss={t: "binary_crossentropy" for t in spec.task_names})
    ds = reader.make_dataset(spec, data_dir, 128, split="train", shuffle=False,
                             drop_remainder=True).take(steps)
    ds = ds.map(lambda f, l, w: (built.lookup(f), l, w))
    history = built.core.fit(ds, epochs=1, verbose=0)
    return built, history.history["loss"][0]


def test_dense_xla_trains_like_the_plain_step(feed_dir):
    plain, plain_loss = _train("mmoe", feed_dir, False)
    split, split_loss = _train("mmoe", feed_dir, "dense")
    assert isinstance(split.core, base.CoreModel) and split.core.xla_dense
    assert split_loss == pytest.approx(plain_loss, rel=1e-5)
    # Adagrad on the tables, Adam on the rest, 4 steps: the same weights
    for a, b in zip(plain.core.get_weights(), split.core.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_dense_sub_optimizer_runs_inside_xla_once_a_step(feed_dir):
    split, _ = _train("mmoe", feed_dir, "dense", steps=3)
    composite = split.core.optimizer
    (table_opt, _), (dense_opt, _) = composite._optimizers_and_vars
    inside, outside = split.core._optimizer_split()
    # Adam (dense weights only) is applied in the XLA step, Adagrad (tables) outside
    assert [sub for sub, _ in inside] == [dense_opt]
    assert [sub for sub, _ in outside] == [table_opt]
    # each sub-optimizer stepped once per batch, neither skipped nor twice
    assert int(dense_opt.iterations.numpy()) == 3
    assert int(table_opt.iterations.numpy()) == 3


def test_no_inside_split_when_one_optimizer_owns_tables_and_dense(feed_dir):
    import tensorflow_recommenders as tfrs
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("mmoe", spec, SMALL["mmoe"])
    every = lambda: built.core.trainable_variables
    opt = tfrs.experimental.optimizers.CompositeOptimizer(
        [(keras.optimizers.legacy.Adagrad(0.1), every)])
    built.core.compile(optimizer=opt, jit_compile="dense",
                       loss={t: "binary_crossentropy" for t in spec.task_names})
    assert built.core._optimizer_split() == ((), ())


def test_dense_xla_updates_tables_sparsely(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    opt, before = RecordingAdagrad(0.5), {}
    built, _ = _train("mmoe", feed_dir, "dense", steps=1, optimizer=opt, before=before)
    # the optimizer gets the tables' gradients as IndexedSlices, the rest dense
    tables = {v.name for v in base.embedding_weights(built.core)}
    kinds = {var: kind for kind, var in opt.seen}
    assert tables and tables <= set(kinds)
    assert {kinds[t] for t in tables} == {"IndexedSlices"}
    assert all(kind != "IndexedSlices" for var, kind in kinds.items() if var not in tables)
    # and updates the rows of the batch only
    batch = next(iter(reader.make_dataset(spec, feed_dir, 128, split="train",
                                          shuffle=False)))[0]
    rows = np.unique(built.lookup(batch)["user_id"].numpy())
    after = built.core.get_layer("feature_embedding").tables["user_id"].numpy()
    untouched = np.setdiff1d(np.arange(len(after)), rows)
    np.testing.assert_array_equal(after[untouched], before["user_id"][untouched])
    assert not np.allclose(after[rows], before["user_id"][rows])


def test_compile_model_picks_the_xla_mode_from_the_table_optimizer(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    built = models.build("mmoe", spec, SMALL["mmoe"])
    model = trainer.compile_model(built, train_config.TrainingConfig(), jit=True)
    assert model is built.core and model.xla_dense and not model.jit_compile
    adam = train_config.OptimizerConfig(name="adam")
    built = models.build("mmoe", spec, SMALL["mmoe"])
    model = trainer.compile_model(built, train_config.TrainingConfig(embedding_optimizer=adam),
                                  jit=True)
    assert not model.xla_dense and model.jit_compile
    model = trainer.compile_model(built, train_config.TrainingConfig(), jit=False)
    assert model is built.model


def test_auto_keeps_xla_for_large_sparse_tables():
    default = tf.distribute.get_strategy()
    assert trainer.resolve_jit("auto", default, embedding_params=10**9) is True
    assert trainer.resolve_jit("auto", default, embedding_params=10**9,
                               dense_tables=True) is False
    assert trainer.resolve_jit("auto", default, embedding_params=10**6,
                               dense_tables=True) is True


def test_dense_mode_needs_one_embedding_layer():
    inputs = keras.Input(shape=(3,))
    model = base.CoreModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", jit_compile="dense")
    with pytest.raises(ValueError, match="exactly one FeatureEmbedding layer"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 1)), verbose=0)
