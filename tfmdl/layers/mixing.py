"""Feature-token self-interaction: RankMixer token mixing and block (docs/design.md 2.2 step 1).

* `TokenMixing`: parameter-free RankMixer token mixing (head exchange).
* `RankMixerBlock`: ``S = LN(TokenMix(X) + X)``, ``X' = LN(PFFN(S) + S)``, with the
  interaction swappable for multi-head self-attention.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.per_token_ffn import (PerTokenFFN, _check_positive_int, _check_rate,
                                        build_sublayer)

INTERACTIONS = ("mixing", "self_attention")
LAYER_NORM_EPSILON = 1e-6


def check_mixable(num_tokens: int, width: int, what: str = "TokenMixing",
                  heads=None) -> None:
    """Raises ValueError unless ``width`` splits into equal heads (H = T by default)."""
    if heads is None:
        if width % num_tokens:
            raise ValueError(
                f"{what}: the token width must be divisible by the number of tokens "
                f"(token mixing uses H = T heads of width d / T). Received: d={width}, "
                f"T={num_tokens}. Choose a width divisible by {num_tokens}, or set "
                f"mixing_heads to a divisor of d.")
    elif width % heads:
        raise ValueError(f"{what}: mixing_heads={heads} must divide the token width "
                         f"d={width}.")


@keras.utils.register_keras_serializable(package="tfmdl")
class TokenMixing(keras.layers.Layer):
    """Parameter-free RankMixer token mixing (MDL 3.2.1, docs/design.md 2.2 step 1).

    Every token ``x_t ∈ R^d`` is split into ``H = T`` heads of width ``d / T``:
    ``x_t = [x_t^1 .. x_t^H]``. Output token ``h`` is the concatenation over all
    tokens of their ``h``-th head: ``TokenMix(X)_h = [x_1^h ; x_2^h ; .. ; x_T^h]``.
    With ``H = T`` the shape is kept. Implemented as reshape ``[B, T, H, d/H]`` ->
    transpose -> reshape.

    ``num_heads`` (H) other than T: the ``[H, T·d/H]`` result holds the same
    ``T·d`` numbers and is laid back out as ``[T, d]`` in row-major order, a fixed,
    parameter-free permutation in which every output token still gathers head
    slices of many input tokens. docs/design.md 2.2 allows H = T or a learned projection;
    this keeps the block parameter-free when d is not divisible by T (e.g. when
    scenario and task tokens join the mixing in MDL's ablations).

    Shapes: input ``[batch, T, d]`` -> output ``[batch, T, d]``; ``d % H == 0``.

    Example:
      >>> TokenMixing()(tf.zeros([2, 4, 8])).shape
      TensorShape([2, 4, 8])

    Args:
      num_heads: H, the number of heads each token is split into; None (default)
        means H = T, RankMixer's setting.
    """

    def __init__(self, num_heads=None, **kwargs):
        super().__init__(**kwargs)
        if num_heads is not None:
            _check_positive_int("num_heads", num_heads)
        self.num_heads = None if num_heads is None else int(num_heads)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"{self.name}: TokenMixing needs a static number of tokens "
                             f"and width. Received: input_shape={input_shape}")
        check_mixable(int(input_shape[1]), int(input_shape[2]), self.name, self.num_heads)
        super().build(input_shape)

    def call(self, inputs):
        num_tokens, width = inputs.shape[1], inputs.shape[2]
        h = self.num_heads or num_tokens
        heads = tf.reshape(inputs, [-1, num_tokens, h, width // h])
        return tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [-1, num_tokens, width])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["num_heads"] = self.num_heads
        return config


@keras.utils.register_keras_serializable(package="tfmdl")
class RankMixerBlock(keras.layers.Layer):
    """One RankMixer block: token interaction + per-token FFN (MDL 3.2.1, Eq. 6).

    ``S = LN(TokenMix(X^{l-1}) + X^{l-1})``, ``X^l = LN(PFFN(S) + S)``, where PFFN is
    a `PerTokenFFN` with hidden width ``ffn_mult · d``, GELU and its own weights per
    token. With ``interaction="self_attention"`` the first line becomes
    ``S = LN(MHA(X^{l-1}) + X^{l-1})``, multi-head self-attention over the tokens
    (`keras.layers.MultiHeadAttention`, shared projections, ``num_heads`` heads of
    width ``d / num_heads``). The two LayerNorms normalise over ``d`` with
    ``epsilon = 1e-6`` and are shared by all tokens.

    Shapes: input ``[batch, T, d]`` -> output ``[batch, T, d]``; ``"mixing"`` needs
    ``d % T == 0``, ``"self_attention"`` needs ``d % num_heads == 0``.

    Example:
      >>> RankMixerBlock(ffn_mult=2)(tf.zeros([2, 4, 8])).shape
      TensorShape([2, 4, 8])

    Args:
      ffn_mult: PFFN hidden width as a multiple of ``d`` (default 4).
      dropout: dropout rate on the PFFN hidden activations and, for
        self-attention, on the attention weights (default 0.0).
      interaction: ``"mixing"`` (default, parameter-free token mixing) or
        ``"self_attention"``.
      num_heads: attention heads for ``"self_attention"`` (default 4); unused by
        ``"mixing"``.
      mixing_heads: heads of the token mixing (`TokenMixing` ``num_heads``);
        None (default) means H = T.
    """

    def __init__(self, ffn_mult: int = 4, dropout: float = 0.0,
                 interaction: str = "mixing", num_heads: int = 4, mixing_heads=None,
                 **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("ffn_mult", ffn_mult)
        _check_rate("dropout", dropout)
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction should be one of {INTERACTIONS}. "
                             f"Received: interaction={interaction!r}")
        _check_positive_int("num_heads", num_heads)
        self.ffn_mult = int(ffn_mult)
        self.dropout = float(dropout)
        self.interaction = interaction
        self.num_heads = int(num_heads)
        if mixing_heads is not None:
            _check_positive_int("mixing_heads", mixing_heads)
        self.mixing_heads = None if mixing_heads is None else int(mixing_heads)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        num_tokens, width = input_shape[1], input_shape[2]
        if num_tokens is None or width is None:
            raise ValueError(f"{self.name}: RankMixerBlock needs a static number of "
                             f"tokens and width. Received: input_shape={input_shape}")
        if self.interaction == "mixing":
            self.token_mixing = TokenMixing(self.mixing_heads, name="token_mixing")
            build_sublayer(self.token_mixing, input_shape)
        else:
            if width % self.num_heads:
                raise ValueError(
                    f"{self.name}: self-attention needs the token width divisible by "
                    f"num_heads. Received: d={width}, num_heads={self.num_heads}")
            self.attention = keras.layers.MultiHeadAttention(
                self.num_heads, key_dim=width // self.num_heads, dropout=self.dropout,
                name="self_attention")  # Keras creates its weights on the first call
        self.norm1 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                     name="norm1")
        self.ffn = PerTokenFFN(self.ffn_mult * width, activation="gelu",
                               dropout=self.dropout, name="ffn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                     name="norm2")
        for layer in (self.norm1, self.ffn, self.norm2):
            build_sublayer(layer, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if self.interaction == "mixing":
            mixed = self.token_mixing(inputs)
        else:
            mixed = self.attention(inputs, inputs, training=training)
        s = self.norm1(mixed + inputs)
        return self.norm2(self.ffn(s, training=training) + s)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(ffn_mult=self.ffn_mult, dropout=self.dropout,
                      interaction=self.interaction, num_heads=self.num_heads,
                      mixing_heads=self.mixing_heads)
        return config
