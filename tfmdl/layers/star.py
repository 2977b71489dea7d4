"""STAR's layers (Sheng et al. 2021): star-topology dense layers and partitioned
normalization.

* `StarDense`: ``y = act(x (W ⊙ W_s) + b + b_s)`` with a shared centre ``(W, b)``
  and a partner ``(W_s, b_s)`` per scenario (STAR Sec. 4.3).
* `PartitionedNormalization`: batch normalization with a per-scenario scale
  and shift ``γ·γ_s``, ``β + β_s`` and per-scenario statistics (Sec. 4.2).

Both are batched over scenarios (one ``einsum``, no loop) and take the scenario
multi-hot mask ``m`` ``[B, S]``; an instance in several scenarios gets the mean
of its scenarios' outputs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import fusion
from tfmdl.layers import per_token_ffn


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} should be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_mask(layer: keras.layers.Layer, mask: tf.Tensor, num_scenarios: int) -> None:
    if mask.shape.rank != 2 or mask.shape[-1] != num_scenarios:
        raise ValueError(f"{layer.name}: scenario_mask must be [batch, {num_scenarios}]. "
                         f"Received: shape {mask.shape}")


@keras.utils.register_keras_serializable(package="tfmdl")
class StarDense(keras.layers.Layer):
    """A star-topology fully connected layer (STAR Sec. 4.3, Eq. 3-4).

    For an instance of scenario ``s``:
    ``y = act(x (W ⊙ W_s) + b + b_s)``, with the shared centre weights ``W``
    ``[d, u]``, ``b`` ``[u]`` and the scenario's partner weights ``W_s``, ``b_s``.
    An instance in several scenarios (multi-hot ``m``, ``c = Σ m_s``) uses
    ``act(Σ_s (m_s / c) (x (W ⊙ W_s) + b_s) + b)``, i.e. the mean of its
    scenarios' pre-activations (equivalently the mean partner weights). All
    scenarios are computed in one ``einsum("bd,sdu->bsu")`` and then masked.

    ``W_s`` starts at ones and ``b_s`` at zeros, so training starts from the
    shared network and each scenario learns its deviation.

    Shapes: ``call(x [batch, d], scenario_mask [batch, S])`` -> ``[batch, units]``.
    Paper: STAR (Sheng et al. 2021) Sec. 4.3; docs/design.md 4.

    Example:
      >>> StarDense(num_scenarios=3, units=4)(tf.zeros([2, 5]), tf.one_hot([0, 2], 3)).shape
      TensorShape([2, 4])

    Args:
      num_scenarios: S.
      units: output width u.
      activation: activation (default None: linear).
      kernel_initializer: initializer of the shared kernel ``W``
        (default ``"glorot_uniform"``).
    """

    def __init__(self, num_scenarios: int, units: int, activation=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios = _check_count("num_scenarios", num_scenarios)
        self.units = _check_count("units", units)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"{self.name}: input must be [batch, d] with a static d. "
                             f"Received: input_shape={shape}")
        d, S, u = shape[-1], self.num_scenarios, self.units
        self.shared_kernel = self.add_weight(name="shared_kernel", shape=(d, u),
                                             initializer=self.kernel_initializer)
        self.shared_bias = self.add_weight(name="shared_bias", shape=(u,), initializer="zeros")
        self.scenario_kernel = self.add_weight(name="scenario_kernel", shape=(S, d, u),
                                               initializer="ones")
        self.scenario_bias = self.add_weight(name="scenario_bias", shape=(S, u),
                                             initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, scenario_mask):
        scenario_mask = tf.convert_to_tensor(scenario_mask)
        _check_mask(self, scenario_mask, self.num_scenarios)
        kernel = self.shared_kernel[None] * self.scenario_kernel                 # [S, d, u]
        per_scenario = tf.einsum("bd,sdu->bsu", inputs, kernel) + self.scenario_bias
        out = tf.einsum("bs,bsu->bu", fusion.scenario_share(scenario_mask, inputs.dtype), per_scenario)
        return self.activation(out + self.shared_bias)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update(num_scenarios=self.num_scenarios, units=self.units,
                      activation=keras.activations.serialize(self.activation),
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class PartitionedNormalization(keras.layers.Layer):
    """Partitioned normalization (STAR Sec. 4.2, Eq. 1-2).

    For an instance of scenario ``s``:
    ``PN(z) = (γ · γ_s) ⊙ (z - μ_s) / sqrt(σ²_s + ε) + (β + β_s)``.

    STAR trains on single-domain mini-batches, so its batch statistics are the
    scenario's; tfmdl's batches mix scenarios, so with
    ``scenario_statistics=True`` (default) ``μ_s, σ²_s`` are the moments of the
    batch rows in scenario ``s`` (masked moments, one ``einsum``), and at
    inference the per-scenario moving averages (STAR's ``E_s``, ``Var_s``). With
    ``scenario_statistics=False`` every scenario shares the whole batch's
    statistics (and one moving average, kept in every row) and only the scale
    and shift are partitioned. A scenario with no rows in a batch keeps its
    moving averages. An instance in several scenarios gets the mean of its
    scenarios' outputs.

    Statistics are computed in float32 (mixed precision safe); moving
    averages are ``ON_READ`` variables averaged over replicas, like Keras'
    `BatchNormalization`, and updated with ``assign`` (XLA-safe).

    Shapes: ``call(z [batch, d], scenario_mask [batch, S])`` -> ``[batch, d]``.
    Paper: STAR (Sheng et al. 2021) Sec. 4.2; docs/design.md 4.

    Example:
      >>> pn = PartitionedNormalization(num_scenarios=2)
      >>> pn(tf.ones([4, 3]), tf.one_hot([0, 1, 0, 1], 2), training=True).shape
      TensorShape([4, 3])

    Args:
      num_scenarios: S.
      momentum: moving-average momentum (default 0.99).
      epsilon: variance epsilon (default 1e-3, as Keras' BatchNormalization).
      scenario_statistics: per-scenario batch statistics (default True) or
        shared ones.
    """

    def __init__(self, num_scenarios: int, momentum: float = 0.99, epsilon: float = 1e-3,
                 scenario_statistics: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios = _check_count("num_scenarios", num_scenarios)
        per_token_ffn._check_rate("momentum", momentum)  # pylint: disable=protected-access
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"epsilon should be a positive number. Received: epsilon={epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.scenario_statistics = bool(scenario_statistics)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"{self.name}: input must be [batch, d] with a static d. "
                             f"Received: input_shape={shape}")
        d, S = shape[-1], self.num_scenarios

        def weight(name, shape, init, trainable=True):
            kwargs = {} if trainable else dict(
                trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.MEAN)
            # float32 and never auto-cast: the normalization runs in float32
            return self.add_weight(name=name, shape=shape, initializer=init, dtype=tf.float32,
                                   experimental_autocast=False, **kwargs)

        self.gamma = weight("gamma", (d,), "ones")
        self.beta = weight("beta", (d,), "zeros")
        self.scenario_gamma = weight("scenario_gamma", (S, d), "ones")
        self.scenario_beta = weight("scenario_beta", (S, d), "zeros")
        self.moving_mean = weight("moving_mean", (S, d), "zeros", trainable=False)
        self.moving_variance = weight("moving_variance", (S, d), "ones", trainable=False)
        super().build(input_shape)

    def _batch_moments(self, z: tf.Tensor, mask: tf.Tensor):
        """Per-scenario (or shared) batch mean and variance ``[S, d]``, row counts ``[S]``."""
        if not self.scenario_statistics:
            mean, variance = tf.nn.moments(z, axes=[0])
            # one shared statistic: every row is updated whenever the batch has rows
            count = tf.fill([self.num_scenarios], tf.cast(tf.shape(z)[0], z.dtype))
            tile = [self.num_scenarios, 1]
            return tf.tile(mean[None], tile), tf.tile(variance[None], tile), count
        count = tf.reduce_sum(mask, axis=0)                                   # [S]
        denom = tf.maximum(count, 1.0)[:, None]
        mean = tf.einsum("bs,bd->sd", mask, z) / denom
        variance = tf.einsum("bs,bsd->sd", mask, tf.square(z[:, None, :] - mean[None])) / denom
        return mean, variance, count

    def _normalize(self, z, mask, mean, variance):
        scale = (self.gamma[None] * self.scenario_gamma) * tf.math.rsqrt(variance + self.epsilon)
        shift = self.beta[None] + self.scenario_beta                          # [S, d]
        per_scenario = (z[:, None, :] - mean[None]) * scale[None] + shift[None]   # [B, S, d]
        return tf.einsum("bs,bsd->bd", fusion.scenario_share(mask, z.dtype), per_scenario)

    def _train(self, z, mask):
        mean, variance, count = self._batch_moments(z, mask)
        present = (count > 0)[:, None]
        m = self.momentum
        self.moving_mean.assign(tf.where(present, m * self.moving_mean + (1 - m) * mean,
                                         self.moving_mean))
        self.moving_variance.assign(tf.where(
            present, m * self.moving_variance + (1 - m) * variance, self.moving_variance))
        return self._normalize(z, mask, mean, variance)

    def call(self, inputs, scenario_mask, training=None):
        scenario_mask = tf.convert_to_tensor(scenario_mask)
        _check_mask(self, scenario_mask, self.num_scenarios)
        if training is None:
            training = keras.backend.learning_phase()
        z = tf.cast(inputs, tf.float32)
        mask = tf.cast(scenario_mask, tf.float32)
        out = tf.__internal__.smart_cond.smart_cond(
            training, lambda: self._train(z, mask),
            lambda: self._normalize(z, mask, tf.convert_to_tensor(self.moving_mean),
                                    tf.convert_to_tensor(self.moving_variance)))
        return tf.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_scenarios=self.num_scenarios, momentum=self.momentum,
                      epsilon=self.epsilon, scenario_statistics=self.scenario_statistics)
        return config
