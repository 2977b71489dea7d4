"""Classic CTR feature-interaction layers (docs/design.md 4: DeepFM, DCN, xDeepFM).

* `FieldProjection`: per-field inputs of different widths -> one common
  embedding width ``[batch, F, k]`` (what FM and CIN interact).
* `FMInteraction`: the factorization machine's pairwise term (DeepFM).
* `CrossV1`: one cross layer of the original Deep & Cross Network (DCN v1).
* `CompressedInteraction`: xDeepFM's compressed interaction network (CIN).

DCN-V2's cross layer is TensorFlow Recommenders' ``tfrs.layers.dcn.Cross``,
used as is by the ``dcnv2`` models.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.per_token_ffn import _check_positive_int, per_token_initializer


def _check_widths(name: str, widths) -> list:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths \
            or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1
                   for w in widths):
        raise ValueError(f"{name} should be a non-empty list of positive integers. "
                         f"Received: {name}={widths!r}")
    return [int(w) for w in widths]


@keras.utils.register_keras_serializable(package="tfmdl")
class FieldProjection(keras.layers.Layer):
    """Lays per-field inputs out as ``F`` field vectors of one common width ``k``.

    Field ``i`` (input width ``w_i``) becomes ``v_i = x_i`` when ``w_i = k`` and
    ``v_i = P_i x_i`` otherwise, with its own linear map ``P_i ∈ R^{k×w_i}`` (no
    bias). A numeric field (``w_i = 1``) thus becomes ``x_i · p_i``: the
    factorization machine's treatment of a real-valued feature (Rendle 2010).
    The projected fields are computed together: a static gather lays them out
    as ``[batch, P, w_max]`` (narrow fields zero-padded) and one ``einsum`` with
    the kernel ``[P, w_max, k]`` projects them; padded kernel rows start at zero
    and only ever multiply zeros. Each ``P_i`` is initialised with its own fan-in.

    Shapes: input ``[batch, sum(field_widths)]`` (fields concatenated in order)
    -> output ``[batch, F, k]`` in the same field order.
    Paper: the common-width field embeddings of DeepFM (Guo et al. 2017, 2.1)
    and xDeepFM (Lian et al. 2018, 3.1).

    Example:
      >>> FieldProjection([4, 1, 6], dim=4)(tf.zeros([2, 11])).shape
      TensorShape([2, 3, 4])

    Args:
      field_widths: input width ``w_i`` of every field, in input order.
      dim: common field width ``k``.
      kernel_initializer: initializer of the ``P_i`` (default ``"glorot_uniform"``).
    """

    def __init__(self, field_widths: Sequence[int], dim: int,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.field_widths = _check_widths("field_widths", field_widths)
        _check_positive_int("dim", dim)
        self.dim = int(dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=2)
        widths = np.asarray(self.field_widths)
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        self._total = int(widths.sum())
        same = np.flatnonzero(widths == self.dim)
        proj = np.flatnonzero(widths != self.dim)
        self._projected_widths = [int(w) for w in widths[proj]]
        # same-width fields: their columns; projected fields: padded columns, where
        # index `total` is the zero column appended in call()
        self._same_index = (offsets[same, None] + np.arange(self.dim)[None, :]).astype(np.int32)
        w_max = int(widths[proj].max()) if len(proj) else 0
        cols = np.arange(w_max)[None, :]
        self._proj_index = np.where(cols < widths[proj, None], offsets[proj, None] + cols,
                                    self._total).astype(np.int32)          # [P, w_max]
        # output position of [same fields..., projected fields...] back in field order
        self._order = np.argsort(np.concatenate([same, proj]), kind="stable").astype(np.int32)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[-1] != self._total:
            raise ValueError(f"{self.name}: the input width must be sum(field_widths)="
                             f"{self._total} (field_widths={self.field_widths}). "
                             f"Received: input_shape={input_shape}")
        self.kernel = None
        if self._projected_widths:
            self.kernel = self.add_weight(
                name="kernel", shape=(len(self._projected_widths), self._proj_index.shape[1],
                                      self.dim),
                initializer=per_token_initializer(self.kernel_initializer,
                                                  fan_ins=self._projected_widths))
        super().build(input_shape)

    def call(self, inputs):
        parts = []
        if len(self._same_index):
            parts.append(tf.gather(inputs, self._same_index, axis=1))        # [B, I, k]
        if self.kernel is not None:
            padded = tf.pad(inputs, [[0, 0], [0, 1]])
            fields = tf.gather(padded, self._proj_index, axis=1)             # [B, P, w_max]
            parts.append(tf.einsum("bpw,pwk->bpk", fields, self.kernel))
        out = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
        return tf.gather(out, self._order, axis=1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], len(self.field_widths), self.dim])

    def get_config(self):
        config = super().get_config()
        config.update(field_widths=list(self.field_widths), dim=self.dim,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class FMInteraction(keras.layers.Layer):
    """The factorization machine's second-order term over field vectors.

    ``y = Σ_{i<j} <v_i, v_j> = ½ Σ_f ((Σ_i v_{i,f})² − Σ_i v_{i,f}²)``, the
    O(F·k) form of the pairwise sum (Rendle 2010, lemma 3.1). No weights: the
    interactions are carried by the field vectors ``v_i`` themselves.

    Shapes: input ``[batch, F, k]`` -> output ``[batch, 1]``.
    Paper: DeepFM's FM component (Guo et al. 2017, eq. 2).

    Example:
      >>> FMInteraction()(tf.ones([2, 3, 4])).shape   # 3 pairs x 4 -> 12 each
      TensorShape([2, 1])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def call(self, inputs):
        square_of_sum = tf.square(tf.reduce_sum(inputs, axis=1))            # [B, k]
        sum_of_squares = tf.reduce_sum(tf.square(inputs), axis=1)           # [B, k]
        return 0.5 * tf.reduce_sum(square_of_sum - sum_of_squares, axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], 1])


