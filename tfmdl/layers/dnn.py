"""Plain MLPs and batched per-task towers: the building blocks of the baseline zoo."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import fusion
from tfmdl.layers import per_token_ffn


def _check_units(units: Sequence[int], what: str) -> list:
    if isinstance(units, (str, bytes, int)) or any(
            isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units):
        raise ValueError(f"{what} should be a list of positive integers. "
                         f"Received: {what}={units!r}")
    return [int(u) for u in units]


@keras.utils.register_keras_serializable(package="tfmdl")
class MLP(keras.layers.Layer):
    """A stack of dense layers: ``h_{j+1} = Dropout(act(W_j h_j + b_j))``.

    Shapes: input ``[batch, ..., d_in]`` -> output ``[batch, ..., units[-1]]``
    (the input itself when ``units`` is empty: an identity "backbone").
    Paper: the DNN baseline of both papers (docs/design.md 4).

    Example:
      >>> MLP([8, 4])(tf.zeros([2, 3])).shape
      TensorShape([2, 4])

    Args:
      units: width of every layer, in order.
      activation: hidden activation (default ``"relu"``).
      dropout: dropout rate after every layer (default 0.0).
      output_activation: activation of the last layer; None (default) uses
        ``activation`` (``"linear"`` makes the last layer a plain projection).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, units: Sequence[int], activation="relu", dropout: float = 0.0,
                 output_activation=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = _check_units(units, "units")
        per_token_ffn._check_rate("dropout", dropout)  # pylint: disable=protected-access
        self.activation = keras.activations.get(activation)
        self.output_activation = (None if output_activation is None
                                  else keras.activations.get(output_activation))
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = keras.initializers.serialize(self.kernel_initializer)
        self.dense = [keras.layers.Dense(u, kernel_initializer=keras.initializers.deserialize(init),
                                         name=f"dense_{j}")
                      for j, u in enumerate(self.units)]
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.dense:
            per_token_ffn.build_sublayer(layer, shape)
            shape = shape[:-1].concatenate([layer.units])
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for j, layer in enumerate(self.dense):
            last = j == len(self.dense) - 1
            act = self.output_activation if last and self.output_activation else self.activation
            x = act(layer(x))
            if self.dropout:
                x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return shape[:-1].concatenate([self.units[-1]]) if self.units else shape

    def get_config(self):
        config = super().get_config()
        config.update(
            units=list(self.units), activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            output_activation=(None if self.output_activation is None
                               else keras.activations.serialize(self.output_activation)),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class TaskTowers(keras.layers.Layer):
    """K per-task towers computed together: one batched matmul per tower layer.

    ``h^k_{j+1} = act(W^k_j h^k_j + b^k_j)`` for every tower k, ending in a
    linear layer to one logit: ``logit_k = w^k · h^k_J + c^k``. The input is
    either one shared vector ``[batch, d]`` (given to every tower) or one vector
    per tower ``[batch, K, d]`` (e.g. MMoE's per-task mixtures). Each tower layer
    is a `PerTokenDense` with kernel ``[K, d_j, d_{j+1}]``.

    Shapes: ``[batch, d]`` or ``[batch, K, d]`` -> logits ``[batch, K]``.
    Paper: the task towers of SharedBottom/MMoE/PLE (docs/design.md 4).

    Example:
      >>> TaskTowers(3, [8])(tf.zeros([2, 5])).shape
      TensorShape([2, 3])

    Args:
      num_tasks: K.
      hidden: widths of the hidden tower layers (may be empty: linear heads).
      activation: hidden activation (default ``"relu"``).
      dropout: dropout rate after every hidden layer (default 0.0).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
      logit_bias: give the last layer a bias ``c^k`` (default False).
    """

    def __init__(self, num_tasks: int, hidden: Sequence[int] = (), activation="relu",
                 dropout: float = 0.0, kernel_initializer="glorot_uniform",
                 logit_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        per_token_ffn._check_positive_int("num_tasks", num_tasks)  # pylint: disable=protected-access
        per_token_ffn._check_rate("dropout", dropout)  # pylint: disable=protected-access
        self.num_tasks = int(num_tasks)
        self.hidden = _check_units(hidden, "hidden")
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.logit_bias = bool(logit_bias)
        init = keras.initializers.serialize(self.kernel_initializer)
        widths = self.hidden + [1]
        self.layers_ = [per_token_ffn.PerTokenDense(
            u, use_bias=j < len(widths) - 1 or self.logit_bias,
            kernel_initializer=keras.initializers.deserialize(init), name=f"layer_{j}")
            for j, u in enumerate(widths)]
        self.drop = keras.layers.Dropout(self.dropout)

    def _tiled_shape(self, input_shape) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        if shape.rank == 2:
            return tf.TensorShape([shape[0], self.num_tasks, shape[1]])
        if shape.rank != 3 or shape[1] != self.num_tasks:
            raise ValueError(f"{self.name}: input must be [batch, d] or [batch, "
                             f"{self.num_tasks}, d]. Received: input_shape={shape}")
        return shape

    def build(self, input_shape):
        shape = self._tiled_shape(input_shape)
        for layer in self.layers_:
            per_token_ffn.build_sublayer(layer, shape)
            shape = shape[:-1].concatenate([layer.units])
        super().build(input_shape)

    def call(self, inputs, training=None):
        first = self.layers_[0]
        if inputs.shape.rank == 2:   # a shared input is mapped by one matmul, not tiled
            x = per_token_ffn.token_major(first.shared_call(inputs))
        else:
            x = first.token_major_call(per_token_ffn.token_major(inputs))
        # token-major [K, batch, ·] between layers: one batched matmul each
        for layer in self.layers_[1:]:
            x = self.activation(x)
            if self.dropout:
                x = self.drop(x, training=training)
            x = layer.token_major_call(x)
        return tf.transpose(x[:, :, 0])                                  # [batch, K]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.num_tasks])

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, hidden=list(self.hidden),
                      activation=keras.activations.serialize(self.activation),
                      dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      logit_bias=self.logit_bias)
        return config


def scenario_features(ids, num_scenarios: int, dtype=tf.float32) -> tf.Tensor:
    """The scenario field as model input: multi-hot ``[batch, S]`` (ids already
    range-checked by `FeatureLookup`)."""
    return fusion.scenario_mask(ids, num_scenarios, validate=False, dtype=dtype)
