"""Domain-aware attention: scenario/task tokens attend to feature tokens
(docs/design.md 2.2 step 2)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.per_token_ffn import (PerTokenDense, _check_positive_int, _check_rate,
                                        build_sublayer)


@keras.utils.register_keras_serializable(package="tfmdl")
class DomainAwareAttention(keras.layers.Layer):
    """Domain-aware attention (DAA), a cross-attention with per-token projections.

    MDL 3.2.2 (Eq. 7, 8); docs/design.md 2.2 step 2. Queries are the ``N_q`` scenario or
    task tokens ``Q_in``, keys and values the ``T`` feature tokens ``X``:

    ``q_n = W_Q,n q_in_n + b_Q,n`` (own ``W_Q`` per query token, kernel ``[N_q, d, d]``),
    ``k_t = W_K,t x_t + b_K,t``, ``v_t = W_V,t x_t + b_V,t`` (own ``W_K``, ``W_V`` per
    feature-token position, kernels ``[T, d_x, d]``). Per head ``h`` of width
    ``c = d / H``: ``A^h = softmax_t(q^h k^h^T / sqrt(c))``, ``o^h = A^h v^h``;
    ``DAA(Q_in, X) = W_O [o^1 ; .. ; o^H] + b_O``, the output projection ``W_O``
    (``[d, d]``) and bias being *shared* by all query tokens.

    ``call(queries, features)`` always returns ``(output, weights)``; ``weights``
    are the softmax attention weights before dropout (they are visualised,
    docs/design.md 6). The residual connection is the caller's (`MDLBlock`).

    Shapes: ``queries [batch, N_q, d]``, ``features [batch, T, d_x]`` ->
    ``output [batch, N_q, d]``, ``weights [batch, H, N_q, T]``. ``d % H == 0``.

    Example:
      >>> daa = DomainAwareAttention(num_heads=2)
      >>> out, w = daa(tf.zeros([2, 3, 8]), tf.zeros([2, 5, 8]))
      >>> out.shape, w.shape
      (TensorShape([2, 3, 8]), TensorShape([2, 2, 3, 5]))

    Args:
      num_heads: number of heads ``H``; must divide the query width ``d``.
      dropout: dropout rate on the attention weights (default 0.0).
      use_bias: whether the Q/K/V projections have per-token biases (default True).
      kernel_initializer: initializer of all kernels (default ``"glorot_uniform"``).
    """

    def __init__(self, num_heads: int, dropout: float = 0.0, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_heads", num_heads)
        _check_rate("dropout", dropout)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _initializer(self):
        return keras.initializers.deserialize(
            keras.initializers.serialize(self.kernel_initializer))

    def build(self, input_shape):
        # Keras 2 passes only the first call argument (the queries) to build();
        # the key/value projections build on their first call with the features.
        queries_shape = tf.TensorShape(input_shape)
        if queries_shape.rank != 3 or queries_shape[1] is None or queries_shape[2] is None:
            raise ValueError(f"{self.name}: queries must be [batch, N_q, d] with static "
                             f"N_q and d. Received: queries shape {queries_shape}")
        width = int(queries_shape[2])
        if width % self.num_heads:
            raise ValueError(
                f"{self.name}: the token width must be divisible by num_heads. "
                f"Received: d={width}, num_heads={self.num_heads}")
        def projection(name):
            return PerTokenDense(width, self.use_bias, self._initializer(), name=name)

        self.query_projection = projection("query")
        self.key_projection = projection("key")
        self.value_projection = projection("value")
        self.output_projection = keras.layers.Dense(
            width, kernel_initializer=self._initializer(), name="output")
        self.attention_dropout = keras.layers.Dropout(self.dropout)
        build_sublayer(self.query_projection, queries_shape)
        build_sublayer(self.output_projection, queries_shape)
        super().build(queries_shape)

    def call(self, queries, features, training=None):
        features = tf.convert_to_tensor(features, dtype=queries.dtype)
        num_queries, width = queries.shape[1], queries.shape[2]
        if features.shape.rank != 3 or features.shape[1] is None:
            raise ValueError(f"{self.name}: features must be [batch, T, d_x] with a "
                             f"static T. Received: features shape {features.shape}")
        heads, head_width = self.num_heads, width // self.num_heads
        num_features = features.shape[1]
        q = tf.reshape(self.query_projection(queries), [-1, num_queries, heads, head_width])
        k = tf.reshape(self.key_projection(features), [-1, num_features, heads, head_width])
        v = tf.reshape(self.value_projection(features),
                       [-1, num_features, heads, head_width])
        scores = tf.einsum("bqhc,bthc->bhqt", q, k) * (float(head_width) ** -0.5)
        weights = tf.nn.softmax(scores, axis=-1)                      # [B, H, N_q, T]
        context = tf.einsum("bhqt,bthc->bqhc",
                            self.attention_dropout(weights, training=training), v)
        output = self.output_projection(tf.reshape(context, [-1, num_queries, width]))
        return output, weights

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, dropout=self.dropout,
                      use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
