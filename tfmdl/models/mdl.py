"""MDL: Multi-Distribution Learner (docs/design.md 2), registered as ``mdl``.

Inputs (all from the shared input stage): feature tokens from the spec's
``semantic_groups`` (one token per group, `FeatureTokenizer`); scenario tokens
``z_s = FFN_s([ê ; p_s])`` for every scenario plus the global token (``ê`` the
extra embeddings of ``feature_sets.extra_embedding``, ``p_s`` the
``feature_sets.scenario_prior`` features of scenario s; ``global`` lists the
global token's priors); task tokens ``u_k = FFN_k([ê ; r_k])`` with ``r_k`` the
``feature_sets.task_related`` features. ``layers`` `MDLBlock`s follow, and task k
predicts ``ŷ_k = σ(w_k · U^L_k + b_k)`` (the paper's "logits layer"; ``b_k`` is
the shared output bias of every model, `tfmdl.models.base`).

Head options (measured in docs/benchmarks.md, "MDL's rare-task heads"):

* ``head_norm: true`` (the default) normalises ``U^L_k`` before the logits
  layer, ``σ(w_k · LN(U^L_k) + b_k)`` (LayerNorm over ``d``, parameters shared
  by the task tokens): the task tokens are an un-normalised residual stream
  (untrained logits with a std of about 1.5). On ``feed`` it raised the mean
  AUC of the measurable cells from 0.674 to 0.682 on each of 3 seeds and the
  worst calibration from 0.44-0.62 to 0.70; ``head_norm: false`` is the
  paper's plain linear map.
* ``head_hidden: h > 0`` reads the logits layer as a one-hidden-layer MLP per
  task, ``σ(w2_k · ReLU(W1_k U^L_k + b1_k) + b_k)`` with ``W1_k`` ``[d, h]``,
  which is an acceptable reading of the paper's "logits layer" too.

Ablations (MDL Table 2, docs/design.md 2.4):

* ``no_task_tokens``: no task tokens; per-task towers (two-layer per-task FFN)
  on the mean of the final feature tokens, plus the fused scenario vector ``z̄``
  when scenario tokens exist.
* ``task_interaction: mixing``: task tokens join the feature tokens in the
  RankMixer mixing instead of domain-aware attention.
* ``no_scenario_tokens``: no scenario tokens; each (scenario, task) pair gets
  its own output head and an instance averages the heads of its scenarios.
* ``no_global_token``: the domain-fused mean leaves out the global token.
* ``scenario_interaction: mixing``: scenario tokens join the mixing instead of
  domain-aware attention.

Attention read-out: ``built.aux_outputs(features)`` returns
``{"layer_<l>/scenario": [B, H, S+1, T], "layer_<l>/task": [B, H, K, T]}`` for
every layer whose scenario/task tokens use domain-aware attention.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Literal

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import fusion
from tfmdl.layers import inputs as inputs_lib
from tfmdl.layers import mdl_block
from tfmdl.layers import mixing
from tfmdl.layers import per_token_ffn
from tfmdl.layers import tokenization
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


@dataclasses.dataclass
class MDLConfig:
    """MDL hyper-parameters (``params:`` of a config file)."""
    # parameter matching (tfmdl.models.sizing): scale the width, then fine-tune the
    # tokenizer hidden width (0 = the width) since widths move in multiples of T and heads
    SIZE_FIELDS = ("width",)
    FINE_SIZE_FIELDS = {"token_hidden": "width"}
    layers: int = 2
    width: int = 96
    heads: int = 4
    ffn_mult: int = 2
    dropout: float = 0.0
    interaction: Literal["mixing", "self_attention"] = "mixing"
    mixing_heads: int = 0          # token-mixing heads; 0 = number of mixed tokens (RankMixer)
    token_hidden: int = 0          # tokenizer FFN hidden width; 0 = width
    no_task_tokens: bool = False
    task_interaction: Literal["daa", "mixing"] = "daa"
    no_scenario_tokens: bool = False
    no_global_token: bool = False
    scenario_interaction: Literal["daa", "mixing"] = "daa"
    head_norm: bool = True         # LayerNorm of U^L_k before the logits layer (issue 21)
    head_hidden: int = 0           # > 0: one-hidden-layer MLP per task as the logits layer

    def __post_init__(self):
        for key in ("layers", "width", "heads", "ffn_mult"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}.")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}).")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.mixing_heads < 0:
            raise ValueError(f"mixing_heads must be >= 0, got {self.mixing_heads}.")
        if self.token_hidden < 0:
            raise ValueError(f"token_hidden must be >= 0, got {self.token_hidden}.")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0, got {self.head_hidden}.")

    @property
    def scenario_mode(self) -> str:
        return "none" if self.no_scenario_tokens else self.scenario_interaction

    @property
    def task_mode(self) -> str:
        return "none" if self.no_task_tokens else self.task_interaction


def _features(emb: Dict[str, tf.Tensor], names) -> tf.Tensor:
    return common.concat([emb[n] for n in names]) if names else None


class _MDLCore:
    """Builds the MDL graph on the looked-up inputs (one instance per model)."""

    def __init__(self, spec: spec_lib.FeatureSpec, cfg: MDLConfig):
        self.spec, self.cfg = spec, cfg
        if not spec.semantic_groups:
            raise ValueError("spec.semantic_groups is empty: MDL builds one feature token per "
                             "semantic group; declare semantic_groups in the spec.")

    def __call__(self, inputs: Dict[str, tf.Tensor]):
        spec, cfg = self.spec, self.cfg
        sets = spec.feature_sets
        extra = [n for n in sets.extra_embedding]
        emb = inputs_lib.FeatureEmbedding(spec, extra_features=extra,
                                          name="feature_embedding")(inputs)
        groups = list(spec.semantic_groups.values())
        group_inputs = [common.concat([emb[n] for n in g]) for g in groups]
        x = tokenization.FeatureTokenizer([int(t.shape[-1]) for t in group_inputs], cfg.width,
                                          name="feature_tokenizer")(common.concat(group_inputs))
        shared = _features(emb, [f"extra/{n}" for n in extra])
        hidden = cfg.token_hidden or cfg.width
        names = list(spec.scenario.names)
        S, K = len(names), len(spec.tasks)
        mask = fusion.scenario_mask(inputs[spec.scenario.feature], S, validate=False)

        z = u = None
        if cfg.scenario_mode != "none":
            priors = [_features(emb, sets.scenario_prior.get(s, ())) for s in names + ["global"]]
            z = tokenization.ScenarioTokenizer(S + 1, cfg.width, hidden,
                                               name="scenario_tokenizer")(
                _token_inputs(shared, priors))
        if cfg.task_mode != "none":
            related = [_features(emb, sets.task_related.get(t, ())) for t in spec.task_names]
            u = tokenization.TaskTokenizer(K, cfg.width, hidden, name="task_tokenizer")(
                _token_inputs(shared, related))

        aux = {}
        for layer in range(cfg.layers):
            block = mdl_block.MDLBlock(
                ffn_mult=cfg.ffn_mult, num_heads=cfg.heads, dropout=cfg.dropout,
                interaction=cfg.interaction, scenario_mode=cfg.scenario_mode,
                task_mode=cfg.task_mode, use_global=not cfg.no_global_token,
                mixing_heads=cfg.mixing_heads or None,
                # the last block's feature update only matters to task towers
                update_features=layer < cfg.layers - 1 or cfg.task_mode == "none",
                name=f"mdl_block_{layer}")
            out = block(x, z, u, mask)
            # functional outputs that the block leaves empty are placeholders, not None
            x = out["features"]
            z = out["scenario_tokens"] if cfg.scenario_mode != "none" else None
            u = out["task_tokens"] if cfg.task_mode != "none" else None
            if cfg.scenario_mode == "daa":
                aux[f"layer_{layer}/scenario"] = out["scenario_attention"]
            if cfg.task_mode == "daa":
                aux[f"layer_{layer}/task"] = out["task_attention"]
        logits = self._logits(x, z, u, mask)                       # [B, K]
        return common.task_logits(spec, logits), aux

    def _logits(self, x, z, u, mask) -> tf.Tensor:
        cfg, K = self.cfg, len(self.spec.tasks)
        S = self.spec.scenario.count
        if u is None:
            # per-task towers on pooled feature tokens (+ the fused scenario vector)
            pooled = tf.reduce_mean(x, axis=1)
            if z is not None:
                zbar = fusion.DomainFused(use_global=not cfg.no_global_token,
                                          name="tower_domain_fused")(
                    z, tf.zeros_like(pooled)[:, None, :], mask)
                pooled = pooled + zbar[:, 0, :]
            u = tf.tile(pooled[:, None, :], [1, K, 1])
            u = per_token_ffn.PerTokenFFN(cfg.width, name="task_towers")(u)
        if cfg.head_norm:
            u = keras.layers.LayerNormalization(epsilon=mixing.LAYER_NORM_EPSILON,
                                                name="task_head_norm")(u)
        if z is None and cfg.scenario_mode == "none":
            # one head per (scenario, task); an instance averages its scenarios' heads
            heads = per_token_ffn.PerTokenDense(S, use_bias=False, name="scenario_task_heads")(u)  # [B, K, S]
            share = fusion.scenario_share(mask)
            # multiply + sum, not tf.einsum: a functional-graph einsum does not reload
            return tf.reduce_sum(heads * tf.cast(share, heads.dtype)[:, None, :], axis=2)
        if cfg.head_hidden:
            return per_token_ffn.PerTokenFFN(cfg.head_hidden, output_dim=1, activation="relu",
                                             name="task_logits")(u)[:, :, 0]
        return per_token_ffn.PerTokenDense(1, use_bias=False, name="task_logits")(u)[:, :, 0]


def _token_inputs(shared, per_token):
    if shared is None and all(p is None for p in per_token):
        raise ValueError(
            "MDL scenario/task tokens need inputs: declare feature_sets.extra_embedding, or "
            f"scenario_prior / task_related features for all {len(per_token)} tokens, in the "
            "spec (or switch the tokens off with no_scenario_tokens / no_task_tokens).")
    return tokenization.stack_token_inputs(shared, per_token)


@registry.register("mdl", MDLConfig, paper="MDL: Multi-Distribution Learner (Douyin Search)")
def build_mdl(spec: spec_lib.FeatureSpec, params: MDLConfig) -> base.BuiltModel:
    return base.assemble("mdl", spec, params, _MDLCore(spec, params))
