"""Training throughput and MFU (model FLOPs utilisation) on in-memory batches.

MFU = achieved training FLOP/s / the machine's matmul FLOP/s, both measured in
the same process: achieved = 3 x forward matmul FLOPs per example (see
`tfmdl.models.cost`) x examples/s; the reference is a large float32 matmul run
by TensorFlow itself, so the ratio says how much of what TensorFlow can do on
this CPU the model's training step gets.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import tensorflow as tf
import tf_keras as keras

from tfmdl.models import base
from tfmdl.models import cost


def matmul_flops_per_second(n: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of an ``n x n`` float32 matmul chain (TensorFlow's peak on this CPU)."""
    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4]) / n ** 0.5

    @tf.function
    def chain(x, y):
        # a dependent chain: identical independent matmuls would be merged by
        # common-subexpression elimination and overstate the peak
        for _ in range(repeats):
            x = tf.matmul(x, y)
        return x

    chain(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        chain(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 * repeats / best


@dataclasses.dataclass
class TrainSpeed:
    examples_per_second: float
    step_seconds: float
    forward_flops_per_example: int
    achieved_flops: float
    peak_matmul_flops: float
    batch_size: int
    steps: int
    jit_compile: bool

    @property
    def mfu(self) -> float:
        return self.achieved_flops / self.peak_matmul_flops


class _Timer(keras.callbacks.Callback):
    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.start = None
        self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def measure(built: base.BuiltModel, dataset: tf.data.Dataset, batch_size: int,
            steps: int = 50, warmup: int = 10, jit_compile: bool = False,
            in_memory_batches: int = 8, peak: Optional[float] = None) -> TrainSpeed:
    """Trains ``built.core`` on ``in_memory_batches`` looked-up batches (cached,
    repeated) for ``warmup + steps`` steps and times the last ``steps``."""
    lookup = built.lookup
    batches = (dataset.take(in_memory_batches)
               .map(lambda f, l, w: (lookup(f), {k: v[:, None] for k, v in l.items()},
                                     {k: v[:, None] for k, v in w.items()}))
               .cache().repeat())
    model = built.core
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={t: "binary_crossentropy" for t in built.task_names},
                  jit_compile=jit_compile)
    timer = _Timer(warmup)
    model.fit(batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    seconds = timer.end - timer.start
    eps = steps * batch_size / seconds
    fwd = cost.flops_per_example(built)
    peak = peak or matmul_flops_per_second()
    return TrainSpeed(examples_per_second=eps, step_seconds=seconds / steps,
                      forward_flops_per_example=fwd, achieved_flops=3.0 * fwd * eps,
                      peak_matmul_flops=peak, batch_size=batch_size, steps=steps,
                      jit_compile=jit_compile)
