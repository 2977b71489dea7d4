"""Multi-task baselines: ``shared_bottom``, ``mmoe`` and ``ple`` (docs/design.md 4).

All three start from a backbone (`common.backbone`, ``backbone: dnn|rankmixer``)
``h`` ``[B, D]`` — the raw concatenation ``[e_1; …; e_F; m]`` of the feature
embeddings and the scenario multi-hot ``m`` for the MoE models by default
(``backbone_hidden: []``), as in the original papers — and end in per-task
towers ``ŷ_k = σ(T_k(·))``:

* ``shared_bottom`` (Caruana 1997): ``ŷ_k = σ(T_k(h))``, ``h`` a shared bottom
  MLP (``backbone_hidden``).
* ``mmoe`` (Ma et al. 2018): ``y_k = Σ_e softmax(W_k h)_e f_e(h)``, ``ŷ_k = σ(T_k(y_k))``.
* ``ple`` (Tang et al. 2020): ``levels`` stacked `CGC` s (task-specific and
  shared experts, task gates over own + shared experts, a shared gate over all
  experts below the last level), then ``ŷ_k = σ(T_k(y_k^{(L)}))``.

``scenario_towers: true`` gives one tower per (scenario, task) instead; an
instance averages the logits of its scenarios' towers (MDL paper's
SharedBottom, `common.scenario_task_logits`). MMoE's ``scenario_gates: true``
gives one gate per (scenario, task) (the instance mixes with its scenarios'
gates).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import tensorflow as tf

from tfmdl.layers import moe
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


def task_logits(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor], h: tf.Tensor,
                tower_hidden, dropout: float, scenario_towers: bool) -> tf.Tensor:
    """Per-task (or per (scenario, task)) towers on ``h`` ``[B, d]`` or ``[B, K, d]``
    -> logits ``[B, K]``."""
    if not scenario_towers:
        return common.towers(spec, h, tower_hidden, dropout)
    if h.shape.rank == 3:  # task k's input goes to the (s, k) tower of every scenario s
        S, K = spec.scenario.count, len(spec.tasks)
        h = tf.reshape(tf.tile(h[:, None], [1, S, 1, 1]), [-1, S * K, h.shape[-1]])
    return common.scenario_task_logits(spec, inputs, h, tower_hidden, dropout)


# ----------------------------------------------------------------------------- shared bottom
@dataclasses.dataclass
class SharedBottomConfig(common.BackboneParams):
    """``shared_bottom``: the backbone is the shared bottom (``backbone_hidden``)."""
    tower_hidden: Tuple[int, ...] = (64,)
    scenario_towers: bool = False

    def __post_init__(self):
        super().__post_init__()
        common.check_widths(self, "tower_hidden")


@registry.register("shared_bottom", SharedBottomConfig,
                   paper="SharedBottom (Caruana 1997), MDL and PMTA baselines")
def build_shared_bottom(spec: spec_lib.FeatureSpec,
                        params: SharedBottomConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        logits = task_logits(spec, inputs, h, params.tower_hidden, params.dropout,
                             params.scenario_towers)
        return common.task_logits(spec, logits), {}

    return base.assemble("shared_bottom", spec, params, core)


# ----------------------------------------------------------------------------- MMoE
@dataclasses.dataclass
class MMoEConfig(common.BackboneParams):
    """``mmoe``: ``num_experts`` expert MLPs (``expert_hidden``) on the backbone
    output, one softmax gate per task (per (scenario, task) with
    ``scenario_gates``)."""
    backbone_hidden: Tuple[int, ...] = ()
    num_experts: int = 4
    expert_hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = (64,)
    scenario_gates: bool = False
    scenario_towers: bool = False

    def __post_init__(self):
        super().__post_init__()
        common.check_min(self, 1, "num_experts")
        common.check_widths(self, "expert_hidden", allow_empty=False)
        common.check_widths(self, "tower_hidden")


@registry.register("mmoe", MMoEConfig, paper="MMoE (Ma et al. 2018), MDL and PMTA baselines")
def build_mmoe(spec: spec_lib.FeatureSpec, params: MMoEConfig) -> base.BuiltModel:
    S, K = spec.scenario.count, len(spec.tasks)

    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        gates = S * K if params.scenario_gates else K
        mixed = moe.MixtureOfExperts(gates, params.num_experts, params.expert_hidden,
                                     dropout=params.dropout, name="mmoe")(h)   # [B, G, u]
        if params.scenario_gates and params.scenario_towers:   # (s, k) gate -> (s, k) tower
            logits = common.scenario_task_logits(spec, inputs, mixed, params.tower_hidden,
                                                 params.dropout)
        else:
            if params.scenario_gates:
                mixed = common.scenario_mean(
                    spec, inputs, tf.reshape(mixed, [-1, S, K, mixed.shape[-1]]))
            logits = task_logits(spec, inputs, mixed, params.tower_hidden, params.dropout,
                                 params.scenario_towers)
        return common.task_logits(spec, logits), {}

    return base.assemble("mmoe", spec, params, core)


# ----------------------------------------------------------------------------- PLE
@dataclasses.dataclass
class PLEParams(common.BackboneParams):
    """Fields of PLE and PLE-MD: ``levels`` CGC levels of ``task_experts`` experts
    per task and ``shared_experts`` shared experts, every expert an MLP of
    ``expert_hidden`` widths; towers of ``tower_hidden``."""
    backbone_hidden: Tuple[int, ...] = ()
    levels: int = 2
    shared_experts: int = 1
    task_experts: int = 1
    expert_hidden: Tuple[int, ...] = (256,)
    tower_hidden: Tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        common.check_min(self, 1, "levels")
        common.check_min(self, 0, "shared_experts", "task_experts")
        if self.shared_experts + self.task_experts < 1:
            raise ValueError(f"shared_experts + task_experts must be >= 1, got "
                             f"shared_experts={self.shared_experts}, "
                             f"task_experts={self.task_experts}.")
        common.check_widths(self, "expert_hidden", allow_empty=False)
        common.check_widths(self, "tower_hidden")


def ple_levels(params: PLEParams, num_tasks: int, h: tf.Tensor, num_groups: int = 1,
               name: str = "cgc") -> tf.Tensor:
    """``params.levels`` stacked CGCs on ``h`` ``[B, D]`` -> ``[B, N·K, u]``
    (``num_groups`` = N independent PLEs side by side)."""
    x = h
    for level in range(params.levels):
        x = moe.CGC(num_tasks, params.task_experts, params.shared_experts,
                    params.expert_hidden, shared_output=level < params.levels - 1,
                    num_groups=num_groups, dropout=params.dropout,
                    name=f"{name}_{level}")(x)
    return x


@dataclasses.dataclass
class PLEConfig(PLEParams):
    """``ple`` (see `PLEParams`); ``scenario_towers`` as in ``shared_bottom``."""
    scenario_towers: bool = False


@registry.register("ple", PLEConfig, paper="PLE / CGC (Tang et al. 2020), PMTA baseline")
def build_ple(spec: spec_lib.FeatureSpec, params: PLEConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        x = ple_levels(params, len(spec.tasks), h)                         # [B, K, u]
        logits = task_logits(spec, inputs, x, params.tower_hidden, params.dropout,
                             params.scenario_towers)
        return common.task_logits(spec, logits), {}

    return base.assemble("ple", spec, params, core)