@keras.utils.register_keras_serializable(package="tfmdl")
class CrossV1(keras.layers.Layer):
    """One cross layer of the Deep & Cross Network (DCN v1).

    ``x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l`` with a weight *vector*
    ``w_l ∈ R^d`` and bias ``b_l ∈ R^d``: the scalar ``x_l · w_l`` scales ``x_0``,
    so a layer adds ``2d`` parameters and raises the polynomial degree by one.
    (DCN-V2 replaces ``w_l`` by a matrix; use ``tfrs.layers.dcn.Cross`` for it.)

    Call as ``layer(x0, x)`` (``x`` defaults to ``x0`` for the first layer).

    Shapes: ``x0``, ``x`` ``[batch, d]`` -> ``[batch, d]``.
    Paper: Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions", eq. 3.

    Example:
      >>> cross = CrossV1()
      >>> x0 = tf.ones([2, 5])
      >>> cross(x0, cross(x0)).shape
      TensorShape([2, 5])

    Args:
      use_bias: whether to add ``b_l`` (default True).
      kernel_initializer: initializer of ``w_l`` (default ``"glorot_uniform"``,
        drawn as a ``[d, 1]`` matrix).
    """

    def __init__(self, use_bias: bool = True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        d = tf.TensorShape(input_shape)[-1]
        if d is None:
            raise ValueError(f"{self.name}: CrossV1 needs a static input width. "
                             f"Received: input_shape={input_shape}")
        self.kernel = self.add_weight(name="kernel", shape=(int(d), 1),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(int(d),), initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, x0, x=None):
        x = x0 if x is None else x
        if x0.shape[-1] != x.shape[-1]:
            raise ValueError(f"{self.name}: x0 and x must have the same width. "
                             f"Received: x0.shape={x0.shape}, x.shape={x.shape}")
        out = x0 * tf.matmul(x, self.kernel) + x                          # [B, d] * [B, 1]
        return out + self.bias if self.bias is not None else out

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class CompressedInteraction(keras.layers.Layer):
    """xDeepFM's compressed interaction network (CIN).

    With field vectors ``X^0 ∈ R^{m×D}`` and ``H_0 = m``, layer ``k`` computes
    ``H_k`` feature maps

        ``X^k_{h,*} = act(Σ_{i≤H_{k-1}} Σ_{j≤m} W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*}) + b^k_h)``

    as one ``einsum("bid,bjd,hij->bhd")`` per layer (a loop over depth only).
    Each map is sum-pooled over the embedding axis, ``p^k_h = Σ_d X^k_{h,d}``,
    and the output is ``p^+ = [p^1; …; p^T]``. With ``split_half`` every layer but
    the last sends half of its maps to the output and the other half to the
    next layer (the paper's reference implementation), so a non-final
    ``layer_sizes`` entry must be even.

    Shapes: input ``[batch, m, D]`` -> output ``[batch, Σ_k out_k]`` with
    ``out_k = H_k / 2`` (split, non-final layers) or ``H_k``.
    Paper: Lian et al. 2018, "xDeepFM", section 3.2, eq. 6 and Figure 4.

    Example:
      >>> CompressedInteraction([4, 2])(tf.zeros([3, 5, 8])).shape   # 4/2 + 2 maps
      TensorShape([3, 4])

    Args:
      layer_sizes: feature maps ``H_k`` of every layer.
      split_half: split the maps of non-final layers between output and next
        layer (default True).
      activation: activation of the feature maps (default ``"linear"``, eq. 6).
      use_bias: add a bias ``b^k_h`` per feature map (default True).
      kernel_initializer: initializer of ``W^k`` (default ``"glorot_uniform"``,
        per map with fan-in ``H_{k-1}·m``).
    """

    def __init__(self, layer_sizes: Sequence[int], split_half: bool = True,
                 activation="linear", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.layer_sizes = _check_widths("layer_sizes", layer_sizes)
        self.split_half = bool(split_half)
        if self.split_half and any(h % 2 for h in self.layer_sizes[:-1]):
            raise ValueError("with split_half every layer size but the last should be even. "
                             f"Received: layer_sizes={list(layer_sizes)!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _split(self, k: int):
        """(maps fed to the next layer, maps sent to the output) of layer ``k``."""
        h = self.layer_sizes[k]
        if self.split_half and k < len(self.layer_sizes) - 1:
            return h // 2, h // 2
        return h, h

    def _kernel_initializer(self, shape, dtype=None):
        # W^k [H_k, H_{k-1}, m] drawn as H_k maps of a Dense(H_{k-1}·m -> 1)
        h, prev, fields = shape
        init = per_token_initializer(self.kernel_initializer)
        return tf.reshape(init((h, prev * fields, 1), dtype=dtype), shape)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        fields = input_shape[1]
        if fields is None or input_shape[2] is None:
            raise ValueError(f"{self.name}: CIN needs a static number of fields and width. "
                             f"Received: input_shape={input_shape}")
        self.kernels, self.biases = [], []
        prev = int(fields)
        for k, h in enumerate(self.layer_sizes):
            self.kernels.append(self.add_weight(name=f"kernel_{k}", shape=(h, prev, int(fields)),
                                                initializer=self._kernel_initializer))
            self.biases.append(self.add_weight(name=f"bias_{k}", shape=(h, 1),
                                               initializer="zeros")
                               if self.use_bias else None)
            prev = self._split(k)[0]
        super().build(input_shape)

    def call(self, inputs):
        x0, x = inputs, inputs
        pooled = []
        for k, kernel in enumerate(self.kernels):
            x = tf.einsum("bid,bjd,hij->bhd", x, x0, kernel)               # [B, H_k, D]
            if self.biases[k] is not None:
                x = x + self.biases[k]
            x = self.activation(x)
            if self.split_half and k < len(self.kernels) - 1:
                nxt = self.layer_sizes[k] // 2
                pooled.append(tf.reduce_sum(x[:, nxt:], axis=2))           # [B, H_k / 2]
                x = x[:, :nxt]
            else:
                pooled.append(tf.reduce_sum(x, axis=2))                    # [B, H_k]
        return pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=1)

    @property
    def output_dim(self) -> int:
        return sum(self._split(k)[1] for k in range(len(self.layer_sizes)))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.output_dim])

    def get_config(self):
        config = super().get_config()
        config.update(layer_sizes=list(self.layer_sizes), split_half=self.split_half,
                      activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
