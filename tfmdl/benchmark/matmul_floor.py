"""The matmul floor of a model's training step: its own products, timed alone.

A training step of a dense ranking model is mostly matrix products: every
product ``C = op(A) · op(B)`` of the forward pass (``op``: identity or
transpose) runs again twice in the backward pass, ``dA`` and ``dB``. The floor
is the time TensorFlow takes on this machine to run exactly those products —
the same shapes and transposes, with nothing else in the step (no bias,
activation, gating, loss, optimizer update, lookup or input pipeline) — so a
training step that runs these products with TensorFlow's kernels or XLA cannot
be faster:

* `model_products` traces ``model(x, training=True)`` for a fixed batch size
  and lists every ``MatMul`` / ``BatchMatMul`` op of the traced graph with its
  static operand shapes and transpose flags (products inside nested functions
  or control flow, which tfmdl's layers do not use, are not listed: the floor
  can only come out lower, never higher);
* `Floor` times one call of a function that runs each listed product and its
  two gradients (TensorFlow's own gradient of the op, so the same kernels the
  step's backward pass runs) on random operands, once with TensorFlow's
  kernels (oneDNN on CPU) and once compiled by XLA, and keeps the best of a
  few calls of each.

Compared with a single reference product's FLOP rate, the floor accounts for
how fast these particular shapes run (narrow first layers, batched experts,
small gate products), so "share of the floor" says how much of a side's step
is overhead on top of the arithmetic it cannot avoid.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

_MATMUL_OPS = {"MatMul": ("transpose_a", "transpose_b"),
               "BatchMatMul": ("adj_x", "adj_y"),
               "BatchMatMulV2": ("adj_x", "adj_y"),
               "BatchMatMulV3": ("adj_x", "adj_y")}


@dataclasses.dataclass(frozen=True)
class Product:
    """One forward matrix product ``op(A) · op(B)`` of a model."""
    a_shape: Tuple[int, ...]
    b_shape: Tuple[int, ...]
    transpose_a: bool = False
    transpose_b: bool = False
    name: str = ""

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """``C``'s shape: the broadcast batch dims, then ``[m, n]``."""
        a, b = self.a_shape, self.b_shape
        m = a[-1] if self.transpose_a else a[-2]
        n = b[-2] if self.transpose_b else b[-1]
        return tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (m, n)

    @property
    def flops(self) -> int:
        """Forward FLOPs: ``2 · batch · m · k · n`` (batch dims broadcast)."""
        k = self.a_shape[-2] if self.transpose_a else self.a_shape[-1]
        return 2 * k * int(np.prod(self.output_shape, dtype=np.int64))


def _input_signature(model: keras.Model, batch_size: int):
    def spec(t):
        shape = [batch_size if d is None else d for d in t.shape]
        return tf.TensorSpec(shape, t.dtype, name=getattr(t, "name", None))
    return tf.nest.map_structure(spec, model.input)


def model_products(model: keras.Model, batch_size: int) -> List[Product]:
    """Every matrix product of ``model``'s training-mode forward pass at ``batch_size``.

    Raises:
      ValueError: when a product's operand shapes are not static at that batch size.
    """
    signature = _input_signature(model, batch_size)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        signature).graph
    products = []
    for op in graph.get_operations():
        if op.type not in _MATMUL_OPS:
            continue
        a, b = (tuple(t.shape.as_list()) if t.shape.rank is not None else None
                for t in op.inputs[:2])
        if a is None or b is None or None in a or None in b:
            raise ValueError(f"{op.name}: matmul operand shapes are not static at batch "
                             f"size {batch_size} ({op.inputs[0].shape} x {op.inputs[1].shape}).")
        ta, tb = (bool(op.get_attr(k)) for k in _MATMUL_OPS[op.type])
        products.append(Product(a, b, ta, tb, op.name))
    return products


def step_flops(products: Sequence[Product]) -> int:
    """FLOPs of the products and their two gradients: ``3 · Σ forward FLOPs``."""
    return 3 * sum(p.flops for p in products)


def _step_function(products: Sequence[Product], jit_compile: bool):
    """A function of the operands running every product forward and backward."""

    def step(operands):
        outs = []
        for p, (a, b, dc) in zip(products, operands):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                c = tf.matmul(a, b, transpose_a=p.transpose_a, transpose_b=p.transpose_b)
            outs.append(c)
            outs.extend(tape.gradient(c, [a, b], output_gradients=dc))
        return outs

    return tf.function(step, jit_compile=jit_compile)


def _operands(products: Sequence[Product], seed: int = 0):
    out = []
    for i, p in enumerate(products):
        a = tf.random.stateless_uniform(p.a_shape, seed=[seed, 3 * i], minval=-1.0)
        b = tf.random.stateless_uniform(p.b_shape, seed=[seed, 3 * i + 1], minval=-1.0)
        dc = tf.random.stateless_uniform(p.output_shape, seed=[seed, 3 * i + 2], minval=-1.0)
        out.append((a, b, dc))
    return out


class Floor:
    """Times `model_products` forward and backward with and without XLA.

    Build once (traces and compiles both functions), then call `measure` as often
    as needed: it returns the best seconds per step of each engine over
    ``repeats`` calls.
    """

    ENGINES = ("tensorflow", "xla")

    def __init__(self, products: Sequence[Product]):
        if not products:
            raise ValueError("the model has no matrix products: no matmul floor to measure.")
        self.products = list(products)
        self.flops = step_flops(self.products)
        self._operands = _operands(self.products)
        self._functions = {"tensorflow": _step_function(self.products, False),
                           "xla": _step_function(self.products, True)}
        for fn in self._functions.values():   # trace, compile, warm up
            fn(self._operands)

    def measure(self, repeats: int = 5) -> Dict[str, float]:
        """Best seconds per step of each engine, the engines interleaved."""
        best = {name: float("inf") for name in self.ENGINES}
        for _ in range(repeats):
            for name in self.ENGINES:
                # eager calls return when the work is done: nothing to copy out
                start = time.perf_counter()
                self._functions[name](self._operands)
                best[name] = min(best[name], time.perf_counter() - start)
        return best
