"""Training with plain Keras ``model.fit`` under a tf.distribute strategy.

The pieces are usable from a script::

    from tfmdl.training import trainer
    strategy = trainer.make_strategy("default")
    run = trainer.prepare("configs/mdl_feed.yaml", "data/feed", "models/mdl",
                          strategy=strategy, overrides=["training.epochs=2"])
    run.model.fit(run.train_data, epochs=run.epochs, steps_per_epoch=run.steps_per_epoch,
                  validation_data=run.validation_data, callbacks=run.callbacks)
    run.finish()      # final weights + train_summary.json

and ``tfmdl train`` runs exactly that. ``prepare`` builds the model inside the
strategy scope, compiles it with split optimizers (a TFRS CompositeOptimizer:
embedding tables get ``training.embedding_optimizer``, default Adagrad; every
other weight ``training.dense_optimizer``, default Adam), one binary
cross-entropy per task weighted by ``training.loss_weights`` and masked by the
per-task sample weights (missing labels weigh 0), and per-task AUC metrics.

XLA (``training.jit_compile``): with XLA the trained model is the lookup-free
core and the dataset is mapped through the lookup layer, so string hashing and
vocabularies stay in tf.data. How much XLA compiles depends on the table
optimizer (`xla_mode`): with Adagrad (the default), SGD or RMSprop, whose
updates touch only the batch's rows, the core is compiled with
``jit_compile="dense"`` (`tfmdl.models.base.CoreModel`): XLA compiles the dense
network and its gradient as one computation, and the lookup and table updates
stay outside and sparse, so tables of any size cost nothing per row. Keras' Adam updates every
table row each step whatever the gradient, so with Adam tables the whole step
is compiled and table gradients are dense (`split_optimizer`), which is faster
for Adam and costs O(table) per step either way. ``auto`` turns XLA on for a
single-replica strategy (MDL trained 1.11-1.23x faster with XLA on this 2-core
CPU, docs/benchmarks.md) — with Adam tables only up to
`XLA_MAX_EMBEDDING_PARAMS` table parameters — and off for distributed
strategies: XLA combined with MirroredStrategy on logical CPU devices fails with
TensorFlow's "variable on a different device" limitation, and parameter-server
training runs functions on remote workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging
import tf_keras as keras

from tfmdl import config as config_lib
from tfmdl.layers import inputs as inputs_lib
from tfmdl.models import base
from tfmdl.models import experiment
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord
from tfmdl.training import config as train_config
from tfmdl.training import lazy_adam
from tfmdl.training import model_dir as model_dir_lib
from tfmdl.training import warm_start as warm_start_lib

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (NaN loss, bad labels)."""


# -- strategies ------------------------------------------------------------------

def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (for MirroredStrategy on a
    CPU-only machine). Must run before TensorFlow initialises its devices."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as exc:
        raise TrainingError(f"--cpu_devices={count}: TensorFlow devices are already "
                            f"initialised ({exc}); set it before any TensorFlow op runs.")


def _tf_config() -> Optional[dict]:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise TrainingError(f"TF_CONFIG is not valid JSON: {exc}") from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for ``name`` (one of STRATEGIES); cluster strategies read TF_CONFIG.

    For ``parameter_server``, a process whose TF_CONFIG task is a ``worker`` or
    ``ps`` starts its server and blocks here serving the chief (it never returns);
    only the chief gets a strategy back.
    """
    if name not in STRATEGIES:
        raise TrainingError(f"--strategy={name!r}: expected one of {', '.join(STRATEGIES)}."
                            f"{config_lib.suggest(name, STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    tf_config = _tf_config()
    if tf_config is None:
        raise TrainingError(f"--strategy={name} needs the TF_CONFIG environment variable "
                            f"describing the cluster and this task (see README, 'Distributed "
                            f"training').")
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("worker", "ps"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                      task_index=resolver.task_id, protocol="grpc",
                                      start=True)
        server.join()  # serves the chief until the process is stopped
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=64 << 10, max_shards=max(num_ps, 1))
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)


def _num_workers() -> int:
    cluster = (_tf_config() or {}).get("cluster", {})
    return max(len(cluster.get("worker", [])) + len(cluster.get("chief", [])), 1)


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def embedding_shards(model: keras.Model) -> Dict[str, List[Dict[str, Any]]]:
    """Where each embedding table lives: ``{table: [{"rows": n, "device": d}, ...]}``,
    one entry per shard (several when the parameter-server partitioner split it).
    Checkpoints store a partitioned table as one full tensor, so this is the record
    of the partitioning (``train_summary.json``)."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for layer in model.submodules:
        if isinstance(layer, inputs_lib.FeatureEmbedding):
            for name, table in layer.tables.items():
                sharded = isinstance(table, tf.__internal__.distribute.ShardedVariable)
                parts = table.variables if sharded else [table]
                out[name] = [{"rows": int(v.shape[0]), "device": v.device} for v in parts]
    return out


