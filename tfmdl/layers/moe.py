"""Mixture-of-experts building blocks: batched experts, softmax gates, MMoE and CGC.

* `Experts`: ``E`` expert MLPs computed together, one ``einsum`` per layer.
* `Gate`: ``G`` softmax gates over ``E`` experts, one ``einsum``.
* `mix_experts`: the gated sum ``Σ_e g_e f_e`` of every gate.
* `MixtureOfExperts`: shared experts + one gate per output (MMoE, Ma et al. 2018).
* `CGC`: task-specific + shared experts with task and shared gates (PLE's
  Customized Gate Control, Tang et al. 2020), optionally ``num_groups``
  independent copies side by side (PLE-MD: one PLE per domain).
* `LabelSpaceFusion`: HMoE's explicit MoE in the label space (Li et al. 2020):
  the instance's own-scenario prediction gated with the other scenarios'
  predictions, gradients stopped on the borrowed ones.

Every per-expert and per-gate weight lives in a ``[N, d_in, d_out]`` kernel of a
`PerTokenDense`; no Python loop runs over experts, gates or tasks (docs/design.md,
notation paragraph). A shared input is never tiled: `PerTokenDense.shared_call`
maps it with one matmul. Gated sums are broadcast products summed over the
(few) experts, which XLA fuses and which avoid gathers whose gradients are
scatters.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import dnn
from tfmdl.layers import fusion
from tfmdl.layers import per_token_ffn
from tfmdl.layers.per_token_ffn import PerTokenDense, build_sublayer, token_major


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} should be an integer >= {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


def gated_sum(weights: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """``Σ_j w_j v_j``: weights ``[..., m]``, values ``[..., m, u]`` (broadcastable)
    -> ``[..., u]``, in the values' dtype."""
    weights = tf.cast(weights, values.dtype)
    return tf.reduce_sum(weights[..., None] * values, axis=-2)


def _major_gated_sum(weights: tf.Tensor, values: tf.Tensor, axis: int) -> tf.Tensor:
    """``Σ_j w_j v_j`` over a major ``axis`` of broadcastable weights and values."""
    return tf.reduce_sum(tf.cast(weights, values.dtype) * values, axis=axis)


