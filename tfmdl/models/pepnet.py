"""PEPNet: parameter and embedding personalised network (Chang et al. 2023).

Registered as ``pepnet`` (docs/design.md 4; an MDL and PMTA paper baseline).

1. General embeddings ``E = [e_1; …; e_F]`` (every feature, shared tables).
2. EPNet: ``O_ep = GateNU([E_d ; ∅(E)]) ⊗ E`` with the domain features
   ``E_d = [s ; e(F_d)]``: a learned scenario embedding ``s = (m / |m|) S_emb``
   and the domain-side features ``F_d`` (``epnet_features``; default every
   feature of the spec's ``feature_sets.scenario_prior``, all scenarios and
   ``global``).
3. Shared bottom: ``h = backbone(O_ep)`` (`common.BackboneParams`): the
   backbone reads the EPNet-rescaled embeddings. The default ``backbone: dnn``
   with ``backbone_hidden: []`` gives ``h = [O_ep ; m]``, the original PEPNet
   where the task towers sit directly on ``O_ep``.
4. PPNet: per-task towers on ``h`` (``tower_hidden``) whose every layer input is
   rescaled by a task- and layer-specific GateNU on ``[P ; ∅(O_ep)]``. The
   personal priors ``P`` are the embeddings of ``ppnet_features``, by default
   the spec's ``feature_sets.extra_embedding`` features (user and item ids in
   the synthetic presets), looked up in their *extra* tables: a second
   embedding of the user/item ids used only by the gates, as the paper feeds
   user/item/author id embeddings to PPNet. Numeric ``ppnet_features`` enter as
   their normalised value.

``γ = gamma`` (2 in the paper) for every GateNU.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import fusion
from tfmdl.layers import pepnet as pepnet_layers
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


@dataclasses.dataclass
class PEPNetConfig(common.BackboneParams):
    """``pepnet`` hyper-parameters (plus the ``backbone_*`` fields)."""
    backbone_hidden: Tuple[int, ...] = ()       # default: towers directly on O_ep
    tower_hidden: Tuple[int, ...] = (128, 64)   # PPNet tower widths
    gamma: float = 2.0
    gate_hidden: int = 0                        # GateNU bottleneck; 0 = the gated width
    scenario_dim: int = 8                       # width of the scenario embedding in E_d
    epnet_features: Tuple[str, ...] = ()        # default: feature_sets.scenario_prior
    ppnet_features: Tuple[str, ...] = ()        # default: feature_sets.extra_embedding

    def __post_init__(self):
        super().__post_init__()
        if not self.tower_hidden or any(u < 1 for u in self.tower_hidden):
            raise ValueError(f"tower_hidden must hold at least one positive width (PPNet gates "
                             f"every tower layer), got {list(self.tower_hidden)}.")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}.")
        if self.gate_hidden < 0:
            raise ValueError(f"gate_hidden must be >= 0 (0 = the gated width), got "
                             f"{self.gate_hidden}.")
        if self.scenario_dim < 1:
            raise ValueError(f"scenario_dim must be >= 1, got {self.scenario_dim}.")


def _check_features(spec: spec_lib.FeatureSpec, key: str, names) -> List[str]:
    known = set(spec.feature_names)
    for name in names:
        if name not in known:
            raise ValueError(f"{key}: {name!r} is not a feature of spec {spec.name!r}.")
    return list(dict.fromkeys(names))


def epnet_features(spec: spec_lib.FeatureSpec, params: PEPNetConfig) -> List[str]:
    """The domain-side features of EPNet (config, else the spec's scenario priors)."""
    if params.epnet_features:
        return _check_features(spec, "epnet_features", params.epnet_features)
    return list(dict.fromkeys(n for names in spec.feature_sets.scenario_prior.values()
                              for n in names))


def ppnet_features(spec: spec_lib.FeatureSpec, params: PEPNetConfig) -> List[str]:
    """The personal priors of PPNet (config, else the spec's extra-embedding features)."""
    names = params.ppnet_features or spec.feature_sets.extra_embedding
    if not names:
        raise ValueError("ppnet_features: empty, and the spec declares no "
                         "feature_sets.extra_embedding to default to; PPNet's gates need "
                         "user/item prior features.")
    return _check_features(spec, "ppnet_features", names)


def _split_like(flat: tf.Tensor, emb: Dict[str, tf.Tensor], names) -> Dict[str, tf.Tensor]:
    """Inverse of `common.concat` over ``names``: ``[B, Σ w]`` back to per-feature shapes."""
    widths = [int(np.prod(emb[n].shape[1:])) for n in names]
    parts = tf.split(flat, widths, axis=-1)
    return {n: tf.reshape(p, [-1] + list(emb[n].shape[1:])) for n, p in zip(names, parts)}


@registry.register("pepnet", PEPNetConfig,
                   paper="PEPNet: parameter and embedding personalized network (Chang et al. "
                         "2023), an MDL and PMTA paper baseline")
def build_pepnet(spec: spec_lib.FeatureSpec, params: PEPNetConfig) -> base.BuiltModel:
    domain_names = epnet_features(spec, params)
    prior_names = ppnet_features(spec, params)
    extra = [n for n in prior_names if spec.feature(n).is_categorical]

    def core(inputs):
        emb = common.embed(spec, inputs, extra_features=extra)
        names = common.feature_names(spec)
        general = common.feature_vector(spec, emb, names)                     # E [B, D]
        m = common.scenario_multi_hot(spec, inputs)
        scenario = keras.layers.Dense(params.scenario_dim, use_bias=False,
                                      name="scenario_embedding")(
            fusion.scenario_share(m))
        domain = common.concat([scenario] + [emb[n] for n in domain_names])
        gate_hidden = params.gate_hidden or None
        o_ep = pepnet_layers.EPNet(gate_hidden, params.gamma, name="epnet")([general, domain])
        personal = dict(emb, **_split_like(o_ep, emb, names))
        h = common.backbone(spec, params, inputs, personal)
        priors = common.feature_vector(
            spec, emb, [f"extra/{n}" if n in extra else n for n in prior_names])
        logits = pepnet_layers.PPNet(len(spec.tasks), list(params.tower_hidden), gate_hidden,
                                     params.gamma, dropout=params.dropout,
                                     name="ppnet")([h, priors, o_ep])
        return common.task_logits(spec, logits), {}

    return base.assemble("pepnet", spec, params, core)
