"""PEPNet's personalisation gates (Chang et al. 2023; docs/design.md 4).

* `GateNU`: the gate neural unit ``δ = γ·σ(W2 ReLU(W1 x + b1) + b2)``, values in
  ``(0, γ)``, optionally ``N`` independent gates computed together.
* `EPNet`: embedding personalisation — a GateNU on the domain features and the
  stop-gradient general embeddings rescales the general embeddings.
* `PPNet`: parameter personalisation — per-task towers whose every layer input
  is rescaled by a GateNU fed with the personal priors and the stop-gradient
  EPNet output; all tasks computed together (kernels ``[K, d_in, d_out]``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import dnn
from tfmdl.layers.per_token_ffn import (PerTokenDense, _check_positive_int, _check_rate,
                                        build_sublayer, per_token_initializer)


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0:
        raise ValueError(f"gamma should be a positive number. Received: gamma={gamma!r}")
    return float(gamma)


@keras.utils.register_keras_serializable(package="tfmdl")
class GateNU(keras.layers.Layer):
    """Gate neural unit: ``δ = γ·σ(W2 ReLU(W1 x + b1) + b2) ∈ (0, γ)^u``.

    A two-layer bottleneck whose sigmoid output, scaled by ``γ`` (2 in the
    paper), multiplies another tensor element-wise; 1 is neutral, so a gate can
    amplify a signal up to ``γ`` times or suppress it. With ``num_gates = N``
    the layer holds ``N`` independent gates on the same input, each with its
    own weights (kernels ``[N, d, hidden]`` and ``[N, hidden, u]``, one
    ``einsum`` per layer), e.g. one gate per task.

    Shapes: ``[batch, d]`` -> ``[batch, units]``, or ``[batch, N, units]`` with
    ``num_gates = N``.
    Paper: PEPNet (Chang et al. 2023), section 3.3 "Gate NU", eq. 1-2.

    Example:
      >>> GateNU(4)(tf.zeros([2, 3])).shape
      TensorShape([2, 4])
      >>> GateNU(4, num_gates=5)(tf.zeros([2, 3])).shape
      TensorShape([2, 5, 4])

    Args:
      units: gate width ``u`` (the width of the tensor it scales).
      hidden_units: bottleneck width; None (default) uses ``units``.
      gamma: scale ``γ`` of the sigmoid (default 2.0).
      num_gates: None (default) for one gate, else the number ``N`` of gates.
      kernel_initializer: initializer of both kernels (default ``"glorot_uniform"``,
        each gate with its own fans).
    """

    def __init__(self, units: int, hidden_units: Optional[int] = None, gamma: float = 2.0,
                 num_gates: Optional[int] = None, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("units", units)
        if hidden_units is not None:
            _check_positive_int("hidden_units", hidden_units)
        if num_gates is not None:
            _check_positive_int("num_gates", num_gates)
        self.units = int(units)
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.gamma = _check_gamma(gamma)
        self.num_gates = None if num_gates is None else int(num_gates)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        d = tf.TensorShape(input_shape)[-1]
        if d is None:
            raise ValueError(f"{self.name}: GateNU needs a static input width. "
                             f"Received: input_shape={input_shape}")
        n, hidden = self.num_gates or 1, self.hidden_units or self.units
        init = per_token_initializer(self.kernel_initializer)
        self.kernel_1 = self.add_weight(name="kernel_1", shape=(n, int(d), hidden),
                                        initializer=init)
        self.bias_1 = self.add_weight(name="bias_1", shape=(n, hidden), initializer="zeros")
        self.kernel_2 = self.add_weight(name="kernel_2", shape=(n, hidden, self.units),
                                        initializer=init)
        self.bias_2 = self.add_weight(name="bias_2", shape=(n, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        hidden = tf.nn.relu(tf.einsum("bd,ndh->bnh", inputs, self.kernel_1) + self.bias_1)
        gate = self.gamma * tf.sigmoid(tf.einsum("bnh,nhu->bnu", hidden, self.kernel_2)
                                       + self.bias_2)                       # [B, N, u]
        return gate if self.num_gates is not None else gate[:, 0]

    def compute_output_shape(self, input_shape):
        batch = tf.TensorShape(input_shape)[0]
        if self.num_gates is None:
            return tf.TensorShape([batch, self.units])
        return tf.TensorShape([batch, self.num_gates, self.units])

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, hidden_units=self.hidden_units, gamma=self.gamma,
                      num_gates=self.num_gates,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class EPNet(keras.layers.Layer):
    """Embedding personalised network: domain-aware rescaling of the embeddings.

    ``δ_domain = GateNU([E_d ; ∅(E)])``, ``O_ep = δ_domain ⊗ E``, where ``E`` is
    the concatenation of the general (shared) embeddings, ``E_d`` the domain
    features (scenario embedding and domain-side features) and ``∅`` stop
    gradient: the gate reads the embeddings without training them through it.
    The gate is element-wise over ``E``.

    Call as ``layer([E, E_d])``.

    Shapes: ``E`` ``[batch, D]``, ``E_d`` ``[batch, D_d]`` -> ``O_ep`` ``[batch, D]``.
    Paper: PEPNet (Chang et al. 2023), section 3.4 "Embedding Personalized
    Network", eq. 3-4.

    Example:
      >>> EPNet()([tf.ones([2, 6]), tf.ones([2, 3])]).shape
      TensorShape([2, 6])

    Args:
      gate_hidden: GateNU bottleneck width; None (default) uses ``D``.
      gamma: GateNU scale (default 2.0).
      kernel_initializer: initializer of the gate kernels (default ``"glorot_uniform"``).
    """

    def __init__(self, gate_hidden: Optional[int] = None, gamma: float = 2.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if gate_hidden is not None:
            _check_positive_int("gate_hidden", gate_hidden)
        self.gate_hidden = None if gate_hidden is None else int(gate_hidden)
        self.gamma = _check_gamma(gamma)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        emb_shape, domain_shape = (tf.TensorShape(s) for s in input_shape)
        if emb_shape.rank != 2 or domain_shape.rank != 2 or emb_shape[-1] is None \
                or domain_shape[-1] is None:
            raise ValueError(f"{self.name}: EPNet takes [embeddings [batch, D], domain "
                             f"features [batch, D_d]] with static widths. "
                             f"Received: input_shape={input_shape}")
        self.gate = GateNU(int(emb_shape[-1]), self.gate_hidden, self.gamma,
                           kernel_initializer=keras.initializers.serialize(
                               self.kernel_initializer), name="gate")
        build_sublayer(self.gate, [None, int(emb_shape[-1]) + int(domain_shape[-1])])
        super().build(input_shape)

    def call(self, inputs):
        embeddings, domain = inputs
        gate = self.gate(tf.concat([domain, tf.stop_gradient(embeddings)], axis=-1))
        return gate * embeddings

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(gate_hidden=self.gate_hidden, gamma=self.gamma,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class PPNet(keras.layers.Layer):
    """Parameter personalised network: K gated task towers, computed together.

    Task k's tower on input ``H^0`` (shared ``[batch, d]`` or per task):
    ``O^l_k = δ^l_k ⊗ H^l_k``, ``H^{l+1}_k = act(W^l_k O^l_k + b^l_k)`` for the
    hidden layers and ``logit_k = w_k · O^L_k + c_k``, where every layer input
    gets its own gate ``δ^l_k = GateNU^l_k([P ; ∅(O_ep)])`` from the personal
    priors ``P`` (user/item/author embeddings) and the stop-gradient EPNet
    output ``O_ep``. Weights are per task: tower layers are `PerTokenDense` and
    the gates of a layer one `GateNU` with ``num_gates = K``.

    Call as ``layer([H^0, P, O_ep])``.

    Shapes: ``H^0`` ``[batch, d]`` or ``[batch, K, d]``, ``P`` ``[batch, p]``,
    ``O_ep`` ``[batch, e]`` -> logits ``[batch, K]``.
    Paper: PEPNet (Chang et al. 2023), section 3.5 "Parameter Personalized
    Network", eq. 5-7.

    Example:
      >>> PPNet(3, [8])([tf.ones([2, 5]), tf.ones([2, 4]), tf.ones([2, 6])]).shape
      TensorShape([2, 3])

    Args:
      num_tasks: K.
      hidden: widths of the hidden tower layers.
      gate_hidden: GateNU bottleneck width; None (default) uses each gated width.
      gamma: GateNU scale (default 2.0).
      activation: hidden activation (default ``"relu"``).
      dropout: dropout rate after every hidden layer (default 0.0).
      kernel_initializer: initializer of tower and gate kernels (default
        ``"glorot_uniform"``).
    """

    def __init__(self, num_tasks: int, hidden: Sequence[int], gate_hidden: Optional[int] = None,
                 gamma: float = 2.0, activation="relu", dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_tasks", num_tasks)
        if gate_hidden is not None:
            _check_positive_int("gate_hidden", gate_hidden)
        _check_rate("dropout", dropout)
        self.num_tasks = int(num_tasks)
        self.hidden = dnn._check_units(hidden, "hidden")  # pylint: disable=protected-access
        self.gate_hidden = None if gate_hidden is None else int(gate_hidden)
        self.gamma = _check_gamma(gamma)
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, input_shape):
        h_shape, prior_shape, ep_shape = (tf.TensorShape(s) for s in input_shape)
        if h_shape.rank == 3 and h_shape[1] != self.num_tasks or h_shape.rank not in (2, 3):
            raise ValueError(f"{self.name}: the tower input must be [batch, d] or [batch, "
                             f"{self.num_tasks}, d]. Received: {h_shape}")
        gate_in = int(prior_shape[-1]) + int(ep_shape[-1])
        init = keras.initializers.serialize(self.kernel_initializer)
        widths = [int(h_shape[-1])] + self.hidden      # the input width of every layer
        self.gates = [GateNU(w, self.gate_hidden, self.gamma, num_gates=self.num_tasks,
                             kernel_initializer=keras.initializers.deserialize(init),
                             name=f"gate_{j}") for j, w in enumerate(widths)]
        self.layers_ = [PerTokenDense(u, kernel_initializer=keras.initializers.deserialize(init),
                                      name=f"layer_{j}")
                        for j, u in enumerate(self.hidden + [1])]
        for gate in self.gates:
            build_sublayer(gate, [None, gate_in])
        for layer, w in zip(self.layers_, widths):
            build_sublayer(layer, [None, self.num_tasks, w])
        super().build(input_shape)

    def call(self, inputs, training=None):
        h, priors, ep_output = inputs
        gate_input = tf.concat([priors, tf.stop_gradient(ep_output)], axis=-1)
        x = h if h.shape.rank == 3 else tf.tile(h[:, None, :], [1, self.num_tasks, 1])
        for j, (gate, layer) in enumerate(zip(self.gates, self.layers_)):
            x = layer(gate(gate_input) * x)                               # [B, K, w_{j+1}]
            if j < len(self.hidden):
                x = self.activation(x)
                if self.dropout:
                    x = self.drop(x, training=training)
        return x[:, :, 0]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape[0])[0], self.num_tasks])

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, hidden=list(self.hidden),
                      gate_hidden=self.gate_hidden, gamma=self.gamma,
                      activation=keras.activations.serialize(self.activation),
                      dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
