"""Per-token linear maps and feed-forward networks (RankMixer "Pertoken FFN").

A per-token layer applies a *different* weight matrix to every token position of
a ``[batch, tokens, dim]`` input. It is computed as one batched matmul over a
``[tokens, d_in, d_out]`` kernel, never as a Python loop of `Dense` layers
(docs/design.md, "Notation"; MDL paper 3.1.2 and 3.2.1).

`kernel_product` multiplies by a kernel; a narrow kernel (few output units: a
gate's logits, a tower's last layers) is multiplied in units-major layout, see
its docstring.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util

try:  # XLA's optimization barrier; without it XLA may undo the units-major layout
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops
except ImportError:  # pragma: no cover - every supported TensorFlow has it
    gen_xla_ops = None

# a kernel with at most this many output units (and no more than its inputs) is
# multiplied in units-major layout (`kernel_product`)
NARROW_UNITS = 64


def is_narrow(d_in: int, units: int) -> bool:
    """Whether a ``[d_in, units]`` kernel is multiplied in units-major layout."""
    return units <= NARROW_UNITS and units <= d_in


def _in_xla() -> bool:
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _barrier(x: tf.Tensor) -> tf.Tensor:
    return gen_xla_ops.xla_optimization_barrier([x])[0] if gen_xla_ops else x


@tf.custom_gradient
def units_major(kernel: tf.Tensor):
    """``[..., d_in, units]`` -> ``[..., units, d_in]``, a transpose that stays one.

    Under XLA the transpose and its gradient sit behind optimization barriers:
    XLA would otherwise fold them into the neighbouring dots and restore the
    slow layout `kernel_product` avoids.
    """
    xla = _in_xla()
    out = tf.linalg.matrix_transpose(kernel)
    if xla:
        out = _barrier(out)

    def grad(upstream):
        return tf.linalg.matrix_transpose(_barrier(upstream) if xla else upstream)

    return out, grad


def kernel_product(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``x · W``: ``[..., m, d_in] x [..., d_in, units]`` -> ``[..., m, units]``.

    A narrow kernel (`is_narrow`: ``units <= 64`` and ``units <= d_in``) is
    transposed first and multiplied as ``x · (Wᵀ)ᵀ``, so the training step's
    three products run as ``x · Vᵀ``, ``dy · V`` and ``dyᵀ · x`` with
    ``V = Wᵀ`` — none of them a product whose output's minor dimension is the
    few units. On the 2-core Intel Xeon (2026-12-06, `tfmdl.benchmark.matmul_floor`,
    forward and both gradients, batch 1024): a ``[6, 128, 2]`` gate kernel
    4.3 -> 1.1 ms under XLA and 1.5 -> 1.2 ms without; ``[6, 128, 64]`` 4.2 ->
    3.1 ms under XLA; kernels with ``units >= 128`` gain nothing, and lose when
    ``units > d_in``. The values are the same: the transposed kernel is exact.
    """
    d_in, units = kernel.shape[-2], kernel.shape[-1]
    if is_narrow(d_in, units):
        return tf.matmul(x, units_major(kernel), transpose_b=True)
    return tf.matmul(x, kernel)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} should be a positive integer. Received: {name}={value!r}")


def _check_rate(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} should be a float in [0, 1). Received: {name}={value!r}")


def token_major(x: tf.Tensor) -> tf.Tensor:
    """``[batch, N, d]`` <-> ``[N, batch, d]`` (its own inverse)."""
    return tf.transpose(x, [1, 0, 2])


def build_sublayer(layer: keras.layers.Layer, input_shape) -> None:
    """Builds ``layer`` inside its own name scope, as its first ``__call__`` would.

    Keras 2 only opens a sublayer's name scope in ``__call__``; building
    sublayers from a parent's ``build()`` without it gives their weights
    clashing names (``parent/kernel`` twice), which breaks h5 weight files.
    """
    with tf.name_scope(layer.name):
        layer.build(input_shape)


