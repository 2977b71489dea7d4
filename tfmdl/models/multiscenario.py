"""Multi-scenario baselines: ``ple_md``, ``star`` and ``hmoe`` (docs/design.md 4).

Each takes a backbone (`common.backbone`, ``backbone: dnn|rankmixer``; by
default ``backbone_hidden: []``, the raw embedding concatenation) and emits one
probability per task; ``m`` is the scenario multi-hot, and an instance in
several scenarios averages over its scenarios.

* ``ple_md`` (PMTA's PLE-MD): one PLE per scenario (its own experts, gates and
  towers) on input embeddings shared across scenarios; all ``S`` PLEs run as one
  batch (`CGC` with ``num_groups = S``) and the instance takes its scenario's
  logits.
* ``star`` (Sheng et al. 2021): partitioned normalization of the backbone
  output, a star-topology FCN (`StarDense`: ``W ⊙ W_s``, ``b + b_s``) ending in
  ``K`` logits, plus an auxiliary network on the domain indicator whose logits
  are added: ``ŷ_k = σ(star_k(PN(h)) + aux_k([e_s; h]))``.
* ``hmoe`` (Li et al. 2020): an implicit MoE in feature space (shared experts,
  one gate and one tower per (scenario, task): ``p_{s,k} = σ(T_{s,k}(Σ_e
  g^{s,k}_e f_e(h)))`` for every scenario) and an explicit MoE in label space
  (`LabelSpaceFusion`): ``ŷ_k = Σ_{s'} ω_{k,s'} p̃_{s',k}``, the other scenarios'
  predictions under stop-gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import dnn
from tfmdl.layers import fusion
from tfmdl.layers import moe
from tfmdl.layers import star
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import multitask
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


# ----------------------------------------------------------------------------- PLE-MD
@dataclasses.dataclass
class PLEMDConfig(multitask.PLEParams):
    """``ple_md``: the `PLEParams` of every scenario's PLE."""


@registry.register("ple_md", PLEMDConfig,
                   paper="PLE-MD (PLE per domain, shared embeddings), PMTA baseline")
def build_ple_md(spec: spec_lib.FeatureSpec, params: PLEMDConfig) -> base.BuiltModel:
    S = spec.scenario.count

    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        x = multitask.ple_levels(params, len(spec.tasks), h, num_groups=S)   # [B, S*K, u]
        logits = common.scenario_task_logits(spec, inputs, x, params.tower_hidden,
                                             params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("ple_md", spec, params, core)


# ----------------------------------------------------------------------------- STAR
@dataclasses.dataclass
class STARConfig(common.BackboneParams):
    """``star``: ``star_hidden`` star-topology layers (then one to ``K`` logits),
    partitioned normalization of their input, an auxiliary network
    (``aux_hidden`` on ``[scenario embedding; h]``)."""
    backbone_hidden: Tuple[int, ...] = ()
    star_hidden: Tuple[int, ...] = (256, 128)
    partitioned_norm: bool = True
    scenario_statistics: bool = True    # PN: per-scenario batch statistics (else shared)
    norm_momentum: float = 0.99
    aux_network: bool = True
    aux_hidden: Tuple[int, ...] = (64,)
    scenario_embedding_dim: int = 8

    def __post_init__(self):
        super().__post_init__()
        common.check_widths(self, "star_hidden", "aux_hidden")
        common.check_min(self, 1, "scenario_embedding_dim")
        if not 0 <= self.norm_momentum < 1:
            raise ValueError(f"norm_momentum must be in [0, 1), got {self.norm_momentum}.")


@registry.register("star", STARConfig,
                   paper="STAR (Sheng et al. 2021), MDL baseline")
def build_star(spec: spec_lib.FeatureSpec, params: STARConfig) -> base.BuiltModel:
    S, K = spec.scenario.count, len(spec.tasks)

    def core(inputs):
        emb = common.embed(spec, inputs)
        # the domain indicator enters through PN, the star weights and the aux net
        h = common.backbone(spec, params, inputs, emb, with_scenario=False)
        mask = common.scenario_multi_hot(spec, inputs)
        z = h
        if params.partitioned_norm:
            z = star.PartitionedNormalization(S, momentum=params.norm_momentum,
                                              scenario_statistics=params.scenario_statistics,
                                              name="partitioned_norm")(z, mask)
        for j, units in enumerate(params.star_hidden):
            z = star.StarDense(S, units, activation="relu", name=f"star_{j}")(z, mask)
            if params.dropout:
                z = keras.layers.Dropout(params.dropout)(z)
        logits = star.StarDense(S, K, name="star_logits")(z, mask)
        if params.aux_network:
            share = fusion.scenario_share(mask)
            domain = keras.layers.Dense(params.scenario_embedding_dim, use_bias=False,
                                        name="scenario_embedding")(share)
            a = common.concat([domain, h])
            if params.aux_hidden:
                a = dnn.MLP(list(params.aux_hidden), dropout=params.dropout,
                            name="aux_mlp")(a)
            logits = logits + keras.layers.Dense(K, use_bias=False, name="aux_logits")(a)
        return common.task_logits(spec, logits), {}

    return base.assemble("star", spec, params, core)


# ----------------------------------------------------------------------------- HMoE
@dataclasses.dataclass
class HMoEConfig(common.BackboneParams):
    """``hmoe``: ``num_experts`` shared experts (``expert_hidden``), one gate and
    one tower (``tower_hidden``) per (scenario, task), label-space fusion."""
    backbone_hidden: Tuple[int, ...] = ()
    num_experts: int = 4
    expert_hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = (64,)
    fusion_gate_bias: bool = True

    def __post_init__(self):
        super().__post_init__()
        common.check_min(self, 1, "num_experts")
        common.check_widths(self, "expert_hidden", allow_empty=False)
        common.check_widths(self, "tower_hidden")


@registry.register("hmoe", HMoEConfig, paper="HMoE (Li et al. 2020), MDL baseline")
def build_hmoe(spec: spec_lib.FeatureSpec, params: HMoEConfig) -> base.BuiltModel:
    S, K = spec.scenario.count, len(spec.tasks)

    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        mixed = moe.MixtureOfExperts(S * K, params.num_experts, params.expert_hidden,
                                     dropout=params.dropout, name="implicit_moe")(h)
        logits = dnn.TaskTowers(S * K, list(params.tower_hidden), dropout=params.dropout,
                                name="scenario_task_towers")(mixed)          # [B, S*K]
        probs = tf.nn.sigmoid(tf.reshape(logits, [-1, S, K]))                 # p_{s,k}
        mask = common.scenario_multi_hot(spec, inputs)
        fused = moe.LabelSpaceFusion(S, K, gate_bias=params.fusion_gate_bias,
                                     name="label_space_fusion")(probs, h, mask)   # [B, K]
        return {t: fused[:, k:k + 1] for k, t in enumerate(spec.task_names)}, {}

    return base.assemble("hmoe", spec, params, core)