def is_chief(strategy) -> bool:
    """Whether this process writes the model directory."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


XLA_MAX_EMBEDDING_PARAMS = 20_000_000


def xla_mode(cfg: train_config.TrainingConfig):
    """What `compile_model` passes as ``jit_compile`` when XLA is on: ``"dense"``
    (the dense network only; sparse table updates outside XLA) unless the tables
    use Adam, whose Keras update decays every row's moments each step anyway:
    then ``True`` (the whole step, with dense table gradients, fused by XLA)."""
    return True if cfg.embedding_optimizer.name == "adam" else "dense"


def resolve_jit(mode: str, strategy, embedding_params: int = 0,
                dense_tables: bool = False) -> bool:
    """XLA on or off for ``mode`` (auto/on/off) under ``strategy`` (module docstring).

    With ``dense_tables`` (the whole step compiled, `xla_mode`) ``auto`` also keeps
    XLA off when the tables hold more than `XLA_MAX_EMBEDDING_PARAMS` parameters,
    since each step then updates them densely.
    """
    distributed = strategy.num_replicas_in_sync > 1 or is_parameter_server(strategy) or \
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    on_cpu = not tf.config.list_logical_devices("GPU")
    if mode == "off":
        return False
    if mode == "on":
        if isinstance(strategy, tf.distribute.MirroredStrategy) and on_cpu and \
                strategy.num_replicas_in_sync > 1:
            raise TrainingError(
                "jit_compile=on with MirroredStrategy over logical CPU devices fails in "
                "TensorFlow (XLA cannot place the replicas' variables); use "
                "jit_compile=auto/off here, or XLA with a single-device strategy.")
        return True
    return not distributed and (not dense_tables or
                                embedding_params <= XLA_MAX_EMBEDDING_PARAMS)


# -- optimizers ------------------------------------------------------------------

def resolve_schedules(cfg: train_config.TrainingConfig,
                      total_steps: Optional[int]) -> train_config.TrainingConfig:
    """``cfg`` with each optimizer's ``schedule: auto`` and ``decay_steps: 0``
    made concrete for a run of ``total_steps`` optimizer steps (None: unknown).

    ``auto`` is ``anneal`` for the dense optimizer (its rate constant, then a
    cosine to 0 over the run's last ``anneal_fraction`` of steps) and a constant
    rate for the tables (docs/training.md, "Learning-rate schedule"): with a
    constant Adam rate the model's overall calibration swings by ±20% from step
    to step, so the last step's weights under- or over-predict every task;
    annealing ends the run where the swings average out. A run of unknown length
    keeps a constant rate. ``decay_steps: 0`` on an explicit anneal, cosine or
    exponential schedule means the run's length, which must then be known.
    """
    def resolve(opt: train_config.OptimizerConfig, key: str, dense: bool):
        schedule = opt.schedule
        if schedule == "auto":
            schedule = "anneal" if dense and total_steps else "constant"
        decay_steps = opt.decay_steps
        if schedule in DECAYING and not decay_steps:
            if not total_steps:
                raise config_lib.ConfigError(
                    f"training.{key}.decay_steps: 0 means the run's total steps, which "
                    f"are unknown here (no manifest.json record counts and no "
                    f"training.steps); set decay_steps or training.steps.")
            decay_steps = int(total_steps)
        return dataclasses.replace(opt, schedule=schedule, decay_steps=decay_steps)

    return dataclasses.replace(
        cfg, dense_optimizer=resolve(cfg.dense_optimizer, "dense_optimizer", True),
        embedding_optimizer=resolve(cfg.embedding_optimizer, "embedding_optimizer", False))


def total_steps(cfg: train_config.TrainingConfig, records: Optional[int],
                steps_per_epoch: Optional[int] = None) -> Optional[int]:
    """Optimizer steps of a run that trains every epoch (early stopping may end
    it sooner): ``training.steps``, else epochs × steps per epoch, from
    ``records`` training examples less the ``validation_fraction`` held out.
    None when neither is known."""
    if cfg.steps:
        return cfg.steps
    if steps_per_epoch is None:
        if not records:
            return None
        steps_per_epoch = max(math.ceil(records * (1.0 - cfg.validation_fraction)
                                        / cfg.batch_size), 1)
    return steps_per_epoch * cfg.epochs


def _schedule(cfg: train_config.OptimizerConfig):
    """The learning rate or schedule of ``cfg``. Alone, an optimizer knows no run
    length: ``auto`` is a constant rate (`resolve_schedules` gives a run's)."""
    if cfg.schedule in DECAYING and not cfg.decay_steps:
        raise ValueError(f"schedule {cfg.schedule!r} with decay_steps=0 (the run's length) "
                         f"is not resolved: pass the config through resolve_schedules.")
    lr = cfg.learning_rate
    if cfg.schedule == "anneal":
        lr = Anneal(lr, cfg.decay_steps, cfg.anneal_fraction)
    elif cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, cfg.decay_steps)
    elif cfg.schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(lr, cfg.decay_steps, cfg.decay_rate)
    if cfg.warmup_steps:
        lr = _Warmup(lr, cfg.warmup_steps, cfg.learning_rate)
    return lr


DECAYING = ("anneal", "cosine", "exponential")


class Anneal(keras.optimizers.schedules.LearningRateSchedule):
    """``peak`` for the first ``(1 - fraction) * steps`` steps, then a cosine to 0
    at ``steps`` (0 after): lr(t) = peak for t < t0, else
    peak * (1 + cos(pi * min(t - t0, n) / n)) / 2 with t0 = steps - n and
    n = max(round(fraction * steps), 1).

    ``t0`` and ``n`` are variables: `restart_at` moves the cosine to start at a
    given step (`StopAndAnneal` anneals the restored best weights of an
    early-stopped run this way).
    """

    def __init__(self, peak, steps, fraction):
        self.peak, self.steps, self.fraction = float(peak), int(steps), float(fraction)
        self.tail = max(int(round(fraction * steps)), 1)
        self.start = tf.Variable(float(self.steps - self.tail), trainable=False,
                                 dtype=tf.float32, name="anneal_start")
        self.length = tf.Variable(float(self.tail), trainable=False, dtype=tf.float32,
                                  name="anneal_length")

    def __call__(self, step):
        t = tf.cast(step, tf.float32) - self.start
        frac = tf.clip_by_value(t / self.length, 0.0, 1.0)
        return self.peak * 0.5 * (1.0 + tf.cos(math.pi * frac))

    def restart_at(self, step: int, length: int) -> None:
        """The cosine from ``peak`` to 0 runs over steps ``[step, step + length]``."""
        self.start.assign(float(step))
        self.length.assign(float(max(int(length), 1)))

    def get_config(self):
        return {"peak": self.peak, "steps": self.steps, "fraction": self.fraction}


def anneal_schedule(optimizer) -> Optional[Anneal]:
    """The `Anneal` schedule of a `make_optimizer` optimizer, if it has one
    (under a warm-up too)."""
    lr = getattr(optimizer, "learning_rate", None)
    if isinstance(lr, _Warmup):
        lr = lr.after
    return lr if isinstance(lr, Anneal) else None


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to the schedule's value over ``steps`` steps."""

    def __init__(self, after, steps, peak):
        self.after, self.steps, self.peak = after, steps, peak

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        after = self.after(step) if callable(self.after) else tf.constant(self.after, tf.float32)
        return tf.where(step < self.steps, self.peak * (step + 1) / self.steps, after)

    def get_config(self):
        return {"steps": self.steps, "peak": self.peak}


def make_optimizer(cfg: train_config.OptimizerConfig):
    cls = {"adam": keras.optimizers.legacy.Adam, "lazy_adam": lazy_adam.LazyAdam,
           "rmsprop": keras.optimizers.legacy.RMSprop,
           "adagrad": keras.optimizers.legacy.Adagrad,
           "sgd": keras.optimizers.legacy.SGD}[cfg.name]
    kwargs = {"learning_rate": _schedule(cfg)}
    if cfg.clipnorm:
        kwargs["clipnorm"] = cfg.clipnorm
    if cfg.name == "adagrad":
        kwargs["initial_accumulator_value"] = cfg.initial_accumulator
    return cls(**kwargs)


def compile_model(built: base.BuiltModel, cfg: train_config.TrainingConfig, jit: bool,
                  metrics: bool = True, core: Optional[bool] = None,
                  total_steps: Optional[int] = None, dense_optimizer=None) -> keras.Model:
    """Compiles and returns the model `prepare` trains: the core (looked-up
    features in; ``core`` defaults to ``jit``) or the full model, with ``jit``
    under XLA as `xla_mode` says.

    Split optimizers (`split_optimizer`, their schedules resolved for a run of
    ``total_steps``: `resolve_schedules`), one binary cross-entropy per task
    weighted by ``cfg.loss_weights``, and with ``metrics`` a weighted AUC per task.
    ``dense_optimizer``: use this one (a `make_optimizer` of the resolved config)
    for the dense weights instead of making it.
    """
    cfg = resolve_schedules(cfg, total_steps)
    tasks = built.spec.task_names
    model = built.core if (jit if core is None else core) else built.model
    mode = xla_mode(cfg) if jit else False
    model.compile(
        optimizer=split_optimizer(built, cfg, dense_gradients=mode is True,
                                  dense_optimizer=dense_optimizer),
        loss={t: keras.losses.BinaryCrossentropy(name=f"{t}_bce") for t in tasks},
        loss_weights={t: float(cfg.loss_weights.get(t, 1.0)) for t in tasks},
        weighted_metrics=({t: [keras.metrics.AUC(name="auc", num_thresholds=1000)]
                           for t in tasks} if metrics else None),
        jit_compile=mode, steps_per_execution=cfg.steps_per_execution)
    return model


def split_optimizer(built: base.BuiltModel, cfg: train_config.TrainingConfig,
                    dense_gradients: bool = False, dense_optimizer=None):
    """Embedding tables -> embedding optimizer, everything else -> dense optimizer.

    With ``dense_gradients`` the embedding gradients are applied as dense
    tensors, as a model compiled with Keras' ``jit_compile=True`` (the whole
    step in XLA) needs: XLA cannot compile TensorFlow's sparse optimizer kernels
    (e.g. ResourceSparseApplyAdagradV2), so every table row is updated each
    step, O(table size). ``jit_compile="dense"`` (`xla_mode`) keeps the table
    updates sparse instead.
    """
    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

    model = built.model
    emb = base.embedding_weights(model)
    emb_refs = {v.ref() for v in emb}
    dense_opt = dense_optimizer or make_optimizer(cfg.dense_optimizer)
    if not emb:
        return dense_opt
    cls = DenseGradientComposite if dense_gradients else tfrs.experimental.optimizers.CompositeOptimizer
    return cls([
        (make_optimizer(cfg.embedding_optimizer), lambda: base.embedding_weights(model)),
        (dense_opt, lambda: [v for v in model.trainable_variables if v.ref() not in emb_refs]),
    ])


def _dense_gradient_composite():
    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

    class DenseGradientComposite(tfrs.experimental.optimizers.CompositeOptimizer):
        """CompositeOptimizer that densifies IndexedSlices gradients (for XLA)."""

        def apply_gradients(self, grads_and_vars, name=None,
                            experimental_aggregate_gradients=True):
            grads_and_vars = [(tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices)
                               else g, v) for g, v in grads_and_vars]
            return super().apply_gradients(grads_and_vars, name,
                                           experimental_aggregate_gradients)

    return DenseGradientComposite