def per_token_initializer(initializer, fan_ins: Optional[Sequence[int]] = None):
    """Wraps ``initializer`` for a per-token kernel ``[N, d_in, units]``.

    Keras computes the fans of a 3-D kernel as ``N * d_in`` and ``N * units``,
    which would shrink a Glorot/He/LeCun initialisation by ``sqrt(N)``. The
    wrapper draws every token as its own ``Dense(units)`` on ``d_in`` inputs
    would be drawn. With ``fan_ins`` (the true input width of each token, at most
    ``d_in``) token ``i`` is drawn with fan-in ``fan_ins[i]`` and its rows
    ``>= fan_ins[i]`` (which only ever multiply zero padding) are set to zero.

    Args:
      initializer: anything `keras.initializers.get` accepts.
      fan_ins: optional per-token input widths, for zero-padded inputs.

    Returns:
      A callable ``(shape, dtype=None) -> Tensor``.
    """
    initializer = keras.initializers.get(initializer)

    def init(shape, dtype=None, **kwargs):
        n, d_in, units = (int(s) for s in shape)
        if not isinstance(initializer, keras.initializers.VarianceScaling):
            value = initializer(shape, dtype=dtype, **kwargs)
        else:
            # Keras divides the variance by N*fan; scale by N to divide by fan only.
            per_token = keras.initializers.VarianceScaling(
                scale=initializer.scale * n, mode=initializer.mode,
                distribution=initializer.distribution, seed=initializer.seed)
            value = per_token(shape, dtype=dtype)
            if fan_ins is not None:
                def fan(width):
                    return {"fan_in": width, "fan_out": units,
                            "fan_avg": (width + units) / 2.0}[initializer.mode]
                # every distribution's std is proportional to 1/sqrt(fan)
                factor = np.sqrt([max(1.0, fan(d_in)) / max(1.0, fan(w)) for w in fan_ins])
                value = value * tf.constant(factor[:, None, None], dtype=value.dtype)
        if fan_ins is not None:
            rows = np.arange(d_in)[None, :] < np.asarray(fan_ins)[:, None]  # [N, d_in]
            value = value * tf.constant(rows[:, :, None], dtype=value.dtype)
        return value

    return init


