"""Checks every zoo model passes (shared by the zoo's model tests).

* `batch`: one unshuffled batch of raw features.
* `check_builds`: one named probability in (0, 1) per task, shape ``[n, 1]``.
* `train_steps_under_xla`: a few XLA-compiled train steps of the *core* model
  the way ``tfmdl train`` runs them under XLA (`trainer.compile_model`: the dense
  network compiled, sparse Adagrad table updates outside XLA).
  Every registered model goes through it once, in its `check_full_cycle`
  (tests/training/test_trainer.py checks none is left out).
* `check_full_cycle`: builds from the spec, trains with `train_steps_under_xla`
  and checks the loss fell, checks the full model shares the trained weights,
  and round-trips the trained weights (`check_save_load`: a weights checkpoint
  into a rebuilt model, then the ``.keras`` format).
* `check_rankmixer_backbone`: the model builds and predicts on a rankmixer
  backbone.
* `check_configs`: ``configs/<name>_<preset>.yaml`` load and build against the
  matching data set's spec.
"""

import os

import numpy as np
import tf_keras as keras

from tfmdl import models
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import config as train_config
from tfmdl.training import trainer

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "configs")

# a tiny rankmixer backbone: token width divisible by the 6 semantic groups of `feed`
RANKMIXER = {"backbone": "rankmixer", "backbone_width": 24, "backbone_layers": 1,
             "backbone_ffn_mult": 1}


def batch(spec, data_dir, n=64, split="eval"):
    """The raw features of one unshuffled batch of ``n`` rows."""
    return next(iter(reader.make_dataset(spec, data_dir, n, split=split, shuffle=False)))[0]


def labelled_batch(spec, data_dir, n=256, split="train"):
    """``(features, {task: labels [n, 1]})`` of one unshuffled batch."""
    f, l, _ = next(iter(reader.make_dataset(spec, data_dir, n, split=split, shuffle=False)))
    return f, {k: v[:, None] for k, v in l.items()}


def check_builds(built, spec, data_dir, n=16):
    """Predicts ``n`` rows: one probability in (0, 1) of shape ``[n, 1]`` per task."""
    assert sorted(built.model.output_names) == sorted(spec.task_names)
    out = built.model(batch(spec, data_dir, n))
    assert set(out) == set(spec.task_names)
    for t in spec.task_names:
        p = out[t].numpy()
        assert p.shape == (n, 1), (t, p.shape)
        assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all(), t
    return out


def train_steps_under_xla(built, spec, data_dir, steps=6, lr=1e-2):
    """Trains the core model ``steps`` steps on one batch as ``tfmdl train`` does under
    XLA (`trainer.compile_model` with ``jit``: the dense network and its gradient
    in one XLA function, the embedding tables on the trainer's Adagrad with sparse
    updates outside it, the rest on its Adam). Returns the per-step losses (each
    measured before that step's update)."""
    f, labels = labelled_batch(spec, data_dir)
    x = built.lookup(f)
    cfg = train_config.TrainingConfig(
        dense_optimizer=train_config.OptimizerConfig(name="adam", learning_rate=lr))
    core = trainer.compile_model(built, cfg, jit=True, metrics=False)
    assert core is built.core and core.xla_dense
    return [float(built.core.train_on_batch(x, labels, return_dict=True)["loss"])
            for _ in range(steps)]


def check_save_load(built, spec, data_dir, tmp_path, n=32):
    """Round trips of the trained ``built``: (1) a weights checkpoint into a model
    rebuilt from the registry (what ``tfmdl train`` and ``load_trained`` do); (2)
    that rebuilt model through the Keras format, which rebuilds every layer from
    its config (several times faster than a TF SavedModel, which re-traces every
    layer; the serving tests cover that path). Keras 2 cannot rebuild a tf.einsum
    op called between layers: use multiply + sum there instead. The rebuilt model
    is the one saved because it is not compiled: ``built.core`` carries the
    trainer's CompositeOptimizer, whose config cannot be serialized."""
    f = batch(spec, data_dir, n)
    before = built.model(f)
    prefix = str(tmp_path / "weights" / "final")
    built.model.save_weights(prefix)
    rebuilt = models.build(built.name, spec, built.params)
    rebuilt.model.load_weights(prefix).expect_partial().assert_existing_objects_matched()
    path = str(tmp_path / f"{built.name}.keras")
    rebuilt.model.save(path)
    for model in (rebuilt.model, keras.models.load_model(path)):
        after = model(f)
        for t in spec.task_names:
            np.testing.assert_allclose(before[t].numpy(), after[t].numpy(),
                                       rtol=1e-5, atol=1e-6)


def check_full_cycle(name, params, data_dir, tmp_path):
    """Builds ``name``: outputs, a few XLA training steps lower the loss, the full
    model shares the core's weights, checkpoint and Keras save + load give the
    same outputs."""
    spec = spec_lib.load_spec(data_dir)
    built = models.build(name, spec, params)
    assert built.name == name
    check_builds(built, spec, data_dir, 16)

    history = train_steps_under_xla(built, spec, data_dir)
    assert np.isfinite(history).all(), history
    assert history[-1] < history[0], history

    f = batch(spec, data_dir, 32)
    full, core = built.model(f), built.core(built.lookup(f))
    for t in spec.task_names:
        np.testing.assert_allclose(full[t].numpy(), core[t].numpy(), rtol=1e-5, atol=1e-7)
    check_save_load(built, spec, data_dir, tmp_path)
    return built


def check_rankmixer_backbone(name, params, data_dir):
    """``name`` builds and predicts with ``backbone: rankmixer``."""
    spec = spec_lib.load_spec(data_dir)
    built = models.build(name, spec, dict(params or {}, **RANKMIXER))
    names = {layer.name for layer in built.core.submodules}
    assert {"backbone_tokenizer", "backbone_block_0"} <= names, names
    assert "backbone_mlp" not in names
    check_builds(built, spec, data_dir, 16)
    return built


def check_configs(name, data_dirs):
    """``configs/<name>_<preset>.yaml`` for every ``{preset: data_dir}`` loads
    against that data set's spec, names ``name`` and builds."""
    for preset, data_dir in data_dirs.items():
        path = os.path.normpath(os.path.join(CONFIG_DIR, f"{name}_{preset}.yaml"))
        assert os.path.exists(path), path
        config = models.load_config(path)
        assert config.model == name, (path, config.model)
        assert "training" in config.raw, path
        spec = spec_lib.load_spec(data_dir)
        built = models.from_config(config, spec)
        check_builds(built, spec, data_dir, 8)
