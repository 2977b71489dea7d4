"""Unified information tokenization: feature, scenario and task tokens (docs/design.md 2.1).

* `FeatureTokenizer`: semantic feature groups -> feature tokens ``X^0``.
* `DomainTokenizer` and its named forms `ScenarioTokenizer` / `TaskTokenizer`:
  per-token FFN over ``[ê ; p_s]`` -> scenario tokens ``Z^0`` / task tokens ``U^0``.
* `stack_token_inputs`: builds the ``[ê ; p_s]`` inputs at model-build time.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.per_token_ffn import (PerTokenFFN, _check_positive_int,
                                        build_sublayer, per_token_initializer)


@keras.utils.register_keras_serializable(package="tfmdl")
class FeatureTokenizer(keras.layers.Layer):
    """Projects each semantic feature group to one feature token (MDL 3.1.1).

    ``x_i = W_i g_i + b_i ∈ R^d`` for groups ``i = 1..T``, ``X^0 = [x_1..x_T]``,
    where ``g_i`` is the concatenation of group ``i``'s embeddings.

    The input is the groups' embeddings concatenated in order. The projection is
    batched: a gather index ``[T, G_max]`` (built once) lays the input out as
    ``[batch, T, G_max]``, zero-padding narrow groups from an extra zero column,
    and one ``einsum`` with the kernel ``[T, G_max, d]`` projects all groups.
    The padding multiplies zeros, so the result equals ``T`` separate
    projections; padded kernel rows are initialised to zero and get no gradient.
    Each group's kernel is initialised with its own fan-in ``g_i``.

    Shapes: input ``[batch, sum(group_widths)]`` -> output ``[batch, T, token_dim]``.

    Example:
      >>> tok = FeatureTokenizer(group_widths=[3, 5], token_dim=8)
      >>> tok(tf.zeros([2, 8])).shape
      TensorShape([2, 2, 8])

    Args:
      group_widths: width ``|g_i|`` of every group, in input order; ``T`` is its length.
      token_dim: token width ``d``.
      kernel_initializer: initializer of every ``W_i`` (default ``"glorot_uniform"``).
    """

    def __init__(self, group_widths: Sequence[int], token_dim: int,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if isinstance(group_widths, (str, bytes)) or not isinstance(group_widths, Sequence) \
                or not group_widths:
            raise ValueError("group_widths should be a non-empty list of positive "
                             f"integers. Received: group_widths={group_widths!r}")
        for w in group_widths:
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ValueError("group_widths should be a non-empty list of positive "
                                 f"integers. Received: group_widths={group_widths!r}")
        _check_positive_int("token_dim", token_dim)
        self.group_widths = [int(w) for w in group_widths]
        self.token_dim = int(token_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=2)
        widths = np.asarray(self.group_widths)
        total, g_max = int(widths.sum()), int(widths.max())
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        cols = np.arange(g_max)[None, :]
        # Index `total` is the zero column appended in call().
        self._gather_index = np.where(cols < widths[:, None], offsets[:, None] + cols,
                                      total).astype(np.int32)  # [T, G_max]

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[-1] != sum(self.group_widths):
            raise ValueError(
                f"{self.name}: the input width must be sum(group_widths)="
                f"{sum(self.group_widths)} (group_widths={self.group_widths}). "
                f"Received: input_shape={input_shape}")
        num_groups, g_max = self._gather_index.shape
        self.kernel = self.add_weight(
            name="kernel", shape=(num_groups, g_max, self.token_dim),
            initializer=per_token_initializer(self.kernel_initializer,
                                              fan_ins=self.group_widths))
        self.bias = self.add_weight(name="bias", shape=(num_groups, self.token_dim),
                                    initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        padded = tf.pad(inputs, [[0, 0], [0, 1]])                     # [B, total + 1]
        groups = tf.gather(padded, self._gather_index, axis=1)         # [B, T, G_max]
        return tf.einsum("btg,tgd->btd", groups, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], len(self.group_widths), self.token_dim])

    def get_config(self):
        config = super().get_config()
        config.update(group_widths=list(self.group_widths), token_dim=self.token_dim,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class DomainTokenizer(keras.layers.Layer):
    """Per-token FFN tokenizer for domain (scenario or task) tokens (MDL 3.1.2).

    ``z_n = FFN_n([ê ; p_n])`` for ``n = 1..N``, where ``ê`` is the concatenation
    of the extra embeddings and ``p_n`` token ``n``'s prior features; ``FFN_n`` is a
    two-layer per-token MLP (`PerTokenFFN`) with its own weights per token.

    The caller stacks and zero-pads the inputs (see `stack_token_inputs`).

    Shapes: input ``[batch, N, F]`` -> output ``[batch, N, token_dim]``.

    Example:
      >>> tok = DomainTokenizer(num_tokens=3, token_dim=8, hidden_dim=16)
      >>> tok(tf.zeros([2, 3, 5])).shape
      TensorShape([2, 3, 8])

    Args:
      num_tokens: number of tokens ``N``; the input's token axis must match.
      token_dim: output token width ``d``.
      hidden_dim: hidden width of every token's FFN.
      activation: hidden activation (default ``"gelu"``).
      kernel_initializer: initializer of the FFN kernels (default ``"glorot_uniform"``).
    """

    def __init__(self, num_tokens: int, token_dim: int, hidden_dim: int,
                 activation="gelu", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_tokens", num_tokens)
        _check_positive_int("token_dim", token_dim)
        _check_positive_int("hidden_dim", hidden_dim)
        self.num_tokens = int(num_tokens)
        self.token_dim = int(token_dim)
        self.hidden_dim = int(hidden_dim)
        self.ffn = PerTokenFFN(self.hidden_dim, output_dim=self.token_dim,
                               activation=activation,
                               kernel_initializer=kernel_initializer, name="ffn")
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[1] != self.num_tokens:
            raise ValueError(
                f"{self.name}: expected {self.num_tokens} stacked token inputs "
                f"(num_tokens={self.num_tokens}). Received: input_shape={input_shape}")
        build_sublayer(self.ffn, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.ffn(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.num_tokens, self.token_dim])

    def get_config(self):
        config = super().get_config()
        config.update(num_tokens=self.num_tokens, token_dim=self.token_dim,
                      hidden_dim=self.hidden_dim,
                      activation=keras.activations.serialize(self.ffn.activation),
                      kernel_initializer=keras.initializers.serialize(
                          self.ffn.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class ScenarioTokenizer(DomainTokenizer):
    """Scenario tokens ``Z^0 = [z_1..z_S, z_g]`` (MDL 3.1.2, docs/design.md 2.1).

    ``z_s = FFN_s([ê ; p_s])`` with own FFN weights per scenario; the global
    token ``z_g = FFN_g([ê ; p_g])`` (``p_g`` optional global prior features) is
    the LAST token. So ``num_tokens = S + 1`` and token ``S`` (0-based) is global,
    which is the layout `DomainFused` and `MDLBlock` expect.

    Shapes: input ``[batch, S + 1, F]`` -> output ``[batch, S + 1, token_dim]``.

    Args:
      num_tokens: ``S + 1`` (the ``S`` scenario tokens plus the global token).
      token_dim: token width ``d``.
      hidden_dim: hidden width of every token's FFN.
      activation: hidden activation (default ``"gelu"``).
      kernel_initializer: initializer of the FFN kernels (default ``"glorot_uniform"``).
    """

    def __init__(self, num_tokens: int, token_dim: int, hidden_dim: int,
                 activation="gelu", kernel_initializer="glorot_uniform", **kwargs):
        if isinstance(num_tokens, (int, np.integer)) and not isinstance(num_tokens, bool) \
                and num_tokens < 2:
            raise ValueError("ScenarioTokenizer needs num_tokens = S + 1 >= 2 (at least "
                             "one scenario plus the global token). Received: "
                             f"num_tokens={num_tokens!r}")
        super().__init__(num_tokens, token_dim, hidden_dim, activation,
                         kernel_initializer, **kwargs)


@keras.utils.register_keras_serializable(package="tfmdl")
class TaskTokenizer(DomainTokenizer):
    """Task tokens ``U^0 = [u_1..u_K]`` (MDL 3.1.2, docs/design.md 2.1).

    ``u_k = FFN_k([ê' ; r_k])`` with ``r_k`` the task-related features and own
    FFN weights per task; ``num_tokens = K``.

    Shapes: input ``[batch, K, F]`` -> output ``[batch, K, token_dim]``.

    Args:
      num_tokens: number of tasks ``K``.
      token_dim: token width ``d``.
      hidden_dim: hidden width of every token's FFN.
      activation: hidden activation (default ``"gelu"``).
      kernel_initializer: initializer of the FFN kernels (default ``"glorot_uniform"``).
    """


def stack_token_inputs(shared: Optional[tf.Tensor],
                       per_token: List[Optional[tf.Tensor]]) -> tf.Tensor:
    """Stacks ``[ê ; p_n]`` for ``n = 1..N`` into one ``[batch, N, E + max P]`` tensor.

    Used while building a model (eager tensors or Keras functional tensors); the
    Python loop runs once at graph construction. Token ``n``'s own features
    ``p_n`` (``[batch, P_n]``) follow the shared part and are zero-padded to the
    widest ``P``; a ``None`` entry means the token has no own features (all
    zeros). With ``None`` as ``shared`` only the ``p_n`` are stacked.

    Args:
      shared: ``ê`` of shape ``[batch, E]``, or None.
      per_token: one ``[batch, P_n]`` tensor or None per token.

    Returns:
      ``[batch, N, E + max_n P_n]``.
    """
    if not per_token:
        raise ValueError("stack_token_inputs needs at least one token. "
                         f"Received: per_token={per_token!r}")
    present = [p for p in per_token if p is not None]
    if shared is None and not present:
        raise ValueError("stack_token_inputs needs `shared` or at least one per-token "
                         "tensor; every input is None.")
    for i, p in enumerate(per_token):
        if p is not None and (p.shape.rank != 2 or p.shape[-1] is None):
            raise ValueError("per_token tensors must be [batch, P] with a static P. "
                             f"Received: per_token[{i}].shape={p.shape}")
    width = max([int(p.shape[-1]) for p in present], default=0)
    anchor = shared if shared is not None else present[0]
    empty = anchor[:, :0]                                   # [batch, 0], right dtype
    rows = []
    for p in per_token:
        p = empty if p is None else p
        p = tf.pad(p, [[0, 0], [0, width - int(p.shape[-1])]])
        rows.append(p if shared is None else tf.concat([shared, p], axis=-1))
    return tf.stack(rows, axis=1)