@keras.utils.register_keras_serializable(package="tfmdl")
class PerTokenDense(keras.layers.Layer):
    """A linear map with its own weights for every token position.

    ``y_n = W_n x_n + b_n`` for every token ``n``: the contraction
    ``einsum("bnd,ndu->bnu")`` over the kernel ``W`` of shape ``[N, d_in, units]``,
    computed as one batched matmul in token-major layout (`token_major_call`).
    `shared_call` applies it to one input shared by every token.

    Shapes: input ``[batch, N, d_in]`` -> output ``[batch, N, units]``; ``N`` and
    ``d_in`` must be static. Paper: MDL 3.1.2 / 3.2.2 (per-token projections,
    after RankMixer's Pertoken FFN).

    Variance-scaling initializers (Glorot, He, LeCun) use each token's own fans
    ``(d_in, units)``, as if every token had its own `Dense` layer.

    Example:
      >>> layer = PerTokenDense(8)
      >>> layer(tf.zeros([2, 3, 4])).shape
      TensorShape([2, 3, 8])

    Args:
      units: output width of every token.
      use_bias: whether to add a per-token bias ``b`` of shape ``[N, units]``.
      kernel_initializer: initializer of the kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, units: int, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("units", units)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        num_tokens, d_in = input_shape[1], input_shape[2]
        if num_tokens is None or d_in is None:
            raise ValueError(
                f"{self.name}: PerTokenDense needs a static number of tokens and "
                f"width. Received: input_shape={input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(num_tokens, d_in, self.units),
            initializer=per_token_initializer(self.kernel_initializer))
        self.bias = (self.add_weight(name="bias", shape=(num_tokens, self.units),
                                     initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, inputs):
        # transpose -> batched matmul -> transpose: the same contraction as
        # einsum("bnd,ndu->bnu"), but TensorFlow's CPU einsum kernel was ~25-35%
        # slower for it without XLA (with XLA both compile to the same dot)
        return token_major(self.token_major_call(token_major(inputs)))

    def token_major_call(self, inputs):
        """The same map on token-major input: ``[N, batch, d_in]`` -> ``[N, batch, units]``
        (one batched matmul; chains of per-token layers transpose once)."""
        outputs = kernel_product(inputs, tf.cast(self.kernel, inputs.dtype))
        if self.bias is not None:
            outputs = outputs + tf.cast(self.bias, inputs.dtype)[:, None, :]
        return outputs

    def shared_call(self, inputs):
        """The map applied to one input shared by every token: ``[batch, d_in]`` ->
        ``[batch, N, units]``, equal to ``call(tile(x))`` without the tile.

        One ``[batch, d_in] x [d_in, N·units]`` matmul (MMoE's experts and gates,
        task towers on a shared bottom); its input gradient is one matmul too
        instead of a sum over N tiled copies. The layer must be built.
        """
        n, d_in, units = (int(s) for s in self.kernel.shape)
        kernel = tf.reshape(tf.transpose(tf.cast(self.kernel, inputs.dtype), [1, 0, 2]),
                            [d_in, n * units])
        outputs = tf.reshape(kernel_product(inputs, kernel), [-1, n, units])
        if self.bias is not None:
            outputs = outputs + tf.cast(self.bias, inputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class PerTokenFFN(keras.layers.Layer):
    """Per-token two-layer MLP (RankMixer's Pertoken FFN).

    ``PFFN(x)_n = W2_n · Dropout(act(W1_n x_n + b1_n)) + b2_n``, with weights
    ``W1`` of shape ``[N, d_in, hidden_dim]`` and ``W2`` of shape
    ``[N, hidden_dim, d_out]`` different for every token position ``n``; each
    layer is one batched matmul over the tokens (``einsum("bnd,ndh->bnh")``), with
    one transpose to token-major layout before the pair and one after.

    Shapes: input ``[batch, N, d_in]`` -> output ``[batch, N, d_out]``.
    Paper: MDL 3.1.2 (scenario/task tokenization), 3.2.1 and 3.3 (PFFN, PFFN_s,
    PFFN_t); docs/design.md 2.1 and 2.2.

    Example:
      >>> ffn = PerTokenFFN(hidden_dim=16)
      >>> ffn(tf.zeros([2, 3, 4])).shape
      TensorShape([2, 3, 4])

    Args:
      hidden_dim: width of the hidden layer of every token.
      output_dim: output width ``d_out``; ``None`` (default) keeps ``d_in``.
      activation: hidden activation, anything `keras.activations.get` accepts
        (default ``"gelu"``, the exact erf form).
      use_bias: whether both layers have per-token biases (default True).
      dropout: dropout rate on the hidden activations (default 0.0).
      kernel_initializer: initializer of both kernels (default ``"glorot_uniform"``).
    """

    def __init__(self, hidden_dim: int, output_dim: Optional[int] = None,
                 activation="gelu", use_bias: bool = True, dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("hidden_dim", hidden_dim)
        if output_dim is not None:
            _check_positive_int("output_dim", output_dim)
        _check_rate("dropout", dropout)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        d_out = self.output_dim or input_shape[-1]
        init = keras.initializers.serialize(self.kernel_initializer)
        self.hidden = PerTokenDense(self.hidden_dim, self.use_bias,
                                    keras.initializers.deserialize(init), name="hidden")
        self.out = PerTokenDense(d_out, self.use_bias,
                                 keras.initializers.deserialize(init), name="output")
        self.drop = keras.layers.Dropout(self.dropout)
        build_sublayer(self.hidden, input_shape)
        build_sublayer(self.out, input_shape[:-1].concatenate([self.hidden_dim]))
        super().build(input_shape)

    def call(self, inputs, training=None):
        hidden = self.activation(self.hidden.token_major_call(token_major(inputs)))
        hidden = self.drop(hidden, training=training)
        return token_major(self.out.token_major_call(hidden))

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return input_shape[:-1].concatenate([self.output_dim or input_shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, output_dim=self.output_dim,
                      activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias, dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