def mix_experts(expert_outputs: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``y_g = Σ_e w_{g,e} f_e``: ``[B, E, u]`` experts, ``[B, G, E]`` weights -> ``[B, G, u]``."""
    return gated_sum(weights, expert_outputs[:, None])


@keras.utils.register_keras_serializable(package="tfmdl")
class Experts(keras.layers.Layer):
    """``E`` expert MLPs with their own weights, computed as one batch.

    ``f_e(x) = act(W^e_J … act(W^e_1 x_e + b^e_1) … + b^e_J)`` for every expert
    ``e``; every layer (the last included, as in MMoE/PLE and DeepCTR) is
    activated. The input is either one vector ``[batch, d]`` shared by all
    experts or one vector per expert ``[batch, E, d]`` (PLE's task experts read
    their task's input). Each layer is a `PerTokenDense` with kernel
    ``[E, d_j, d_{j+1}]``.

    Shapes: ``[batch, d]`` or ``[batch, E, d]`` -> ``[batch, E, units[-1]]``.
    Paper: the experts of MMoE (Ma et al. 2018, Eq. 5) and PLE (Tang et al.
    2020, Sec. 4.2); docs/design.md 4.

    Example:
      >>> Experts(4, [8])(tf.zeros([2, 5])).shape
      TensorShape([2, 4, 8])

    Args:
      num_experts: E.
      units: widths of every expert's layers (at least one).
      activation: activation of every layer (default ``"relu"``).
      dropout: dropout rate after every layer (default 0.0).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_experts: int, units: Sequence[int], activation="relu",
                 dropout: float = 0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_experts = _check_count("num_experts", num_experts)
        self.units = dnn._check_units(units, "units")  # pylint: disable=protected-access
        if not self.units:
            raise ValueError("units should hold at least one width. Received: units=[]")
        per_token_ffn._check_rate("dropout", dropout)  # pylint: disable=protected-access
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = keras.initializers.serialize(self.kernel_initializer)
        self.layers_ = [PerTokenDense(u, kernel_initializer=keras.initializers.deserialize(init),
                                      name=f"layer_{j}") for j, u in enumerate(self.units)]
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None

    def _per_expert_shape(self, input_shape) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        if shape.rank == 2:
            return tf.TensorShape([shape[0], self.num_experts, shape[1]])
        if shape.rank != 3 or shape[1] != self.num_experts:
            raise ValueError(f"{self.name}: input must be [batch, d] or [batch, "
                             f"{self.num_experts}, d]. Received: input_shape={shape}")
        return shape

    def build(self, input_shape):
        shape = self._per_expert_shape(input_shape)
        for layer in self.layers_:
            build_sublayer(layer, shape)
            shape = shape[:-1].concatenate([layer.units])
        super().build(input_shape)

    def call(self, inputs, training=None):
        if inputs.shape.rank == 3:
            inputs = token_major(inputs)
        return token_major(self.token_major_call(inputs, training=training))

    def token_major_call(self, inputs, training=None):
        """The experts on token-major input: ``[batch, d]`` (shared) or ``[E, batch,
        d]`` -> ``[E, batch, units[-1]]``. Layers that chain experts (`CGC`) stay
        token-major between them, so no transposes run in between."""
        inputs = tf.convert_to_tensor(inputs)
        first = self.layers_[0]
        if inputs.shape.rank == 2:
            x = token_major(first.shared_call(inputs))
        else:
            x = first.token_major_call(inputs)
        x = self._activate(x, training)
        # token-major [E, batch, ·] between layers: one batched matmul each, no transposes
        for layer in self.layers_[1:]:
            x = self._activate(layer.token_major_call(x), training)
        return x

    def _activate(self, x, training):
        x = self.activation(x)
        return x if self.drop is None else self.drop(x, training=training)

    def compute_output_shape(self, input_shape):
        shape = self._per_expert_shape(input_shape)
        return shape[:-1].concatenate([self.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts, units=list(self.units),
                      activation=keras.activations.serialize(self.activation),
                      dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class Gate(keras.layers.Layer):
    """``G`` softmax gates over ``E`` experts: ``g^k(x) = softmax(W_k x_k (+ b_k))``.

    The input is one vector ``[batch, d]`` read by every gate (MMoE) or one
    vector per gate ``[batch, G, d]`` (PLE: each gate reads its task's input).
    One `PerTokenDense` with kernel ``[G, d, E]``; no bias by default, as in
    MMoE's Eq. 6.

    Shapes: ``[batch, d]`` or ``[batch, G, d]`` -> weights ``[batch, G, E]``
    (each row sums to 1). Paper: MMoE (Ma et al. 2018) Eq. 6, PLE (Tang et al.
    2020) Eq. 3.

    Example:
      >>> Gate(2, 4)(tf.zeros([3, 5])).shape
      TensorShape([3, 2, 4])

    Args:
      num_gates: G.
      num_experts: E, the width of every softmax.
      use_bias: whether every gate has a bias (default False).
      kernel_initializer: initializer of the kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_gates: int, num_experts: int, use_bias: bool = False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_gates = _check_count("num_gates", num_gates)
        self.num_experts = _check_count("num_experts", num_experts)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.logits = PerTokenDense(self.num_experts, use_bias=self.use_bias,
                                    kernel_initializer=keras.initializers.deserialize(
                                        keras.initializers.serialize(self.kernel_initializer)),
                                    name="logits")

    def _per_gate_shape(self, input_shape) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        if shape.rank == 2:
            return tf.TensorShape([shape[0], self.num_gates, shape[1]])
        if shape.rank != 3 or shape[1] != self.num_gates:
            raise ValueError(f"{self.name}: input must be [batch, d] or [batch, "
                             f"{self.num_gates}, d]. Received: input_shape={shape}")
        return shape

    def build(self, input_shape):
        build_sublayer(self.logits, self._per_gate_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs):
        if inputs.shape.rank == 2:
            return tf.nn.softmax(self.logits.shared_call(inputs), axis=-1)
        return tf.nn.softmax(self.logits(inputs), axis=-1)

    def token_major_call(self, inputs):
        """The gates on token-major per-gate input ``[G, batch, d]`` -> ``[G, batch, E]``."""
        return tf.nn.softmax(self.logits.token_major_call(inputs), axis=-1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.num_gates,
                               self.num_experts])

    def get_config(self):
        config = super().get_config()
        config.update(num_gates=self.num_gates, num_experts=self.num_experts,
                      use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class MixtureOfExperts(keras.layers.Layer):
    """Multi-gate mixture of experts (MMoE): shared experts, one gate per output.

    ``y_k = Σ_e g^k(x)_e f_e(x)`` for every gate ``k = 1..G``, with ``f_e`` the
    `Experts` and ``g^k`` the `Gate` s (softmax over the ``E`` experts). The
    gates read ``gate_inputs`` when given (``[batch, d']``), else ``x``.

    Shapes: ``x [batch, d]`` -> ``[batch, G, units[-1]]``.
    Paper: MMoE (Ma et al. 2018) Eq. 5-6; docs/design.md 4. HMoE's implicit MoE (Li et
    al. 2020) is the same layer with one gate per (scenario, task).

    Example:
      >>> MixtureOfExperts(3, 4, [8])(tf.zeros([2, 5])).shape
      TensorShape([2, 3, 8])

    Args:
      num_gates: G (MMoE: the number of tasks).
      num_experts: E.
      expert_units: widths of every expert MLP.
      activation: expert activation (default ``"relu"``).
      dropout: dropout rate in the experts (default 0.0).
      gate_bias: whether the gates have biases (default False).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_gates: int, num_experts: int, expert_units: Sequence[int],
                 activation="relu", dropout: float = 0.0, gate_bias: bool = False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = keras.initializers.serialize(self.kernel_initializer)
        self.experts = Experts(num_experts, expert_units, activation=activation,
                               dropout=dropout, name="experts",
                               kernel_initializer=keras.initializers.deserialize(init))
        self.gate = Gate(num_gates, num_experts, use_bias=gate_bias, name="gate",
                         kernel_initializer=keras.initializers.deserialize(init))

    def build(self, input_shape):
        # Keras 2 passes only ``x``'s shape; the gate builds on its first call
        # (it may read ``gate_inputs`` of another width)
        build_sublayer(self.experts, input_shape)
        super().build(input_shape)

    def gate_weights(self, x, gate_inputs=None) -> tf.Tensor:
        """The gates' softmax weights ``[batch, G, E]``."""
        return self.gate(x if gate_inputs is None else gate_inputs)

    def call(self, x, gate_inputs=None, training=None):
        return mix_experts(self.experts(x, training=training),
                           self.gate_weights(x, gate_inputs))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.gate.num_gates,
                               self.experts.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(num_gates=self.gate.num_gates, num_experts=self.experts.num_experts,
                      expert_units=list(self.experts.units),
                      activation=keras.activations.serialize(self.experts.activation),
                      dropout=self.experts.dropout, gate_bias=self.gate.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class CGC(keras.layers.Layer):
    """Customized Gate Control: one extraction level of PLE.

    Per group (PLE: one group; PLE-MD: one group per domain), ``K`` tasks with
    ``m_t`` task-specific experts each and ``m_s`` shared experts. With ``x_k``
    task k's input and ``x_s`` the shared input (all equal at the first level):

    * task output ``y_k = Σ_j g^k_j · E^k_j`` with
      ``E^k = [f^k_1(x_k) .. f^k_{m_t}(x_k), f^s_1(x_s) .. f^s_{m_s}(x_s)]`` (task k's
      own and the shared experts) and ``g^k = softmax(W_k x_k)``;
    * shared output (``shared_output=True``, every level but the last)
      ``y_s = Σ_j g^s_j · [all K·m_t + m_s experts]_j``, ``g^s = softmax(W_s x_s)``.

    All experts of all groups are one `Experts` layer; the task gates are one
    `Gate` over ``m_t + m_s`` experts and the shared gates another over
    ``K·m_t + m_s``. Expert inputs, gate inputs and each gate's experts are
    static slices and reshapes of the slot and expert axes (no gathers, whose
    gradients are scatters); the gated sums are broadcast products. No loop over
    tasks, experts or groups.

    Input slots: ``[batch, d]`` (the same input everywhere: the first level) or
    ``[batch, N·(K+1), d]`` with group ``n``'s slots ``n·(K+1) + k`` for tasks
    ``k`` and ``n·(K+1) + K`` for its shared input — i.e. the previous level's
    output with ``shared_output=True``.

    Shapes: -> ``[batch, N·K, u]`` (``shared_output=False``) or
    ``[batch, N·(K+1), u]`` (``shared_output=True``, same slot layout as the
    input), ``u = expert_units[-1]``, ``N = num_groups``.
    Paper: PLE (Tang et al. 2020) Sec. 4.2, Eq. 2-4 (CGC) and 4.3, Eq. 5-6
    (progressive levels); docs/design.md 4.

    Example:
      >>> CGC(num_tasks=2, task_experts=1, shared_experts=2,
      ...     expert_units=[8])(tf.zeros([3, 5])).shape
      TensorShape([3, 2, 8])

    Args:
      num_tasks: K.
      task_experts: m_t, experts per task (may be 0: task gates see only the
        shared experts).
      shared_experts: m_s, shared experts (may be 0 when ``task_experts >= 1``).
      expert_units: widths of every expert MLP.
      shared_output: also output the shared gate's mixture (default False).
      num_groups: N independent CGCs side by side (default 1).
      activation: expert activation (default ``"relu"``).
      dropout: dropout rate in the experts (default 0.0).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_tasks: int, task_experts: int, shared_experts: int,
                 expert_units: Sequence[int], shared_output: bool = False,
                 num_groups: int = 1, activation="relu", dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_count("num_tasks", num_tasks)
        self.task_experts = _check_count("task_experts", task_experts, 0)
        self.shared_experts = _check_count("shared_experts", shared_experts, 0)
        if self.task_experts + self.shared_experts < 1:
            raise ValueError("task_experts + shared_experts should be >= 1. Received: "
                             f"task_experts={task_experts}, shared_experts={shared_experts}")
        self.num_groups = _check_count("num_groups", num_groups)
        self.shared_output = bool(shared_output)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = keras.initializers.serialize(self.kernel_initializer)
        K, mt, ms, N = self.num_tasks, self.task_experts, self.shared_experts, self.num_groups
        per_group = K * mt + ms
        self.experts = Experts(N * per_group, expert_units, activation=activation,
                               dropout=dropout, name="experts",
                               kernel_initializer=keras.initializers.deserialize(init))
        self.task_gate = Gate(N * K, mt + ms, name="task_gate",
                              kernel_initializer=keras.initializers.deserialize(init))
        self.shared_gate = (Gate(N, per_group, name="shared_gate",
                                 kernel_initializer=keras.initializers.deserialize(init))
                            if self.shared_output else None)

    @property
    def num_slots(self) -> int:
        return self.num_groups * (self.num_tasks + 1)

    def _check_input(self, input_shape) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        if shape.rank == 2 or (shape.rank == 3 and shape[1] == self.num_slots):
            return shape
        raise ValueError(f"{self.name}: input must be [batch, d] or [batch, {self.num_slots}, d] "
                         f"(num_groups x (num_tasks + 1) slots). Received: input_shape={shape}")

    def build(self, input_shape):
        shape = self._check_input(input_shape)
        d = shape[-1]
        n_experts = self.experts.num_experts
        build_sublayer(self.experts, [shape[0], n_experts, d])
        build_sublayer(self.task_gate, [shape[0], self.task_gate.num_gates, d])
        if self.shared_gate is not None:
            build_sublayer(self.shared_gate, [shape[0], self.num_groups, d])
        super().build(input_shape)

    def call(self, inputs, training=None):
        self._check_input(inputs.shape)
        if inputs.shape.rank == 3:
            inputs = token_major(inputs)
        return token_major(self.token_major_call(inputs, training=training))

    def token_major_call(self, inputs, training=None):
        """The level on slot-major input — ``[batch, d]`` or ``[N·(K+1), batch, d]`` —
        -> ``[N·K, batch, u]`` or ``[N·(K+1), batch, u]``.

        Stacked levels stay slot-major between them (their batch-major
        transposes cancel under XLA): experts and slots then lead the batch, so
        every gated sum is a sum over a major axis (an elementwise fusion) and
        the slots are reshapes, not relayouts.
        """
        inputs = tf.convert_to_tensor(inputs)
        K, mt, ms, N = self.num_tasks, self.task_experts, self.shared_experts, self.num_groups
        P = K * mt + ms
        if inputs.shape.rank == 2:
            expert_in, task_in, shared_in = inputs, None, None
        else:
            expert_in, task_in, shared_in = self._slot_inputs(inputs)
        experts = self.experts.token_major_call(expert_in, training=training)   # [N·P, B, u]
        u = experts.shape[-1]
        batch = tf.shape(experts)[1]
        grouped = tf.reshape(experts, [N, P, batch, u])
        # tf.split, not slicing: a split's gradient is one concat, a slice's a
        # zero-filled StridedSliceGrad per slice
        own, shared_experts = tf.split(grouped, [K * mt, ms], axis=1)
        own = tf.reshape(own, [N, K, mt, batch, u])                        # task k's experts
        weights = (self.task_gate(inputs) if task_in is None                # [B, N·K, mt+ms]
                   else token_major(self.task_gate.token_major_call(task_in)))
        # [N, K, mt+ms, B, 1]: a small transpose of the weights, not of the experts
        weights = tf.transpose(tf.reshape(weights, [batch, N, K, mt + ms]), [1, 2, 3, 0])
        own_weights, shared_weights = tf.split(weights[..., None], [mt, ms], axis=2)
        tasks = (_major_gated_sum(own_weights, own, axis=2)
                 + _major_gated_sum(shared_weights, shared_experts[:, None], axis=2))  # [N, K, B, u]
        if self.shared_gate is None:
            return tf.reshape(tasks, [N * K, batch, u])
        shared_weights = (self.shared_gate(inputs) if shared_in is None   # [B, N, P]
                          else token_major(self.shared_gate.token_major_call(shared_in)))
        shared_weights = tf.transpose(shared_weights, [1, 2, 0])[..., None]   # [N, P, B, 1]
        shared = _major_gated_sum(shared_weights, grouped, axis=1)          # [N, B, u]
        out = tf.concat([tasks, shared[:, None]], axis=1)                   # [N, K+1, B, u]
        return tf.reshape(out, [N * (K + 1), batch, u])

    def _slot_inputs(self, inputs):
        """Expert, task-gate and shared-gate inputs from slot-major
        ``[N·(K+1), B, d]`` slots: ``[N·P, B, d]``, ``[N·K, B, d]``, ``[N, B, d]``."""
        K, mt, ms, N = self.num_tasks, self.task_experts, self.shared_experts, self.num_groups
        d = inputs.shape[-1]
        batch = tf.shape(inputs)[1]
        slots = tf.reshape(inputs, [N, K + 1, batch, d])
        task_in, shared_in = tf.split(slots, [K, 1], axis=1)            # [N,K,B,d], [N,1,B,d]
        if mt == 1 and ms == 1:   # one expert per slot: the slots are the expert inputs
            expert_in = inputs
        else:                     # task k's m_t experts read slot k, the m_s shared slot K
            own = tf.repeat(task_in, mt, axis=1)                          # [N, K·mt, B, d]
            shared = tf.repeat(shared_in, ms, axis=1)                     # [N, ms, B, d]
            expert_in = tf.reshape(tf.concat([own, shared], axis=1), [N * (K * mt + ms), batch, d])
        return (expert_in, tf.reshape(task_in, [N * K, batch, d]),
                tf.reshape(shared_in, [N, batch, d]))

    def compute_output_shape(self, input_shape):
        n = self.num_slots if self.shared_output else self.num_groups * self.num_tasks
        return tf.TensorShape([tf.TensorShape(input_shape)[0], n, self.experts.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, task_experts=self.task_experts,
                      shared_experts=self.shared_experts,
                      expert_units=list(self.experts.units),
                      shared_output=self.shared_output, num_groups=self.num_groups,
                      activation=keras.activations.serialize(self.experts.activation),
                      dropout=self.experts.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


def stop_gradient_except(values: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """``keep·v + (1 - keep)·stop_gradient(v)``: the same values, gradients only
    where ``keep`` is 1 (no branch, so XLA-safe).

    Args:
      values: any tensor.
      keep: 0/1 tensor broadcastable to ``values``.
    """
    keep = tf.cast(keep, values.dtype)
    return keep * values + (1.0 - keep) * tf.stop_gradient(values)


@keras.utils.register_keras_serializable(package="tfmdl")
class LabelSpaceFusion(keras.layers.Layer):
    """HMoE's explicit mixture in the label space, with task-constrained gradients.

    Every scenario's tower predicts every instance: ``p_{s,k}`` for all ``S``
    scenarios and ``K`` tasks. An instance with scenario mask ``m`` (``c = Σ_s m_s``)
    fuses them per task with gates of its own scenario(s):

    ``ω_k = Σ_s (m_s / c) · softmax(W_{s,k} x)`` (weights over the ``S`` scenarios),
    ``p̃_{s',k} = m_{s'} p_{s',k} + (1 - m_{s'}) · stop_gradient(p_{s',k})``,
    ``ŷ_k = Σ_{s'} ω_{k,s'} p̃_{s',k}``.

    The borrowed (other-scenario) predictions pass their values but no
    gradient, so an instance's loss never updates the other scenarios' towers
    (HMoE's task-constrained back-propagation); the gates still learn how much
    to borrow. Gates are one `Gate` with ``S·K`` gates over ``S`` scenarios.

    Shapes: ``call(predictions [batch, S, K], gate_inputs [batch, d],
    scenario_mask [batch, S])`` -> ``[batch, K]``. With probabilities in, the
    output is a convex combination of probabilities.
    Paper: HMoE (Li et al. 2020) Sec. 3.3-3.4; docs/design.md 4.

    Example:
      >>> fuse = LabelSpaceFusion(num_scenarios=2, num_tasks=3)
      >>> fuse(tf.fill([4, 2, 3], 0.5), tf.zeros([4, 5]), tf.one_hot([0, 1, 0, 1], 2)).shape
      TensorShape([4, 3])

    Args:
      num_scenarios: S.
      num_tasks: K.
      gate_bias: whether the gates have biases (default True: a per-scenario
        prior on how much to borrow).
      kernel_initializer: initializer of the gate kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_scenarios: int, num_tasks: int, gate_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios = _check_count("num_scenarios", num_scenarios)
        self.num_tasks = _check_count("num_tasks", num_tasks)
        self.gate_bias = bool(gate_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.gate = Gate(self.num_scenarios * self.num_tasks, self.num_scenarios,
                         use_bias=self.gate_bias, name="gate",
                         kernel_initializer=keras.initializers.deserialize(
                             keras.initializers.serialize(self.kernel_initializer)))


    def fusion_weights(self, gate_inputs, scenario_mask) -> tf.Tensor:
        """The own-scenario gate weights ``ω`` ``[batch, K, S]``."""
        S, K = self.num_scenarios, self.num_tasks
        weights = tf.reshape(self.gate(gate_inputs), [-1, S, K, S])       # [B, s, k, s']
        share = fusion.scenario_share(scenario_mask, weights.dtype)
        return tf.einsum("bs,bskt->bkt", share, weights)

    def call(self, predictions, gate_inputs, scenario_mask):
        S, K = self.num_scenarios, self.num_tasks
        gate_inputs = tf.convert_to_tensor(gate_inputs)
        scenario_mask = tf.convert_to_tensor(scenario_mask)
        if predictions.shape.rank != 3 or tuple(predictions.shape[1:]) != (S, K):
            raise ValueError(f"{self.name}: predictions must be [batch, {S}, {K}]. "
                             f"Received: shape {predictions.shape}")
        if scenario_mask.shape.rank != 2 or scenario_mask.shape[-1] != S:
            raise ValueError(f"{self.name}: scenario_mask must be [batch, {S}]. "
                             f"Received: shape {scenario_mask.shape}")
        mask = tf.cast(scenario_mask, predictions.dtype)
        borrowed = stop_gradient_except(predictions, mask[:, :, None])   # [B, S, K]
        omega = tf.cast(self.fusion_weights(gate_inputs, mask), predictions.dtype)
        return tf.einsum("bkt,btk->bk", omega, borrowed)

    def compute_output_shape(self, predictions_shape):
        return tf.TensorShape([tf.TensorShape(predictions_shape)[0], self.num_tasks])

    def get_config(self):
        config = super().get_config()
        config.update(num_scenarios=self.num_scenarios, num_tasks=self.num_tasks,
                      gate_bias=self.gate_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
