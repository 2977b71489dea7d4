"""The ``training:`` section of a config file (typed, validated).

    training:
      batch_size: 1024
      epochs: 2               # or steps: 5000 (total optimizer steps)
      dense_optimizer: {name: adam, learning_rate: 0.001}   # schedule: auto (anneal over the last 10%)
      embedding_optimizer: {name: adagrad, learning_rate: 0.05}
      loss_weights: {like: 1.0, finish: 0.5}
      jit_compile: auto       # auto | on | off
      mixed_precision: "off"  # or mixed_bfloat16
      early_stopping: {metric: val_like_auc, patience: 2}
      validation_fraction: 0.1  # validate on 10% of the training rows, not the eval split
      output_bias_init: prior # or zero (docs/training.md, "Output-bias prior")
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Literal, Mapping, Optional

OPTIMIZERS = ("adam", "lazy_adam", "rmsprop", "adagrad", "sgd")


@dataclasses.dataclass
class OptimizerConfig:
    name: Literal["adam", "lazy_adam", "rmsprop", "adagrad", "sgd"] = "adam"
    learning_rate: float = 1e-3
    # auto: the dense optimizer's rate is constant, then anneals (cosine) to 0
    # over the run's last anneal_fraction of steps; the tables' stays constant
    # (docs/training.md, "Learning-rate schedule")
    schedule: Literal["auto", "constant", "anneal", "cosine", "exponential"] = "auto"
    decay_steps: int = 0             # 0: the run's total steps (anneal, cosine, exponential)
    anneal_fraction: float = 0.1     # anneal: the share of decay_steps spent decaying
    decay_rate: float = 0.5          # exponential: lr * decay_rate^(step / decay_steps)
    warmup_steps: int = 0            # linear warm-up before the schedule
    clipnorm: Optional[float] = None
    initial_accumulator: float = 0.1  # adagrad only: each squared-gradient sum's start

    def __post_init__(self):
        for key in ("learning_rate", "anneal_fraction", "decay_rate", "initial_accumulator",
                    "clipnorm"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value}.")
        if self.initial_accumulator <= 0:
            raise ValueError(f"initial_accumulator must be positive, got "
                             f"{self.initial_accumulator}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0.0 < self.anneal_fraction <= 1.0:
            raise ValueError(f"anneal_fraction must be in (0, 1], got {self.anneal_fraction}.")
        if self.decay_steps < 0 or self.warmup_steps < 0:
            raise ValueError(f"decay_steps and warmup_steps must be >= 0, got "
                             f"{self.decay_steps} and {self.warmup_steps}.")


@dataclasses.dataclass
class EarlyStoppingConfig:
    metric: str = ""                 # e.g. val_like_auc or val_loss; empty = off
    patience: int = 2
    mode: Literal["auto", "min", "max"] = "auto"


@dataclasses.dataclass
class TrainingConfig:
    batch_size: int = 1024
    epochs: int = 1
    steps: int = 0                   # total steps; > 0 overrides the epoch length
    dense_optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    embedding_optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(name="adagrad", learning_rate=0.05))
    loss_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    jit_compile: Literal["auto", "on", "off"] = "auto"
    mixed_precision: Literal["off", "mixed_bfloat16"] = "off"
    shuffle_buffer: int = 10_000
    # the buffer holds at least this many records for shards not known to be in
    # random order (sorted by user or time; tfmdl.pipelines.reader); 0: exactly
    # shuffle_buffer
    shuffle_floor: int = 200_000
    seed: int = 0
    validate: bool = True            # evaluate the eval split after every epoch
    validation_steps: int = 0        # 0: the whole validation set
    # > 0: validate on this fraction of the training records, held out from
    # training (a fingerprint of each record decides; tfmdl.pipelines.reader),
    # instead of on the eval split, which then stays unseen until `evaluate`
    validation_fraction: float = 0.0
    checkpoint_every_steps: int = 0  # 0: a checkpoint per epoch
    backup_every_steps: int = 200    # BackupAndRestore frequency (for resuming)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    steps_per_execution: int = 1
    log_every_steps: int = 100       # TensorBoard scalar frequency
    # each task's output bias starts at its training positive rate's log-odds
    # (corrected on one training batch so the untrained model predicts the rate);
    # zero: at 0, an untrained model predicts 0.5 for every task
    output_bias_init: Literal["prior", "zero"] = "prior"

    def __post_init__(self):
        for key in ("batch_size", "epochs", "shuffle_buffer", "steps_per_execution",
                    "backup_every_steps", "log_every_steps"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}.")
        for key in ("steps", "validation_steps", "checkpoint_every_steps", "shuffle_floor"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}.")
        for task, w in self.loss_weights.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"loss_weights.{task} must be a non-negative number, got {w!r}.")


def parse(raw: Optional[Mapping[str, Any]], where: str = "config",
          spec=None) -> TrainingConfig:
    """The ``training:`` section ``raw`` as a checked `TrainingConfig`: every
    command that reads a config (``train``, ``model-info``, the benchmark suite)
    checks it the same way. With ``spec``, ``loss_weights`` must name its tasks.
    Errors are `tfmdl.config.ConfigError` s starting with ``where`` (the file;
    empty: no prefix)."""
    from tfmdl import config as config_lib  # pylint: disable=g-import-not-at-top

    try:
        cfg = config_lib.dataclass_from_dict(TrainingConfig, dict(raw or {}), "training")
    except config_lib.ConfigError as exc:
        raise config_lib.ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    prefix = f"{where}: " if where else ""
    if spec is not None:
        for task in cfg.loss_weights:
            if task not in spec.task_names:
                raise config_lib.ConfigError(
                    f"{prefix}training.loss_weights.{task}: no task {task!r} in the spec."
                    f"{config_lib.suggest(task, spec.task_names)}")
    return cfg
