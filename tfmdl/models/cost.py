"""Model size and cost: parameter counts and FLOPs per example.

FLOPs are counted from the traced forward graph of the core model at batch 1:
every ``MatMul``, ``BatchMatMul*`` and ``Einsum`` contributes ``2 x`` the product
of its index sizes (a multiply and an add per term). Element-wise ops,
normalisation and softmax are left out: they are a few percent of the matmul
work in these models and are not what MFU measures. Training costs about three
forward passes (forward, and two matmuls per matmul in the backward pass).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from tfmdl.models import base


def parameter_counts(built: base.BuiltModel) -> Dict[str, int]:
    """``{"embedding": ..., "dense": ..., "total": ...}`` trainable parameters."""
    total = int(sum(np.prod(w.shape) for w in built.model.trainable_weights))
    emb = int(sum(np.prod(w.shape) for w in base.embedding_weights(built.model)))
    return {"embedding": emb, "dense": total - emb, "total": total}


def _einsum_flops(equation: str, shapes) -> int:
    lhs = equation.replace(" ", "").split("->")[0]
    sizes = {}
    for term, shape in zip(lhs.split(","), shapes):
        term = term.replace("...", "")
        dims = list(shape)[-len(term):] if term else []
        if "..." in equation:
            for d in list(shape)[:len(shape) - len(term)]:
                sizes.setdefault(f"_{len(sizes)}", d)
        for letter, dim in zip(term, dims):
            sizes[letter] = int(dim)
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64)) if sizes else 0


def graph_matmul_flops(graph: tf.Graph) -> int:
    """Matmul FLOPs of every op in ``graph`` (static shapes required)."""
    total = 0
    for op in graph.get_operations():
        kind = op.type
        if kind in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
            a, b = (t.shape for t in op.inputs[:2])
            if not (a.is_fully_defined() and b.is_fully_defined()):
                continue
            adj_a = op.get_attr("transpose_a" if kind == "MatMul" else "adj_x")
            m, k = (a[-1], a[-2]) if adj_a else (a[-2], a[-1])
            adj_b = op.get_attr("transpose_b" if kind == "MatMul" else "adj_y")
            n = b[-2] if adj_b else b[-1]
            batch = int(np.prod(op.outputs[0].shape[:-2])) if op.outputs[0].shape.rank > 2 else 1
            total += 2 * batch * int(m) * int(k) * int(n)
        elif kind == "Einsum":
            shapes = [t.shape for t in op.inputs]
            if all(s.is_fully_defined() for s in shapes):
                total += _einsum_flops(op.get_attr("equation").decode(), shapes)
    return total


def flops_per_example(built: base.BuiltModel) -> int:
    """Forward matmul FLOPs of one example through the core model."""
    specs = {name: tf.TensorSpec([1] + list(t.shape[1:]), t.dtype)
             for name, t in built.core.input.items()}
    fn = tf.function(lambda feats: built.core(feats, training=False))
    graph = fn.get_concrete_function(specs).graph
    return graph_matmul_flops(graph)


def model_info(built: base.BuiltModel) -> Dict[str, object]:
    counts = parameter_counts(built)
    return {"model": built.name, **{f"params_{k}": v for k, v in counts.items()},
            "flops_per_example": flops_per_example(built)}


def format_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))

