"""PMTA's layers: task prompts, cross-task transformer, domain-aware rescaling (docs/design.md 3).

* `TaskPromptEmbedding`: ``TPE_k = W2_k ReLU(W1_k [p_k ; e_u^k ; e_v^k] + b1_k) + b2_k``
  (PMTA 2.3, Eqs. 1-2), all K tasks in one einsum.
* `TaskClassifierFirstLayer`: ``C1_k(h)``, the first layer of every task's classifier
  (PMTA 2.4, Eq. 3), weight-compatible with `TaskTowers`' first layer.
* `CrossTaskTransformer`: post-LN transformer over the K task rows (PMTA 2.4,
  Eqs. 4-7), with a hook that rescales every layer's output (Eq. 9).
* `TaskFusionMLP`: the "task fusion MLP" ablation (PMTA Table 2), same interface.
* `DomainAwareRescaling`: ``2·σ(W2 ReLU(W1 [e_u^d ; e_v^d] + b1) + b2)`` (PMTA 2.5,
  Eq. 8), the per-layer scales of the two modules above.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.per_token_ffn import (PerTokenDense, _check_positive_int, _check_rate,
                                        build_sublayer, per_token_initializer)

LAYER_NORM_EPSILON = 1e-6


def _check_rescale(layer: keras.layers.Layer, rescale: tf.Tensor, num_layers: int,
                   num_tasks: int, width: int) -> None:
    shape = rescale.shape
    ok = shape.rank in (3, 4) and shape[1] == num_layers and shape[-1] == width and \
        (shape.rank == 3 or shape[2] == num_tasks)
    if not ok:
        raise ValueError(
            f"{layer.name}: rescale must be [batch, {num_layers}, {width}] (one scale vector "
            f"per layer, shared by the task rows) or [batch, {num_layers}, {num_tasks}, "
            f"{width}]. Received: rescale.shape={shape}")


def _layer_scale(rescale: tf.Tensor, i: int) -> tf.Tensor:
    """Layer ``i``'s scale, broadcastable against ``[batch, K, d]``."""
    scale = rescale[:, i]
    return scale[:, None, :] if scale.shape.rank == 2 else scale


def _build_attention(attention: keras.layers.MultiHeadAttention, input_shape) -> None:
    """Creates a self-attention layer's weights now rather than on its first call.

    Keras' MultiHeadAttention creates its weights lazily inside the parent's
    ``call``; in a model reloaded from a SavedModel such weights can miss the
    checkpoint restore and keep fresh random values (seen with this layer's
    list of attention layers). Building them here, in the parent's ``build``,
    makes them ordinary weights that load like any other.
    """
    # pylint: disable=protected-access
    attention._build_from_signature(input_shape, input_shape)
    heads = input_shape[:-1].concatenate([attention._num_heads, attention._key_dim])
    with tf.name_scope(attention.name):
        for dense in (attention._query_dense, attention._key_dense, attention._value_dense):
            build_sublayer(dense, input_shape)
        build_sublayer(attention._output_dense, heads)
    attention.built = True


