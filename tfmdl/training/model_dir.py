"""The layout of a model directory written by ``tfmdl train``.

    M/config.yaml          resolved experiment config (model, params, training)
    M/spec.yaml            the feature spec the model was trained on
    M/weights/final.*      final weights of the full model (TF checkpoint format)
    M/checkpoints/         per-epoch (or per-N-steps) weight checkpoints
    M/backup/              BackupAndRestore state for resuming a killed run
    M/logs/                TensorBoard logs
    M/train_summary.json   history, steps, wall time, strategy, XLA choice
    M/history.json         per-epoch metrics so far (kept across a resumed run)
    M/eval.json, eval.md   written by ``tfmdl evaluate``

`load_trained` rebuilds the model from config + spec and restores the final
weights, so evaluation and export never depend on deserialising Python objects.

``M`` may be an ``s3://``, ``hdfs://`` or ``az://`` URL with the ``io`` extra
(`tfmdl.pipelines.filesystems`): everything here goes through `tf.io.gfile`,
including Keras' checkpoints and BackupAndRestore state. On an object store each
rename below is a copy of one object, so a reader still sees either the old or
the new file.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf
import yaml

from tfmdl.pipelines import filesystems
from tfmdl.pipelines import spec as spec_lib

CONFIG = "config.yaml"
SPEC = "spec.yaml"
WEIGHTS = os.path.join("weights", "final")
CHECKPOINTS = "checkpoints"
BACKUP = "backup"
LOGS = "logs"
SUMMARY = "train_summary.json"
HISTORY = "history.json"


class ModelDirError(ValueError):
    """A model directory is missing or incomplete; the message names the path."""


def path(model_dir: str, name: str) -> str:
    return os.path.join(model_dir, name)


def has_final_weights(model_dir: str) -> bool:
    return tf.io.gfile.exists(path(model_dir, WEIGHTS) + ".index")


def load_trained(model_dir: str, weights: Optional[str] = None):
    """Rebuilds the trained model of ``model_dir`` and restores its weights.

    Args:
      model_dir: a directory written by ``tfmdl train``.
      weights: a checkpoint prefix to restore instead of the final weights.

    Returns:
      (BuiltModel, ExperimentConfig).
    """
    from tfmdl.models import experiment  # pylint: disable=g-import-not-at-top

    filesystems.require(model_dir, weights)
    if not tf.io.gfile.isdir(model_dir):
        raise ModelDirError(f"model directory {model_dir} does not exist.")
    for name in (CONFIG, SPEC):
        if not tf.io.gfile.exists(path(model_dir, name)):
            raise ModelDirError(f"{path(model_dir, name)} is missing: {model_dir} is not a "
                                f"model directory written by tfmdl train.")
    with tf.io.gfile.GFile(path(model_dir, CONFIG)) as fh:
        raw = yaml.safe_load(fh)
    config = experiment.load_config(raw)
    spec = spec_lib.load_spec(path(model_dir, SPEC))
    built = experiment.from_config(config, spec)
    prefix = weights or path(model_dir, WEIGHTS)
    if not tf.io.gfile.exists(prefix + ".index"):
        raise ModelDirError(f"{prefix}.index is missing: training in {model_dir} has not "
                            f"finished (no final weights).")
    built.model.load_weights(prefix).expect_partial()
    return built, config


# what a resumed run must share with the run in backup/: everything that shapes
# the variables or their optimizer slots (other training fields, e.g. epochs, may
# change between a killed run and its resumption)
RESUME_KEYS = ("model", "params", "training.dense_optimizer.name",
               "training.embedding_optimizer.name", "training.mixed_precision")


class ResumeError(ValueError):
    """A model dir's ``backup/`` holds a run of another config."""


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def has_backup(model_dir: str) -> bool:
    """Whether ``model_dir/backup/`` holds BackupAndRestore state: a killed run that
    ``tfmdl train`` into the same directory resumes."""
    backup = path(model_dir, BACKUP)
    return tf.io.gfile.isdir(backup) and bool(tf.io.gfile.listdir(backup))


def check_resume(model_dir: str, resolved: dict) -> None:
    """Raises `ResumeError` before anything in ``model_dir`` is rewritten when its
    ``backup/`` (a killed run, resumed by BackupAndRestore) was written with a
    config that differs from ``resolved`` in a `RESUME_KEYS` field; the message
    names ``backup/`` and each differing key with both values."""
    if not has_backup(model_dir):
        return
    backup = path(model_dir, BACKUP)
    saved_path = path(model_dir, CONFIG)
    if not tf.io.gfile.exists(saved_path):
        return
    with tf.io.gfile.GFile(saved_path) as fh:
        saved = yaml.safe_load(fh.read()) or {}
    old, new = _flatten(saved), _flatten(resolved)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                  and any(k == p or k.startswith(p + ".") for p in RESUME_KEYS))
    if not keys:
        return
    shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:6])
    more = f" (and {len(keys) - 6} more)" if len(keys) > 6 else ""
    raise ResumeError(
        f"{backup} holds a killed run of another config ({shown}{more}) that this run would "
        f"resume; rerun with the config in {saved_path} to finish it, or delete {backup} to "
        f"start over (or use another --model_dir). Nothing in {model_dir} was changed.")


def write_config_and_spec(model_dir: str, config, spec: spec_lib.FeatureSpec) -> None:
    """Writes the resolved config and the spec (atomically) into ``model_dir``."""
    from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

    tf.io.gfile.makedirs(model_dir)
    tfrecord.atomic_write_text(path(model_dir, CONFIG),
                               yaml.safe_dump(config.to_dict(), sort_keys=False))
    tfrecord.atomic_write_text(path(model_dir, SPEC), spec.to_yaml())


def save_final_weights(model_dir: str, model) -> None:
    """Saves ``model``'s weights as the final weights, atomically: written under a
    temporary prefix, then the checkpoint files are renamed into place (the
    ``.index`` file last, since readers test for it)."""
    target = path(model_dir, WEIGHTS)
    directory = os.path.dirname(target)
    tf.io.gfile.makedirs(directory)
    tmp_prefix = os.path.join(directory, f".tmp-{os.getpid()}-final")
    model.save_weights(tmp_prefix)
    tmp_files = tf.io.gfile.glob(tmp_prefix + ".*")
    index = [f for f in tmp_files if f.endswith(".index")]
    for f in [f for f in tmp_files if not f.endswith(".index")] + index:
        tf.io.gfile.rename(f, target + f[len(tmp_prefix):], overwrite=True)
    stale = os.path.join(directory, "checkpoint")  # save_weights' bookkeeping file
    if tf.io.gfile.exists(stale):
        tf.io.gfile.remove(stale)
