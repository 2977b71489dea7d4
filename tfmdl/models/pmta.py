"""PMTA: Perception-aware Multi-Task Transformer (docs/design.md 3), registered as ``pmta``.

PMTA is a plug-in on top of a backbone ``H`` (``backbone: dnn | rankmixer | dcnv2``,
`common.backbone`, the same layers as the ``dnn`` / ``rankmixer`` / ``dcnv2`` models):

1. ``h = H(x)`` ``[B, D]``; the backbone sees the same inputs as in the plain
   models, so it can be warm-started from one (`tfmdl.training.warm_start`).
2. ``C1_k(h)``: the first layer of every task's classifier
   (`TaskClassifierFirstLayer` named ``task_towers``, weight-compatible with the
   plain models' ``task_towers`` first layer; ``classifier_width`` must equal
   their ``tower_hidden[0]`` to warm-start it).
3. ``TPE_k = W2_k ReLU(W1_k [p_k ; e_k] + b1_k) + b2_k`` (`TaskPromptEmbedding`),
   ``e_k`` the shared embeddings of ``feature_sets.task_related[task k]``.
4. ``M_k = P_k [TPE_k ; C1_k(h)]``: each row projected to the transformer width
   by its own linear map (``task_projection``).
5. `CrossTaskTransformer` over the K rows with `DomainAwareRescaling` after every
   layer: ``DAR_i = 2·σ(W2_i ReLU(W1_i [e_u^d ; e_v^d] + b1_i) + b2_i)``, one per
   layer (``dar_<i>``), ``e^d`` the (value, scenario) embeddings of
   ``feature_sets.domain_specific`` (``FeatureEmbedding`` ``domain/<name>``).
6. ``ŷ_k = σ(w_k · X_{L+1}[k] + c_k)`` (``task_logits``, per-task weights). With
   ``backbone_logit: true`` (a tfmdl option, not in the paper):
   ``ŷ_k = σ(w_k · X_{L+1}[k] + b_k + c_k)``, ``b_k = v_k · C1_k(h)`` the backbone
   model's own tower output (``task_towers/layer_1``, restored by the warm-up) and
   ``w_k`` zero-initialised, so a warm-started PMTA starts at its backbone's
   function and the transformer learns a correction to it.

Ablations (PMTA Table 2):

* ``no_tpe``: M's rows are only the projected ``C1_k(h)``.
* ``fusion: mlp``: a 3-layer per-task MLP (`TaskFusionMLP`, ``fusion_mlp_layers``)
  replaces the transformer; DAR rescales each of its layers.
* ``no_dar``: no domain-aware rescaling (and no domain-specific tables).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Literal

import tensorflow as tf

from tfmdl.layers import per_token_ffn
from tfmdl.layers import pmta as pmta_layers
from tfmdl.layers import tokenization
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


@dataclasses.dataclass
class PMTAConfig(common.BackboneParams):
    """PMTA hyper-parameters (``params:`` of a config file); the ``backbone*`` fields
    come from `common.BackboneParams`."""
    classifier_width: int = 64       # C1_k width (= the source's tower_hidden[0] to warm-start)
    prompt_dim: int = 32             # p_k
    tpe_hidden: int = 64             # TPE hidden width
    tpe_dim: int = 64                # TPE_k width
    width: int = 256                 # transformer width d (rows of M are projected to it)
    heads: int = 4
    layers: int = 2                  # transformer layers L
    ffn_mult: int = 2                # transformer FFN hidden = ffn_mult * width
    dar_bottleneck: int = 16         # DAR bottleneck k (< DAR input width, < width)
    fusion: Literal["transformer", "mlp"] = "transformer"
    fusion_mlp_layers: int = 3       # fusion: mlp depth (paper: 3)
    no_tpe: bool = False
    no_dar: bool = False
    backbone_logit: bool = False     # ŷ_k also adds the backbone tower's logit b_k (step 6)

    def __post_init__(self):
        super().__post_init__()
        for key in ("classifier_width", "prompt_dim", "tpe_hidden", "tpe_dim", "width",
                    "heads", "layers", "ffn_mult", "dar_bottleneck", "fusion_mlp_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}.")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}).")
        if not self.no_dar and self.dar_bottleneck >= self.width:
            raise ValueError(f"dar_bottleneck ({self.dar_bottleneck}) must be smaller than "
                             f"width ({self.width}).")

    @property
    def fusion_layers(self) -> int:
        """Number of fusion layers, i.e. of DAR gates."""
        return self.layers if self.fusion == "transformer" else self.fusion_mlp_layers


class _PMTACore:
    """Builds the PMTA graph on the looked-up inputs (module docstring)."""

    def __init__(self, spec: spec_lib.FeatureSpec, cfg: PMTAConfig):
        self.spec, self.cfg = spec, cfg
        self.domain = [] if cfg.no_dar else list(spec.feature_sets.domain_specific)
        if not cfg.no_dar and not self.domain:
            raise ValueError("PMTA's domain-aware rescaling needs the user/item features of "
                             "feature_sets.domain_specific in the spec (none declared); "
                             "declare them or set no_dar: true.")

    def __call__(self, inputs: Dict[str, tf.Tensor]):
        spec, cfg = self.spec, self.cfg
        K = len(spec.tasks)
        emb = common.embed(spec, inputs, domain_features=self.domain)
        h = common.backbone(spec, cfg, inputs, emb)
        c1 = pmta_layers.TaskClassifierFirstLayer(K, cfg.classifier_width,
                                                  with_logit=cfg.backbone_logit,
                                                  name="task_towers")(h)       # [B, K, c]
        c1, base_logit = c1 if cfg.backbone_logit else (c1, None)             # b: [B, K]
        rows = [c1]
        if not cfg.no_tpe:
            rows.insert(0, self._prompts(emb, h))                              # [B, K, tpe]
        m = rows[0] if len(rows) == 1 else tf.concat(rows, axis=-1)
        m = per_token_ffn.PerTokenDense(cfg.width, name="task_projection")(m)  # [B, K, d]
        scales = self._rescaling(emb) if self.domain else None                 # [B, L, d]
        if cfg.fusion == "transformer":
            fused = pmta_layers.CrossTaskTransformer(
                cfg.layers, cfg.heads, cfg.ffn_mult, dropout=cfg.dropout,
                name="cross_task_transformer")(m, rescale=scales)
        else:
            fused = pmta_layers.TaskFusionMLP(cfg.fusion_mlp_layers, dropout=cfg.dropout,
                                              name="task_fusion_mlp")(m, rescale=scales)
        logits = per_token_ffn.PerTokenDense(
            1, use_bias=False, kernel_initializer="zeros" if cfg.backbone_logit else
            "glorot_uniform", name="task_logits")(fused)[:, :, 0]
        if base_logit is not None:
            logits = logits + base_logit
        return common.task_logits(spec, logits), {}

    def _prompts(self, emb: Dict[str, tf.Tensor], h: tf.Tensor) -> tf.Tensor:
        spec, cfg = self.spec, self.cfg
        related = spec.feature_sets.task_related
        per_task: List = [common.concat([emb[n] for n in related[t]]) if related.get(t)
                          else None for t in spec.task_names]
        if all(p is None for p in per_task):
            x = tf.zeros_like(h[:, :1])[:, None, :0] + tf.zeros([1, len(per_task), 0], h.dtype)
        else:
            x = tokenization.stack_token_inputs(None, per_task)              # [B, K, F]
        widths = [0 if p is None else int(p.shape[-1]) for p in per_task]
        return pmta_layers.TaskPromptEmbedding(
            len(per_task), cfg.prompt_dim, cfg.tpe_hidden, cfg.tpe_dim, feature_widths=widths,
            name="task_prompt_embedding")(x)

    def _rescaling(self, emb: Dict[str, tf.Tensor]) -> tf.Tensor:
        cfg = self.cfg
        e_d = common.concat([emb[f"domain/{n}"] for n in self.domain])        # [B, n]
        n = int(e_d.shape[-1])
        if cfg.dar_bottleneck >= n:
            raise ValueError(
                f"dar_bottleneck ({cfg.dar_bottleneck}) must be smaller than the DAR input "
                f"width n={n} (the domain-specific embeddings of {self.domain}) and the "
                f"width ({cfg.width}).")
        gates = [pmta_layers.DomainAwareRescaling(cfg.width, cfg.dar_bottleneck, input_dim=n,
                                                  name=f"dar_{i}")(e_d)
                 for i in range(cfg.fusion_layers)]   # one gate per fusion layer (depth)
        return tf.stack(gates, axis=1)


def backbone_source(params: PMTAConfig) -> Dict[str, Any]:
    """``{"model", "params"}`` of the backbone model PMTA with ``params`` is
    warm-started from (docs/pmta.md, "Warm start"): the ``dnn``, ``rankmixer`` or
    ``dcnv2`` model with the same backbone and ``tower_hidden: [classifier_width]``, so that
    its ``feature_embedding``, ``backbone_*`` and first tower layer have PMTA's
    shapes."""
    if params.backbone == "dnn":
        out = {"hidden": list(params.backbone_hidden)}
    elif params.backbone == "dcnv2":
        out = {"hidden": list(params.backbone_hidden),
               "cross_layers": params.backbone_cross_layers,
               "projection_dim": params.backbone_projection_dim,
               "diag_scale": params.backbone_diag_scale,
               "structure": params.backbone_structure}
    else:
        out = {"layers": params.backbone_layers, "width": params.backbone_width,
               "ffn_mult": params.backbone_ffn_mult,
               "mixing_heads": params.backbone_mixing_heads}
    out.update(tower_hidden=[params.classifier_width], dropout=params.dropout)
    return {"model": params.backbone, "params": out}


@registry.register("pmta", PMTAConfig,
                   paper="PMTA: Perception-aware Multi-Task Transformer (Douyin, CIKM 2025)")
def build_pmta(spec: spec_lib.FeatureSpec, params: PMTAConfig) -> base.BuiltModel:
    return base.assemble("pmta", spec, params, _PMTACore(spec, params))