def DenseGradientComposite(optimizers_and_vars):  # pylint: disable=invalid-name
    """TFRS' CompositeOptimizer over ``[(optimizer, variables_fn), ...]`` that
    applies IndexedSlices gradients as dense tensors (`split_optimizer`)."""
    return _dense_gradient_composite()(optimizers_and_vars)


# -- the run -----------------------------------------------------------------------

class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where.

    With ``per_batch=False`` (parameter-server training, where Keras accepts only
    epoch-level callbacks and batch logs are remote values) the loss is checked at
    the end of each epoch instead.
    """

    def __init__(self, per_batch: bool = True):
        super().__init__()
        self.per_batch = per_batch
        self.epoch = 0
        self.bad_step = None
        self.last_finite = None

    def _implements_train_batch_hooks(self):
        return self.per_batch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self._check_loss(logs, batch)

    def on_epoch_end(self, epoch, logs=None):
        if not self.per_batch:
            self._check_loss(logs, None)

    def _check_loss(self, logs, batch):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(float(loss)):
            self.last_finite = float(loss)
        elif self.bad_step is None:
            self.bad_step = batch if batch is not None else -1
            self.model.stop_training = True

    def check(self, lr: float) -> None:
        if self.bad_step is not None:
            where = (f"at step {self.bad_step + 1} of epoch {self.epoch + 1}"
                     if self.bad_step >= 0 else f"in epoch {self.epoch + 1}")
            raise TrainingError(
                f"training loss became NaN/inf {where} "
                f"(last finite loss: {self.last_finite}); training stopped. "
                f"Lower training.dense_optimizer.learning_rate (now {lr}) or "
                f"training.embedding_optimizer.learning_rate, or check the inputs for "
                f"extreme values.")


class EpochLog(keras.callbacks.Callback):
    """Keeps every epoch's metrics in ``M/history.json`` (written atomically after
    each epoch, chief only), so a run resumed from its backup reports the epochs
    before the kill too — and a run killed after its last epoch, which resumes
    with nothing left to train, still has its whole history (`TrainingRun.finish`).

    Args:
      model_dir: the run's model directory.
      resuming: the run starts from a BackupAndRestore state (the earlier epochs
        in ``history.json`` belong to it); otherwise an old file is replaced.
      chief: whether this worker writes the file.
    """

    def __init__(self, model_dir: str, resuming: bool, chief: bool = True):
        super().__init__()
        self.path = model_dir_lib.path(model_dir, model_dir_lib.HISTORY)
        self.chief = chief
        self.epochs: List[Tuple[int, Dict[str, float]]] = []
        if resuming and tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path) as fh:
                saved = json.load(fh)
            self.epochs = [(int(e["epoch"]), dict(e["logs"])) for e in saved.get("epochs", [])]

    def on_epoch_end(self, epoch, logs=None):
        epoch = int(epoch)
        self.epochs = [(e, l) for e, l in self.epochs if e < epoch]   # a redone epoch replaces
        self.epochs.append((epoch, {k: float(v) for k, v in (logs or {}).items()}))
        if self.chief:
            tfrecord.atomic_write_text(self.path, json.dumps(
                {"epochs": [{"epoch": e, "logs": l} for e, l in self.epochs]}, indent=1) + "\n")

    def history(self) -> Dict[str, List[float]]:
        """``{metric: [value per epoch]}``, like ``keras.callbacks.History.history``."""
        keys: List[str] = []
        for _, logs in self.epochs:
            keys += [k for k in logs if k not in keys]
        return {k: [logs.get(k, float("nan")) for _, logs in self.epochs] for k in keys}


class ResumeLogger(keras.callbacks.Callback):
    """Says where a run resumed from (BackupAndRestore restores before it runs)."""

    def __init__(self):
        super().__init__()
        self.resumed_step = 0
        self._begun = False

    def on_train_begin(self, logs=None):
        if self._begun:   # a second fit of the same run (`TrainingRun.fit`'s anneal tail)
            return
        self._begun = True
        # BackupAndRestore's restored counters (the optimizer's step counter may be
        # restored lazily, after this point)
        state = getattr(self.model, "_training_state", None)
        epoch = int(getattr(state, "_ckpt_saved_epoch", tf.constant(-1)).numpy()) if state else -1
        batch = int(getattr(state, "_ckpt_saved_batch", tf.constant(-1)).numpy()) if state else -1
        step = int(self.model.optimizer.iterations.numpy())
        if epoch >= 0 or batch >= 0 or step > 0:
            self.resumed_step = step if step > 0 else (batch + 1 if batch >= 0 else 0)
            print(f"resumed from step {self.resumed_step} (epoch {max(epoch, 0) + 1}; "
                  f"BackupAndRestore state in the model dir)", flush=True)


class StopAndAnneal(keras.callbacks.Callback):
    """Early stopping that ends on annealed weights (docs/training.md, "Early
    stopping").

    Like ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` it watches
    ``monitor`` after every epoch; when ``patience`` epochs in a row have not
    improved on the best, it restores the best epoch's weights. But those weights
    were taken at a constant learning rate, where the model's calibration swings
    from step to step (`resolve_schedules`), so instead of stopping there it
    restarts the dense `Anneal` schedule: a cosine from the peak rate to 0 over
    ``fraction`` of the steps the best weights had trained, then stops. The
    annealed weights are validated once more (the last history entry). A run
    that ends its epochs during this tail needs `TrainingRun.fit`, which trains
    the rest of the tail (`pending_steps`).
    """

    def __init__(self, monitor: str, patience: int, mode: str, schedule: Anneal,
                 fraction: float):
        super().__init__()
        self.monitor, self.patience, self.schedule = monitor, int(patience), schedule
        if mode == "auto":
            mode = "max" if ("auc" in monitor or "acc" in monitor) else "min"
        self.mode, self.fraction = mode, float(fraction)
        self._reset()

    def _reset(self):
        self.wait, self.best, self.best_weights = 0, None, None
        self.best_epoch = self.stopped_epoch = self.anneal_until = None
        self.best_step = 0
        self.anneal_steps = 0

    def on_train_begin(self, logs=None):
        if self.anneal_until is None:   # a fresh fit (not the tail of `TrainingRun.fit`)
            self._reset()

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        if self.anneal_until is not None:   # the validation of the annealed weights
            return
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            logging.warning("early stopping: %s is not in this epoch's logs (%s); not "
                            "stopping.", self.monitor, ", ".join(sorted(logs or {})))
            return
        if self._better(float(value)):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            self.best_weights, self.best_step = self.model.get_weights(), self._step()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.set_weights(self.best_weights)
            self.anneal_steps = max(int(round(self.fraction * self.best_step)), 1)
            now = self._step()
            self.schedule.restart_at(now, self.anneal_steps)
            self.anneal_until = now + self.anneal_steps
            print(f"early stopping: {self.monitor} has not improved on epoch "
                  f"{self.best_epoch + 1}'s {self.best:.6g} for {self.wait} epoch(s); "
                  f"restored epoch {self.best_epoch + 1}'s weights and annealing them over "
                  f"{self.anneal_steps} steps", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.anneal_until is not None and self._step() >= self.anneal_until:
            self.model.stop_training = True

    def pending_steps(self) -> int:
        """Steps of the anneal still to train (0 when done or not begun)."""
        if self.anneal_until is None:
            return 0
        return max(self.anneal_until - self._step(), 0)

    def report(self) -> Dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "patience": self.patience,
                "best": self.best,
                "best_epoch": None if self.best_epoch is None else self.best_epoch + 1,
                "stopped_epoch": None if self.stopped_epoch is None else self.stopped_epoch + 1,
                "anneal_steps": self.anneal_steps}


@dataclasses.dataclass
class TrainingRun:
    """Everything ``model.fit`` needs, plus ``finish()`` to write the results."""
    built: base.BuiltModel
    model: keras.Model            # what is compiled and fitted (core under XLA)
    config: experiment.ExperimentConfig
    training: train_config.TrainingConfig
    spec: spec_lib.FeatureSpec
    strategy: tf.distribute.Strategy
    model_dir: str
    jit_compile: bool
    train_data: Any
    validation_data: Any
    epochs: int
    steps_per_epoch: Optional[int]
    validation_steps: Optional[int]
    callbacks: List[keras.callbacks.Callback]
    nan_guard: NaNGuard
    started: float = dataclasses.field(default_factory=time.time)
    warm_start: Optional[warm_start_lib.WarmStartReport] = None  # with warm_start_from
    output_bias: Optional[Dict[str, Any]] = None  # what `init_output_bias` set
    early_stopping: Optional[keras.callbacks.Callback] = None  # in ``callbacks`` too
    epoch_log: Optional[EpochLog] = None  # in ``callbacks`` too

    def fit(self, verbose="auto"):
        history = self.model.fit(
            self.train_data, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
            validation_data=self.validation_data, validation_steps=self.validation_steps,
            callbacks=self.callbacks, verbose=verbose)
        self.nan_guard.check(self.training.dense_optimizer.learning_rate)
        stopper = self.early_stopping
        pending = stopper.pending_steps() if isinstance(stopper, StopAndAnneal) else 0
        if pending:   # the epochs ran out during the anneal of the restored weights
            # the next epoch index (History.epoch holds absolute indices; a resumed
            # run's first one is not 0)
            after = history.epoch[-1] + 1 if history.epoch else 0
            tail = self.model.fit(
                self.train_data, initial_epoch=after,
                epochs=after + 1, steps_per_epoch=pending,
                validation_data=self.validation_data, validation_steps=self.validation_steps,
                callbacks=self.callbacks, verbose=verbose)
            self.nan_guard.check(self.training.dense_optimizer.learning_rate)
            history.epoch.extend(tail.epoch)
            for key, values in tail.history.items():
                history.history.setdefault(key, []).extend(values)
        return history

    def _history(self, history) -> Dict[str, List[float]]:
        """Every epoch's metrics: the `EpochLog`'s (which spans a resumed run's
        epochs before the kill), else ``history``'s (a `model.fit` History)."""
        if self.epoch_log is not None and self.epoch_log.epochs:
            return self.epoch_log.history()
        return {k: [float(x) for x in v] for k, v in (history.history.items()
                                                      if history else [])}

    def finish(self, history=None) -> Dict[str, Any]:
        """Saves the final weights and ``train_summary.json`` (chief only; other
        workers save into a temporary directory, as tf.distribute requires every
        worker to take part in saving)."""
        summary = {
            "model": self.config.model, "strategy": type(self.strategy).__name__,
            "replicas": self.strategy.num_replicas_in_sync, "jit_compile": self.jit_compile,
            "seconds": round(time.time() - self.started, 1),
            "steps": int(self.model.optimizer.iterations.numpy()),
            "history": self._history(history),
        }
        if self.output_bias is not None:
            summary["output_bias"] = self.output_bias
        if isinstance(self.early_stopping, StopAndAnneal):
            summary["early_stopping"] = self.early_stopping.report()
        if self.warm_start is not None:
            report = self.warm_start
            summary["warm_start"] = {"source": report.source, "source_model": report.source_model,
                                     "restored": len(report.restored),
                                     "new": len(report.unmatched_target),
                                     "unused_source": len(report.unmatched_source)}
        if is_parameter_server(self.strategy):
            summary["embedding_shards"] = embedding_shards(self.built.model)
        if is_chief(self.strategy):
            model_dir_lib.save_final_weights(self.model_dir, self.built.model)
            tfrecord.atomic_write_text(model_dir_lib.path(self.model_dir, model_dir_lib.SUMMARY),
                                       json.dumps(summary, indent=2) + "\n")
        else:
            tmp = tempfile.mkdtemp(prefix="tfmdl-worker-")
            try:
                self.built.model.save_weights(os.path.join(tmp, "final"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            # BackupAndRestore's write directory for this worker outlives fit() (Keras
            # deletes only the chief's backup on success): remove it.
            task_id = getattr(getattr(self.strategy, "cluster_resolver", None), "task_id", None)
            own = os.path.join(model_dir_lib.path(self.model_dir, model_dir_lib.BACKUP),
                               f"workertemp_{task_id}")
            if task_id is not None and tf.io.gfile.isdir(own):
                tf.io.gfile.rmtree(own)
        return summary


def _records(files: Sequence[str], source: str) -> Optional[int]:
    """Examples in ``files``: Parquet footers' row counts, or the TFRecord manifest's."""
    if reader.source_of(files, source) == reader.PARQUET:
        from tfmdl.pipelines import parquet  # pylint: disable=g-import-not-at-top

        return parquet.total_rows(files)
    return tfrecord.expected_records(list(files))


PRIOR_BATCH = 16384


def init_output_bias(built: base.BuiltModel, cfg: train_config.TrainingConfig, data_dir: str,
                     train_files: Sequence[str], source: str = "auto",
                     out=None) -> Dict[str, Any]:
    """Applies ``training.output_bias_init`` before training and returns what was
    set (``train_summary.json``'s ``output_bias``).

    ``prior``: each task's output bias starts at its training positive rate's
    log-odds (`label_stats.train_counts`: the manifest's counts, or one counting
    pass), solved on one batch of ``PRIOR_BATCH`` training rows so that the
    untrained model's mean prediction is the rate, and each (scenario, task)
    offset at its cell's log-odds offset from the task's (`base.set_output_bias`).
    ``zero``: the bias stays 0. A run resumed from its backup restores the trained
    bias over this one.
    """
    if cfg.output_bias_init == "zero":
        return {"init": "zero"}
    import sys  # pylint: disable=g-import-not-at-top

    counts = label_stats.train_counts(built.spec, data_dir, train_files, source=source,
                                      out=out or sys.stderr)
    rates = counts.rates()
    features = next(iter(reader.make_dataset(built.spec, list(train_files), PRIOR_BATCH,
                                             shuffle=True, seed=cfg.seed, repeat=False,
                                             source=source)))[0]
    values = base.set_output_bias(built, rates, features, counts=counts)
    out = {"init": "prior",
           "rates": {t: (None if math.isnan(r) else r) for t, r in rates.items()},
           "bias": {t: float(v) for t, v in zip(built.spec.task_names, values)}}
    offsets = base.output_offsets(built)
    if offsets is not None:
        out["scenario_offsets"] = {
            s: {t: float(offsets[i, k]) for k, t in enumerate(built.spec.task_names)}
            for i, s in enumerate(built.spec.scenario.names)}
    return out


def prepare(config, data_dir: str, model_dir: str, *,
            strategy: Optional[tf.distribute.Strategy] = None,
            overrides: Sequence[str] = (),
            warm_start_from: Optional[str] = None,
            source: str = "auto") -> TrainingRun:
    """Builds, compiles and wires everything for ``model.fit`` (module docstring).

    Args:
      config: a config path or mapping (model, params, training).
      data_dir: a directory with spec.yaml and train-*/eval-* shards.
      model_dir: where checkpoints, logs, the resolved config and weights go.
      strategy: a tf.distribute strategy (default: the default strategy).
      overrides: ``key.path=value`` strings (``--set``).
      warm_start_from: a trained model directory whose matching weights (backbone,
        first classifier layers, embedding tables) initialise the new model
        (`tfmdl.training.warm_start`; PMTA's parameter warm-up). A run resumed from
        its BackupAndRestore state continues from that state instead.
      source: "auto", "tfrecord" or "parquet": the data's format
        (`reader.make_dataset`).

    Every directory may be an ``s3://``, ``hdfs://`` or ``az://`` URL with the
    ``io`` extra (`tfmdl.pipelines.filesystems`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    filesystems.require(data_dir, model_dir, warm_start_from)
    if not tf.io.gfile.isdir(data_dir):
        raise reader.DataError(f"data directory {data_dir} does not exist.")
    exp = experiment.load_config(config, overrides)
    where = exp.source or "config"
    spec = spec_lib.load_spec(data_dir)
    tcfg = train_config.parse(exp.raw.get("training"), where, spec)
    train_files = reader.resolve_files(data_dir, "train", source)
    eval_files = None
    holdout = tcfg.validation_fraction or None
    if tcfg.validate and not holdout:
        try:
            eval_files = reader.resolve_files(data_dir, "eval", source)
        except reader.DataError:
            eval_files = None
    ps = is_parameter_server(strategy)
    if ps and tcfg.checkpoint_every_steps:
        raise config_lib.ConfigError(
            f"{where}: training.checkpoint_every_steps is not supported with parameter-server "
            f"training (Keras allows only epoch-level callbacks there); checkpoints are "
            f"written per epoch, so shorten epochs instead (training.steps with more "
            f"training.epochs).")
    if tcfg.mixed_precision != "off":
        keras.mixed_precision.set_global_policy(tcfg.mixed_precision)

    n_train = _records(train_files, source)
    steps_per_epoch = None
    if tcfg.steps:
        steps_per_epoch = max(math.ceil(tcfg.steps / tcfg.epochs), 1)
    elif ps:
        if n_train is None:
            raise TrainingError("parameter-server training needs training.steps (or shards with "
                                "a manifest.json giving their record counts).")
        steps_per_epoch = max(n_train // tcfg.batch_size, 1)
    run_steps = total_steps(tcfg, n_train, steps_per_epoch)
    tcfg = resolve_schedules(tcfg, run_steps)
    if tcfg.dense_optimizer.schedule == "constant" and run_steps is None:
        logging.info("training.dense_optimizer.schedule: auto is a constant rate here: the "
                     "run's length is unknown (no manifest.json record counts).")

    resolved = exp.to_dict()
    resolved["training"] = config_lib.to_dict(tcfg)
    model_dir_lib.check_resume(model_dir, resolved)

    with strategy.scope():
        built = experiment.from_config(exp, spec)
        emb_params = sum(int(v.shape.num_elements()) for v in base.embedding_weights(built.model))
        jit = resolve_jit(tcfg.jit_compile, strategy, emb_params,
                          dense_tables=xla_mode(tcfg) is True)
        dense_optimizer = make_optimizer(tcfg.dense_optimizer)
        model = compile_model(built, tcfg, jit, dense_optimizer=dense_optimizer)
    report = None
    if warm_start_from:
        report = warm_start_lib.warm_start(built, warm_start_from)
    # after the warm start: the output bias is outside its scope, and its prior is
    # solved on the logits of the model that trains (the restored backbone moves
    # them), so the untrained mean prediction is the training rate either way
    bias = init_output_bias(built, tcfg, data_dir, train_files, source)

    lookup = built.lookup

    def dataset(split, files, ctx=None, training=True, side=None):
        ds = reader.make_dataset(
            spec, files, tcfg.batch_size, shuffle=training, seed=tcfg.seed,
            holdout=(side, holdout) if holdout and side else None,
            shuffle_buffer=tcfg.shuffle_buffer, shuffle_floor=tcfg.shuffle_floor,
            repeat=True if (training and (ps or tcfg.steps))
            else False, drop_remainder=jit, input_context=ctx, num_workers=_num_workers(),
            source=source)
        if jit:
            ds = ds.map(lambda f, l, w: (lookup(f), l, w), num_parallel_calls=tf.data.AUTOTUNE)
        return ds

    if ps:
        train_data = keras.utils.experimental.DatasetCreator(
            lambda ctx: dataset("train", train_files, ctx, side="keep"))
    else:
        train_data = dataset("train", train_files, side="keep")
    validation_data = None
    if holdout and tcfg.validate and not ps:
        validation_data = dataset("validation", train_files, training=False, side="take")
    elif eval_files and not ps:
        validation_data = dataset("eval", eval_files, training=False)

    nan_guard = NaNGuard(per_batch=not ps)
    epoch_log = EpochLog(model_dir, model_dir_lib.has_backup(model_dir),
                         chief=is_chief(strategy))
    callbacks: List[keras.callbacks.Callback] = [nan_guard, epoch_log]
    if not ps:
        callbacks.append(keras.callbacks.BackupAndRestore(
            model_dir_lib.path(model_dir, model_dir_lib.BACKUP),
            save_freq=tcfg.backup_every_steps, delete_checkpoint=True))
        callbacks.append(ResumeLogger())
    callbacks.append(keras.callbacks.ModelCheckpoint(
        os.path.join(model_dir_lib.path(model_dir, model_dir_lib.CHECKPOINTS),
                     "ckpt-{epoch:03d}"),
        save_weights_only=True,
        save_freq=tcfg.checkpoint_every_steps or "epoch"))
    callbacks.append(keras.callbacks.TensorBoard(model_dir_lib.path(model_dir, model_dir_lib.LOGS),
                                                 update_freq=tcfg.log_every_steps))
    es = tcfg.early_stopping
    if es.metric:
        names = ["loss"] + [f"{t}_{m}" for t in spec.task_names for m in ("loss", "auc")]
        names += [f"val_{n}" for n in names]
        if es.metric not in names:
            raise config_lib.ConfigError(
                f"{where}: training.early_stopping.metric: {es.metric!r} is not a metric of "
                f"this run.{config_lib.suggest(es.metric, names)}")
        if es.metric.startswith("val_") and validation_data is None:
            raise config_lib.ConfigError(
                f"{where}: training.early_stopping.metric={es.metric} needs validation "
                f"(training.validate: true, and an eval split or "
                f"training.validation_fraction > 0).")
        schedule = anneal_schedule(dense_optimizer)
        if schedule is not None and not ps:
            stopper = StopAndAnneal(es.metric, es.patience, es.mode, schedule,
                                    tcfg.dense_optimizer.anneal_fraction)
        else:   # no anneal to restart (or epoch-level callbacks only, on parameter servers)
            stopper = keras.callbacks.EarlyStopping(
                monitor=es.metric, patience=es.patience, mode=es.mode,
                restore_best_weights=True)
        callbacks.append(stopper)
    else:
        stopper = None
    # written only once every check above passed: a rejected config never lands
    # in config.yaml
    tf.io.gfile.makedirs(model_dir)
    if is_chief(strategy):
        model_dir_lib.write_config_and_spec(model_dir, experiment.load_config(resolved), spec)
    return TrainingRun(
        built=built, model=model, config=experiment.load_config(resolved), training=tcfg,
        spec=spec, strategy=strategy, model_dir=model_dir, jit_compile=jit,
        train_data=train_data, validation_data=validation_data, epochs=tcfg.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=tcfg.validation_steps or None, callbacks=callbacks,
        nan_guard=nan_guard, warm_start=report, output_bias=bias, early_stopping=stopper,
        epoch_log=epoch_log)
