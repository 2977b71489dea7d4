"""One MDL block: domain-aware all-token interaction (docs/design.md 2.2, ablations 2.4)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers.attention import DomainAwareAttention
from tfmdl.layers.fusion import DomainFused
from tfmdl.layers.mixing import (INTERACTIONS, LAYER_NORM_EPSILON, RankMixerBlock,
                                 check_mixable)
from tfmdl.layers.per_token_ffn import PerTokenFFN, _check_positive_int, _check_rate

TOKEN_MODES = ("daa", "mixing", "none")


@keras.utils.register_keras_serializable(package="tfmdl")
class MDLBlock(keras.layers.Layer):
    """One Multi-Distribution Learner block (MDL 3.2 and 3.3, Eq. 6 and 11-15).

    With feature tokens ``X``, scenario tokens ``Z = [Z_1..Z_S, Z_g]`` (global
    token last), task tokens ``U`` and the multi-hot scenario mask ``m``
    (docs/design.md 2.2; defaults ``scenario_mode = task_mode = "daa"``):

    1. ``X^l = RankMixer(X^{l-1})`` (`RankMixerBlock`: token mixing or
       self-attention, then per-token FFN).
    2. DAA queries are ``Z^{l-1}`` / ``U^{l-1}``, keys and values the block's
       *input* feature tokens ``X^{l-1}`` (`DomainAwareAttention`).
    3. ``Ẑ = Z^{l-1} + DAA_s(Z^{l-1}, X^{l-1})``, ``Z^l = Ẑ + PFFN_s(LN(Ẑ))``.
    4. ``Û = U^{l-1} + DAA_t(U^{l-1}, X^{l-1})``.
    5. ``Ũ_k = Û_k + z̄``, ``z̄ = mean({Z^l_s : m_s = 1} ∪ {Z^l_g})`` (`DomainFused`).
    6. ``U^l = Ũ + PFFN_t(LN(Ũ))``.

    PFFN_s / PFFN_t are per-token FFNs (own weights per scenario / task token)
    with hidden width ``ffn_mult · d`` and GELU, like RankMixer's PFFN.

    Ablations (docs/design.md 2.4, MDL Table 2):

    * ``scenario_mode="mixing"``: the scenario tokens are concatenated after the
      feature tokens (and before any task tokens), go through the RankMixer
      block with them, and are split back: ``[X^l; Z^l] = RankMixer([X^{l-1};
      Z^{l-1}])``. There is no DAA_s, and no PFFN_s either: inside the RankMixer
      block each scenario token already gets its own per-token FFN.
    * ``scenario_mode="none"``: no scenario tokens (``scenario_tokens`` is None,
      ``scenario_mask`` is ignored and may be None); the task tokens get no
      domain fusion (step 5 is skipped) and the block has no scenario weights.
    * ``task_mode="mixing"``: the task tokens join the RankMixer mixing the same
      way (after the scenario tokens when both join) instead of DAA_t; steps 5
      and 6 still apply to the mixed task tokens.
    * ``task_mode="none"``: no task tokens (``task_tokens`` is None) and no task
      weights; the scenario side still runs.
    * ``use_global=False``: the domain-fused mean leaves the global token out.

    ``update_features=False`` skips step 1 (no RankMixer weights; ``X^l =
    X^{l-1}``) unless scenario or task tokens join the mixing. DAA reads the
    block's *input* features, so in the last block of a stack whose outputs come
    from the task tokens the feature update would feed nothing (and get no
    gradient); `tfmdl.models.mdl` turns it off there.

    Choices where docs/design.md is silent: the LayerNorms of steps 3 and 6 normalise over
    ``d`` with parameters shared by all tokens (``epsilon = 1e-6``); joining
    tokens in ``"mixing"`` mode changes the token count, so with
    ``interaction="mixing"`` the width must satisfy ``d % T_joined == 0``
    (checked on the first call, as Keras 2 gives ``build`` only the feature
    shape); the joined tokens share the mixing and get their own PFFN weights in
    the RankMixer block. ``dropout`` applies to every PFFN hidden layer and to the
    attention weights.

    Shapes: ``call(features [batch, T, d], scenario_tokens [batch, S + 1, d] or
    None, task_tokens [batch, K, d] or None, scenario_mask [batch, S] or None,
    training=None)`` returns a dict: ``"features"`` ``[batch, T, d]``,
    ``"scenario_tokens"`` ``[batch, S + 1, d]`` or None, ``"task_tokens"``
    ``[batch, K, d]`` or None, ``"scenario_attention"`` ``[batch, H, S + 1, T]`` or
    None (only in ``"daa"`` mode), ``"task_attention"`` ``[batch, H, K, T]`` or None.

    Example:
      >>> block = MDLBlock(ffn_mult=2, num_heads=2)
      >>> out = block(tf.zeros([2, 4, 8]), tf.zeros([2, 3, 8]), tf.zeros([2, 2, 8]),
      ...             tf.constant([[1., 0.], [1., 1.]]))
      >>> out["task_tokens"].shape, out["scenario_attention"].shape
      (TensorShape([2, 2, 8]), TensorShape([2, 2, 3, 4]))

    Args:
      ffn_mult: hidden width of every PFFN as a multiple of ``d`` (default 4).
      num_heads: heads of DAA_s / DAA_t and of the self-attention interaction
        (default 4); must divide ``d``.
      dropout: dropout rate (default 0.0), see above.
      interaction: feature interaction, ``"mixing"`` (default) or ``"self_attention"``.
      scenario_mode: ``"daa"`` (default), ``"mixing"`` or ``"none"``.
      task_mode: ``"daa"`` (default), ``"mixing"`` or ``"none"``.
      use_global: include the global scenario token in the domain-fused mean
        (default True).
      mixing_heads: token-mixing heads (`TokenMixing`); None (default) = number
        of mixed tokens.
      update_features: run step 1 (default True), see above.
    """

    def __init__(self, ffn_mult: int = 4, num_heads: int = 4, dropout: float = 0.0,
                 interaction: str = "mixing", scenario_mode: str = "daa",
                 task_mode: str = "daa", use_global: bool = True, mixing_heads=None,
                 update_features: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("ffn_mult", ffn_mult)
        _check_positive_int("num_heads", num_heads)
        _check_rate("dropout", dropout)
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction should be one of {INTERACTIONS}. "
                             f"Received: interaction={interaction!r}")
        if scenario_mode not in TOKEN_MODES:
            raise ValueError(f"scenario_mode should be one of {TOKEN_MODES}. "
                             f"Received: scenario_mode={scenario_mode!r}")
        if task_mode not in TOKEN_MODES:
            raise ValueError(f"task_mode should be one of {TOKEN_MODES}. "
                             f"Received: task_mode={task_mode!r}")
        if not isinstance(use_global, bool):
            raise ValueError(f"use_global should be a bool. Received: use_global={use_global!r}")
        self.ffn_mult = int(ffn_mult)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.interaction = interaction
        self.scenario_mode = scenario_mode
        self.task_mode = task_mode
        self.use_global = use_global
        self.mixing_heads = None if mixing_heads is None else int(mixing_heads)
        self.update_features = bool(update_features)

    @property
    def mixes(self) -> bool:
        """Whether step 1 runs (feature update requested, or tokens join the mixing)."""
        return (self.update_features or self.scenario_mode == "mixing"
                or self.task_mode == "mixing")

    def _ffn(self, width, name):
        return PerTokenFFN(self.ffn_mult * width, activation="gelu",
                           dropout=self.dropout, name=name)

    def _norm(self, name):
        return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)

    def _attention(self, name):
        return DomainAwareAttention(self.num_heads, dropout=self.dropout, name=name)

    def build(self, input_shape):
        # Keras 2 passes only the features' shape; sublayers whose weights depend on
        # the scenario/task token counts create them on the first call.
        features_shape = tf.TensorShape(input_shape)
        if features_shape.rank != 3 or features_shape[1] is None or features_shape[2] is None:
            raise ValueError(f"{self.name}: features must be [batch, T, d] with static T "
                             f"and d. Received: features shape {features_shape}")
        width = int(features_shape[2])
        if self.scenario_mode == "daa" or self.task_mode == "daa":
            if width % self.num_heads:
                raise ValueError(
                    f"{self.name}: domain-aware attention needs the token width "
                    f"divisible by num_heads. Received: d={width}, "
                    f"num_heads={self.num_heads}")
        self.rank_mixer = (RankMixerBlock(self.ffn_mult, self.dropout, self.interaction,
                                          self.num_heads, self.mixing_heads,
                                          name="rank_mixer") if self.mixes else None)
        self.scenario_attention = self.scenario_norm = self.scenario_ffn = None
        self.task_attention = self.task_norm = self.task_ffn = self.domain_fused = None
        if self.scenario_mode == "daa":
            self.scenario_attention = self._attention("scenario_attention")
            self.scenario_norm = self._norm("scenario_norm")
            self.scenario_ffn = self._ffn(width, "scenario_ffn")
        if self.task_mode != "none":
            if self.task_mode == "daa":
                self.task_attention = self._attention("task_attention")
            if self.scenario_mode != "none":
                self.domain_fused = DomainFused(self.use_global, name="domain_fused")
            self.task_norm = self._norm("task_norm")
            self.task_ffn = self._ffn(width, "task_ffn")
        super().build(features_shape)

    def _check_inputs(self, features, scenario_tokens, task_tokens, scenario_mask):
        width = features.shape[-1]
        for mode, name, tokens in (("scenario_mode", "scenario_tokens", scenario_tokens),
                                   ("task_mode", "task_tokens", task_tokens)):
            value = getattr(self, mode)
            if value == "none" and tokens is not None:
                raise ValueError(f"{self.name}: {mode}='none' takes no {name}; pass None. "
                                 f"Received: {name} of shape {tokens.shape}")
            if value != "none" and tokens is None:
                raise ValueError(f"{self.name}: {mode}={value!r} needs {name}, got None.")
            if tokens is not None and (tokens.shape.rank != 3 or tokens.shape[1] is None
                                       or tokens.shape[2] != width):
                raise ValueError(
                    f"{self.name}: {name} must be [batch, N, d] with static N and the "
                    f"feature width d={width}. Received: {name} shape {tokens.shape}")
        if self.domain_fused is not None and scenario_mask is None:
            raise ValueError(f"{self.name}: the domain-fused module needs scenario_mask "
                             "[batch, S]; got None.")
        joined = [features.shape[1]]
        if self.scenario_mode == "mixing":
            joined.append(scenario_tokens.shape[1])
        if self.task_mode == "mixing":
            joined.append(task_tokens.shape[1])
        if self.interaction == "mixing" and len(joined) > 1:
            check_mixable(sum(joined), width,
                          f"{self.name} (T={joined[0]} feature tokens joined by "
                          f"{sum(joined[1:])} scenario/task tokens for mixing)",
                          self.mixing_heads)

    def call(self, features, scenario_tokens=None, task_tokens=None, scenario_mask=None,
             training=None):
        # Keras converts only the first argument from NumPy.
        scenario_tokens, task_tokens = (
            None if t is None else tf.convert_to_tensor(t, dtype=features.dtype)
            for t in (scenario_tokens, task_tokens))
        self._check_inputs(features, scenario_tokens, task_tokens, scenario_mask)
        joined = [features]
        if self.scenario_mode == "mixing":
            joined.append(scenario_tokens)
        if self.task_mode == "mixing":
            joined.append(task_tokens)
        if self.rank_mixer is None:
            parts = [features]
        else:
            mixed = self.rank_mixer(
                tf.concat(joined, axis=1) if len(joined) > 1 else features, training=training)
            parts = tf.split(mixed, [t.shape[1] for t in joined], axis=1)
        outputs = {"features": parts[0], "scenario_tokens": None, "task_tokens": None,
                   "scenario_attention": None, "task_attention": None}

        scenario_out = None
        if self.scenario_mode == "daa":
            update, outputs["scenario_attention"] = self.scenario_attention(
                scenario_tokens, features, training=training)
            z_hat = scenario_tokens + update
            scenario_out = z_hat + self.scenario_ffn(self.scenario_norm(z_hat),
                                                     training=training)
        elif self.scenario_mode == "mixing":
            scenario_out = parts[1]
        outputs["scenario_tokens"] = scenario_out

        if self.task_mode != "none":
            if self.task_mode == "daa":
                update, outputs["task_attention"] = self.task_attention(
                    task_tokens, features, training=training)
                u_tilde = task_tokens + update
            else:
                u_tilde = parts[-1]
            if self.domain_fused is not None:
                u_tilde = self.domain_fused(scenario_out, u_tilde, scenario_mask)
            outputs["task_tokens"] = u_tilde + self.task_ffn(self.task_norm(u_tilde),
                                                             training=training)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(ffn_mult=self.ffn_mult, num_heads=self.num_heads,
                      dropout=self.dropout, interaction=self.interaction,
                      scenario_mode=self.scenario_mode, task_mode=self.task_mode,
                      use_global=self.use_global, mixing_heads=self.mixing_heads,
                      update_features=self.update_features)
        return config