@keras.utils.register_keras_serializable(package="tfmdl")
class TaskPromptEmbedding(keras.layers.Layer):
    """Task Prompt Embedding: one prompt-conditioned vector per task (PMTA 2.3).

    ``TPE_k = W2_k ReLU(W1_k [p_k ; e_k] + b1_k) + b2_k`` for ``k = 1..K``, where
    ``p_k ∈ R^P`` is a learnable prompt vector of task k and ``e_k = [e_u^k ; e_v^k]``
    the embeddings of the user/item features related to task k
    (``feature_sets.task_related``). Every task has its own ``W1_k, b1_k, W2_k, b2_k``.

    All tasks are computed together: the kernels are ``[K, P + F, hidden]`` and
    ``[K, hidden, output]`` and each layer is one ``einsum``. The caller stacks the
    task features into ``[batch, K, F]``, zero-padding narrower tasks
    (`tokenization.stack_token_inputs`); padded inputs multiply zeros, so the
    result equals K separate MLPs. With ``feature_widths`` each task's first
    kernel is initialised with its own fan-in ``P + F_k`` and its padded rows
    are zero. ``F = 0`` (no task-related features) gives pure prompts
    (HyperPrompt), the same for every example.

    Shapes: input ``[batch, K, F]`` -> output ``[batch, K, output_dim]``.

    Example:
      >>> tpe = TaskPromptEmbedding(num_tasks=3, prompt_dim=4, hidden_dim=8, output_dim=6)
      >>> tpe(tf.zeros([2, 3, 5])).shape
      TensorShape([2, 3, 6])

    Args:
      num_tasks: K; the input's task axis must match.
      prompt_dim: width P of every prompt vector ``p_k``.
      hidden_dim: hidden width of every task's MLP.
      output_dim: width of ``TPE_k``.
      feature_widths: optional true width ``F_k <= F`` of each task's features (for
        the initialisation only).
      activation: hidden activation (default ``"relu"``, the paper's).
      kernel_initializer: initializer of the kernels (default ``"glorot_uniform"``,
        the paper's Xavier).
      prompt_initializer: initializer of the prompts (default ``"glorot_uniform"``).
    """

    def __init__(self, num_tasks: int, prompt_dim: int, hidden_dim: int, output_dim: int,
                 feature_widths: Optional[Sequence[int]] = None, activation="relu",
                 kernel_initializer="glorot_uniform", prompt_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        for key, value in (("num_tasks", num_tasks), ("prompt_dim", prompt_dim),
                           ("hidden_dim", hidden_dim), ("output_dim", output_dim)):
            _check_positive_int(key, value)
        self.num_tasks = int(num_tasks)
        self.prompt_dim = int(prompt_dim)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        if feature_widths is not None:
            widths = list(feature_widths)
            if len(widths) != self.num_tasks or any(
                    isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0
                    for w in widths):
                raise ValueError(f"feature_widths should hold one non-negative integer per "
                                 f"task ({self.num_tasks}). Received: "
                                 f"feature_widths={feature_widths!r}")
            feature_widths = [int(w) for w in widths]
        self.feature_widths = feature_widths
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.prompt_initializer = keras.initializers.get(prompt_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[1] != self.num_tasks or input_shape[2] is None:
            raise ValueError(f"{self.name}: expected [batch, {self.num_tasks}, F] with a static "
                             f"F (num_tasks={self.num_tasks}). Received: "
                             f"input_shape={input_shape}")
        width = int(input_shape[2])
        if self.feature_widths is not None and max(self.feature_widths) > width:
            raise ValueError(f"{self.name}: feature_widths={self.feature_widths} exceed the "
                             f"input width F={width}.")
        K, P = self.num_tasks, self.prompt_dim
        fan_ins = None if self.feature_widths is None else [P + w for w in self.feature_widths]
        self.prompt = self.add_weight(name="prompt", shape=(K, P),
                                      initializer=self.prompt_initializer)
        self.kernel1 = self.add_weight(
            name="kernel1", shape=(K, P + width, self.hidden_dim),
            initializer=per_token_initializer(self.kernel_initializer, fan_ins=fan_ins))
        self.bias1 = self.add_weight(name="bias1", shape=(K, self.hidden_dim),
                                     initializer="zeros")
        self.kernel2 = self.add_weight(
            name="kernel2", shape=(K, self.hidden_dim, self.output_dim),
            initializer=per_token_initializer(self.kernel_initializer))
        self.bias2 = self.add_weight(name="bias2", shape=(K, self.output_dim),
                                     initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        P = self.prompt_dim
        # W1_k [p_k ; e_k] = W1_k[:P] p_k + W1_k[P:] e_k: the prompt part needs no batch axis
        prompt = tf.einsum("kp,kph->kh", self.prompt, self.kernel1[:, :P]) + self.bias1
        if inputs.shape[-1]:
            pre = tf.einsum("bkf,kfh->bkh", inputs, self.kernel1[:, P:]) + prompt
        else:
            batch = tf.shape(inputs)[0]
            pre = prompt + tf.zeros([batch, 1, 1], prompt.dtype)       # [B, K, H] by broadcast
        return tf.einsum("bkh,khd->bkd", self.activation(pre), self.kernel2) + self.bias2

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.num_tasks, self.output_dim])

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, prompt_dim=self.prompt_dim,
                      hidden_dim=self.hidden_dim, output_dim=self.output_dim,
                      feature_widths=self.feature_widths,
                      activation=keras.activations.serialize(self.activation),
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      prompt_initializer=keras.initializers.serialize(self.prompt_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class TaskClassifierFirstLayer(keras.layers.Layer):
    """``C1_k(h) = act(W_k h + b_k)``: the first layer of every task's classifier (PMTA 2.4).

    One einsum over the kernel ``[K, d, units]``. Its weights live in a
    `PerTokenDense` sublayer named ``layer_0``, exactly like the first layer of
    `TaskTowers`, so a layer of this class named ``task_towers`` has the weight
    names of a ``dnn``/``rankmixer``/``dcnv2`` model's towers' first layer
    (``task_towers/layer_0/kernel``) and is restored by PMTA's parameter warm-up.

    With ``with_logit=True`` it also returns the classifier's own logit
    ``b_k = v_k · C1_k(h)`` (sublayer ``layer_1``, no bias, the weight names of
    `TaskTowers`'s output layer), i.e. the whole one-hidden-layer tower of the
    backbone model: PMTA's ``backbone_logit`` (docs/design.md 3).

    Shapes: ``[batch, d]`` (shared, e.g. the backbone output) or ``[batch, K, d]``
    -> ``[batch, K, units]`` (and, with ``with_logit``, logits ``[batch, K]``).

    Example:
      >>> TaskClassifierFirstLayer(3, 8)(tf.zeros([2, 5])).shape
      TensorShape([2, 3, 8])
      >>> [t.shape for t in TaskClassifierFirstLayer(3, 8, with_logit=True)(tf.zeros([2, 5]))]
      [TensorShape([2, 3, 8]), TensorShape([2, 3])]

    Args:
      num_tasks: K.
      units: width of every task's first classifier layer.
      activation: activation (default ``"relu"``, as in `TaskTowers`).
      kernel_initializer: kernel initializer (default ``"glorot_uniform"``).
      with_logit: also return ``b_k`` (default False).
    """

    def __init__(self, num_tasks: int, units: int, activation="relu",
                 kernel_initializer="glorot_uniform", with_logit: bool = False, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_tasks", num_tasks)
        _check_positive_int("units", units)
        self.num_tasks = int(num_tasks)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.with_logit = bool(with_logit)
        init = keras.initializers.serialize(self.kernel_initializer)
        self.layer_0 = PerTokenDense(self.units, kernel_initializer=self.kernel_initializer,
                                     name="layer_0")
        self.layer_1 = (PerTokenDense(1, use_bias=False, name="layer_1",
                                      kernel_initializer=keras.initializers.deserialize(init))
                        if self.with_logit else None)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank == 2:
            shape = tf.TensorShape([shape[0], self.num_tasks, shape[1]])
        if shape.rank != 3 or shape[1] != self.num_tasks:
            raise ValueError(f"{self.name}: input must be [batch, d] or [batch, "
                             f"{self.num_tasks}, d]. Received: input_shape={input_shape}")
        build_sublayer(self.layer_0, shape)
        if self.layer_1 is not None:
            build_sublayer(self.layer_1, shape[:-1].concatenate([self.units]))
        super().build(input_shape)

    def call(self, inputs):
        if inputs.shape.rank == 2:   # shared input: no need to tile it K times
            out = tf.einsum("bd,kdu->bku", inputs, self.layer_0.kernel) + self.layer_0.bias
        else:
            out = self.layer_0(inputs)
        out = self.activation(out)
        if self.layer_1 is None:
            return out
        return out, self.layer_1(out)[:, :, 0]

    def compute_output_shape(self, input_shape):
        batch = tf.TensorShape(input_shape)[0]
        out = tf.TensorShape([batch, self.num_tasks, self.units])
        return (out, tf.TensorShape([batch, self.num_tasks])) if self.with_logit else out

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, units=self.units,
                      activation=keras.activations.serialize(self.activation),
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      with_logit=self.with_logit)
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class CrossTaskTransformer(keras.layers.Layer):
    """Cross-task transformer over the task rows, post-LN (PMTA 2.4, Eqs. 4-7 and 9).

    ``X_1 = LN(M)``; for ``i = 1..L``:
    ``A = LN(MHA(X_i) + X_i)``, ``X_{i+1} = LN(FFN(A) + A)``, with multi-head
    self-attention over the K task rows (`keras.layers.MultiHeadAttention`,
    ``num_heads`` heads of width ``d / num_heads``) and
    ``FFN(A) = ReLU(A W1 + b1) W2 + b2`` (hidden width ``ffn_mult · d``) shared by
    the rows. There is no positional encoding: each row is already task-specific
    (its own prompt, classifier layer and projection).

    Rescaling hook (Domain-Aware Rescaling, Eq. 9): with ``rescale`` given,
    layer i's output is multiplied element-wise by ``rescale[:, i]`` before it
    enters layer i+1: ``X_{i+1} ← X_{i+1} ⊙ DAR_i``. ``rescale`` is ``[batch, L, d]``
    (one vector per layer, broadcast over the task rows) or ``[batch, L, K, d]``.

    Shapes: input ``[batch, K, d]`` -> output ``[batch, K, d]``; ``d % num_heads == 0``.

    Example:
      >>> ctt = CrossTaskTransformer(num_layers=2, num_heads=2)
      >>> ctt(tf.zeros([2, 3, 8]), rescale=tf.ones([2, 2, 8])).shape
      TensorShape([2, 3, 8])

    Args:
      num_layers: L (default 2, the paper's).
      num_heads: attention heads (default 4, the paper's).
      ffn_mult: FFN hidden width as a multiple of ``d`` (default 2).
      dropout: dropout on the attention weights and the FFN hidden layer (default 0.0).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_layers: int = 2, num_heads: int = 4, ffn_mult: int = 2,
                 dropout: float = 0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_layers", num_layers)
        _check_positive_int("num_heads", num_heads)
        _check_positive_int("ffn_mult", ffn_mult)
        _check_rate("dropout", dropout)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.ffn_mult = int(ffn_mult)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _init(self):
        return keras.initializers.deserialize(
            keras.initializers.serialize(self.kernel_initializer))

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        width = input_shape[2]
        if input_shape[1] is None or width is None:
            raise ValueError(f"{self.name}: needs a static number of task rows and width. "
                             f"Received: input_shape={input_shape}")
        if width % self.num_heads:
            raise ValueError(f"{self.name}: the width must be divisible by num_heads. "
                             f"Received: d={width}, num_heads={self.num_heads}")
        width = int(width)

        def norm(name):
            return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)

        self.input_norm = norm("input_norm")
        build_sublayer(self.input_norm, input_shape)
        self.attention, self.norm1, self.ffn_hidden, self.ffn_output, self.norm2 = \
            [], [], [], [], []
        hidden_shape = input_shape[:-1].concatenate([self.ffn_mult * width])
        for i in range(self.num_layers):
            self.attention.append(keras.layers.MultiHeadAttention(
                self.num_heads, key_dim=width // self.num_heads, dropout=self.dropout,
                kernel_initializer=self._init(), name=f"attention_{i}"))
            _build_attention(self.attention[i], input_shape)
            self.norm1.append(norm(f"norm1_{i}"))
            self.ffn_hidden.append(keras.layers.Dense(
                self.ffn_mult * width, activation="relu", kernel_initializer=self._init(),
                name=f"ffn_hidden_{i}"))
            self.ffn_output.append(keras.layers.Dense(
                width, kernel_initializer=self._init(), name=f"ffn_output_{i}"))
            self.norm2.append(norm(f"norm2_{i}"))
            for layer, shape in ((self.norm1[i], input_shape), (self.ffn_hidden[i], input_shape),
                                 (self.ffn_output[i], hidden_shape), (self.norm2[i], input_shape)):
                build_sublayer(layer, shape)
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, inputs, rescale=None, training=None):
        if rescale is not None:
            rescale = tf.convert_to_tensor(rescale)
            _check_rescale(self, rescale, self.num_layers, inputs.shape[1], inputs.shape[2])
        x = self.input_norm(inputs)
        for i in range(self.num_layers):   # depth, not tasks
            a = self.norm1[i](self.attention[i](x, x, training=training) + x)
            hidden = self.drop(self.ffn_hidden[i](a), training=training)
            x = self.norm2[i](self.ffn_output[i](hidden) + a)
            if rescale is not None:
                x = x * tf.cast(_layer_scale(rescale, i), x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, num_heads=self.num_heads,
                      ffn_mult=self.ffn_mult, dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class TaskFusionMLP(keras.layers.Layer):
    """Per-task MLP fusion, the ``fusion: mlp`` ablation of PMTA (Table 2).

    ``X_1 = LN(M)``; ``X_{j+1} = ReLU(W_{j,k} X_j[k] + b_{j,k})`` for every task row
    k and ``j = 1..J`` (J = 3 in the paper), each task with its own weights: one
    `PerTokenDense` einsum per layer. No information flows between tasks, which is
    what the ablation measures against the `CrossTaskTransformer`. The same
    rescaling hook: ``X_{j+1} ← X_{j+1} ⊙ rescale[:, j]``.

    Shapes: input ``[batch, K, d]`` -> output ``[batch, K, d]``; ``rescale``
    ``[batch, J, d]`` or ``[batch, J, K, d]``.

    Example:
      >>> TaskFusionMLP(num_layers=3)(tf.zeros([2, 3, 8])).shape
      TensorShape([2, 3, 8])

    Args:
      num_layers: J (default 3).
      dropout: dropout after every layer but the last (default 0.0).
      kernel_initializer: initializer of every kernel (default ``"glorot_uniform"``).
    """

    def __init__(self, num_layers: int = 3, dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_layers", num_layers)
        _check_rate("dropout", dropout)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"{self.name}: needs a static number of task rows and width. "
                             f"Received: input_shape={input_shape}")
        init = keras.initializers.serialize(self.kernel_initializer)
        self.input_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                          name="input_norm")
        build_sublayer(self.input_norm, input_shape)
        self.dense = [PerTokenDense(int(input_shape[2]),
                                    kernel_initializer=keras.initializers.deserialize(init),
                                    name=f"layer_{j}") for j in range(self.num_layers)]
        for layer in self.dense:
            build_sublayer(layer, input_shape)
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, inputs, rescale=None, training=None):
        if rescale is not None:
            rescale = tf.convert_to_tensor(rescale)
            _check_rescale(self, rescale, self.num_layers, inputs.shape[1], inputs.shape[2])
        x = self.input_norm(inputs)
        for j, layer in enumerate(self.dense):
            x = tf.nn.relu(layer(x))
            if rescale is not None:
                x = x * tf.cast(_layer_scale(rescale, j), x.dtype)
            if j < self.num_layers - 1:
                x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, dropout=self.dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class DomainAwareRescaling(keras.layers.Layer):
    """Domain-Aware Rescaling, a bottleneck gate on domain embeddings (PMTA 2.5, Eq. 8).

    ``DAR = 2·σ(W2 ReLU(W1 [e_u^d ; e_v^d] + b1) + b2)`` with ``W1 ∈ R^{n×k}``,
    ``W2 ∈ R^{k×m}`` and bottleneck ``k < n, k < m``. ``e_u^d, e_v^d`` are the
    domain-specific (value, scenario) embeddings of the user and item
    (``feature_sets.domain_specific``); the caller concatenates them. Values lie
    in ``(0, 2)``, 1 being neutral; a layer's output is multiplied by them
    element-wise (`CrossTaskTransformer` ``rescale``). PMTA uses one DAR per
    transformer layer.

    Shapes: input ``[batch, n]`` -> output ``[batch, m]``.

    Example:
      >>> dar = DomainAwareRescaling(output_dim=8, bottleneck_dim=4)
      >>> dar(tf.zeros([2, 6])).shape
      TensorShape([2, 8])

    Args:
      output_dim: m, the width of the rescaled rows.
      bottleneck_dim: k; must be smaller than n and m.
      input_dim: n, optional: checked at construction when given (and against the
        input at build time); otherwise checked at build time.
      activation: bottleneck activation (default ``"relu"``).
      kernel_initializer: kernel initializer (default ``"glorot_uniform"``).
    """

    def __init__(self, output_dim: int, bottleneck_dim: int, input_dim: Optional[int] = None,
                 activation="relu", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("output_dim", output_dim)
        _check_positive_int("bottleneck_dim", bottleneck_dim)
        if input_dim is not None:
            _check_positive_int("input_dim", input_dim)
        self.output_dim = int(output_dim)
        self.bottleneck_dim = int(bottleneck_dim)
        self.input_dim = None if input_dim is None else int(input_dim)
        self._check_bottleneck(self.input_dim)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _check_bottleneck(self, input_dim: Optional[int]) -> None:
        too_wide = self.bottleneck_dim >= self.output_dim or (
            input_dim is not None and self.bottleneck_dim >= input_dim)
        if too_wide:
            raise ValueError(
                f"DomainAwareRescaling: bottleneck_dim must be smaller than both the input "
                f"width and the output width (k < n, k < m). Received: "
                f"bottleneck_dim={self.bottleneck_dim}, input_dim={input_dim}, "
                f"output_dim={self.output_dim}")

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        n = input_shape[-1]
        if n is None:
            raise ValueError(f"{self.name}: needs a static input width. "
                             f"Received: input_shape={input_shape}")
        if self.input_dim is not None and int(n) != self.input_dim:
            raise ValueError(f"{self.name}: input_dim={self.input_dim} but the input is "
                             f"{input_shape}.")
        self._check_bottleneck(int(n))
        init = keras.initializers.serialize(self.kernel_initializer)
        self.bottleneck = keras.layers.Dense(
            self.bottleneck_dim, activation=self.activation,
            kernel_initializer=keras.initializers.deserialize(init), name="bottleneck")
        self.expand = keras.layers.Dense(
            self.output_dim, kernel_initializer=keras.initializers.deserialize(init),
            name="expand")
        build_sublayer(self.bottleneck, input_shape)
        build_sublayer(self.expand, input_shape[:-1].concatenate([self.bottleneck_dim]))
        super().build(input_shape)

    def call(self, inputs):
        return 2.0 * tf.nn.sigmoid(self.expand(self.bottleneck(inputs)))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.output_dim])

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, bottleneck_dim=self.bottleneck_dim,
                      input_dim=self.input_dim,
                      activation=keras.activations.serialize(self.activation),
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
