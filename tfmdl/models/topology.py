"""Shared/specific topologies for multi-scenario multi-task learning (docs/design.md 4).

The PMTA paper's (3.1.2) multi-domain multi-task baselines, which differ only in
which parts are specific to the instance's scenario (domain). Every model
starts from a backbone (`common.BackboneParams`: ``dnn`` or ``rankmixer``) on
the embeddings and the scenario multi-hot ``m``, ``h = backbone(E)``.

* ``shared_top``: domain-specific bottoms, shared top. One bottom MLP per
  scenario, ``b_s = MLP_s(h)``, all computed together (one ``einsum`` per layer
  over a ``[S, d_in, d_out]`` kernel); the instance takes the mean of its
  scenarios' bottoms ``b = Σ_s m_s b_s / |m|`` (its one scenario's bottom when
  single-valued), and shared task towers predict ``ŷ_k = σ(T_k(b))``. The
  default ``backbone_hidden: []`` makes ``h`` the raw embeddings, so the
  bottoms are wholly domain-specific.
* ``specific_top``: shared bottom ``h`` (default ``backbone_hidden: [256, 128]``),
  one tower per (scenario, task): ``ŷ_k = σ(Σ_s m_s T_{s,k}(h) / |m|)``
  (`common.scenario_task_logits`).
* ``specific_all``: domain-specific embeddings, bottoms and towers. The
  features of the spec's ``feature_sets.domain_specific`` are looked up in
  tables keyed by (value, scenario) (`FeatureEmbedding` ``domain_features``)
  and replace their shared embeddings; then domain-specific bottoms (as in
  ``shared_top``; none when ``domain_hidden`` is empty) and one tower per
  (scenario, task) (as in ``specific_top``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import per_token_ffn
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


def _check_widths(cfg, key: str, allow_empty: bool = True) -> None:
    widths = getattr(cfg, key)
    if (not widths and not allow_empty) or any(u < 1 for u in widths):
        raise ValueError(f"{key} must hold {'' if allow_empty else 'at least one '}positive "
                         f"width{'s' if allow_empty else ''}, got {list(widths)}.")


@dataclasses.dataclass
class SharedTopConfig(common.BackboneParams):
    """``shared_top``: backbone fields, per-scenario bottom widths, shared towers."""
    backbone_hidden: Tuple[int, ...] = ()
    domain_hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        _check_widths(self, "domain_hidden", allow_empty=False)
        _check_widths(self, "tower_hidden")


@dataclasses.dataclass
class SpecificTopConfig(common.BackboneParams):
    """``specific_top``: backbone fields and the (scenario, task) tower widths."""
    tower_hidden: Tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        _check_widths(self, "tower_hidden")


@dataclasses.dataclass
class SpecificAllConfig(common.BackboneParams):
    """``specific_all``: backbone fields, per-scenario bottoms (may be empty) and
    (scenario, task) towers."""
    backbone_hidden: Tuple[int, ...] = ()
    domain_hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        _check_widths(self, "domain_hidden")
        _check_widths(self, "tower_hidden")


def domain_bottoms(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor], h: tf.Tensor,
                   hidden: Sequence[int], dropout: float = 0.0,
                   name: str = "domain_bottom") -> tf.Tensor:
    """One ReLU MLP per scenario on ``h`` ``[B, d]``, computed for all scenarios at
    once (`PerTokenDense` layers, kernel ``[S, d_in, d_out]``), then the mean over
    the instance's scenarios -> ``[B, hidden[-1]]``."""
    S = spec.scenario.count
    x = tf.tile(h[:, None, :], [1, S, 1])                                        # [B, S, d]
    for j, units in enumerate(hidden):
        x = tf.nn.relu(per_token_ffn.PerTokenDense(units, name=f"{name}_{j}")(x))
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout_{j}")(x)
    return common.scenario_mean(spec, inputs, x)


@registry.register("shared_top", SharedTopConfig,
                   paper="SharedTop: domain-specific bottoms, shared task towers (PMTA paper "
                         "multi-domain baseline)")
def build_shared_top(spec: spec_lib.FeatureSpec, params: SharedTopConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        b = domain_bottoms(spec, inputs, h, params.domain_hidden, params.dropout)
        logits = common.towers(spec, b, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("shared_top", spec, params, core)


@registry.register("specific_top", SpecificTopConfig,
                   paper="SpecificTop: shared bottom, domain-specific task towers (PMTA paper "
                         "multi-domain baseline)")
def build_specific_top(spec: spec_lib.FeatureSpec,
                       params: SpecificTopConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, params, inputs, emb)
        logits = common.scenario_task_logits(spec, inputs, h, params.tower_hidden,
                                             params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("specific_top", spec, params, core)


@registry.register("specific_all", SpecificAllConfig,
                   paper="SpecificAll: domain-specific embeddings, bottoms and task towers "
                         "(PMTA paper multi-domain baseline)")
def build_specific_all(spec: spec_lib.FeatureSpec,
                       params: SpecificAllConfig) -> base.BuiltModel:
    domain = list(spec.feature_sets.domain_specific)
    if not domain:
        raise ValueError(f"specific_all: spec {spec.name!r} declares no "
                         f"feature_sets.domain_specific features to give (value, scenario) "
                         f"embeddings; declare some (e.g. user_id, item_id) or use "
                         f"shared_top / specific_top.")

    def core(inputs):
        emb = common.embed(spec, inputs, domain_features=domain)
        emb = dict(emb, **{n: emb[f"domain/{n}"] for n in domain})
        h = common.backbone(spec, params, inputs, emb)
        if params.domain_hidden:
            h = domain_bottoms(spec, inputs, h, params.domain_hidden, params.dropout)
        logits = common.scenario_task_logits(spec, inputs, h, params.tower_hidden,
                                             params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("specific_all", spec, params, core)
