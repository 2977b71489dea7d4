"""The two single-backbone baselines: ``dnn`` and ``rankmixer`` (docs/design.md 4).

* ``dnn``: ``h = MLP([e_1; …; e_F; m])`` (all feature embeddings and the
  scenario multi-hot ``m``), then one tower per task: ``ŷ_k = σ(T_k(h))``.
* ``rankmixer``: one token per semantic group, ``L`` RankMixer blocks (MDL
  paper 3.2.1, token mixing + per-token FFN), mean over tokens, ``[·; m]``,
  then per-task towers. No multi-scenario or multi-task design: the MDL
  paper's backbone baseline.

Both are also the backbones other models take (`common.backbone`), with the
same layer names, so a PMTA model warm-starts from a trained ``dnn`` or
``rankmixer`` model dir.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


@dataclasses.dataclass
class DNNConfig:
    """``dnn`` hyper-parameters."""
    hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = (64,)
    dropout: float = 0.0

    def __post_init__(self):   # in this config's own names, not the backbone's
        common.check_widths(self, "hidden", "tower_hidden")
        common.check_dropout(self)

    def backbone_params(self) -> common.BackboneParams:
        return common.BackboneParams(backbone="dnn", backbone_hidden=tuple(self.hidden),
                                     dropout=self.dropout)


@dataclasses.dataclass
class RankMixerConfig:
    """``rankmixer`` hyper-parameters (token width ``width`` must divide by the
    number of mixing heads, by default the number of semantic groups)."""
    layers: int = 2
    width: int = 96
    ffn_mult: int = 2
    mixing_heads: int = 0
    tower_hidden: Tuple[int, ...] = (64,)
    dropout: float = 0.0

    def __post_init__(self):   # in this config's own names, not the backbone's
        common.check_min(self, 1, "layers", "width", "ffn_mult")
        common.check_min(self, 0, "mixing_heads")
        common.check_widths(self, "tower_hidden")
        common.check_dropout(self)

    def backbone_params(self) -> common.BackboneParams:
        return common.BackboneParams(backbone="rankmixer", backbone_layers=self.layers,
                                     backbone_width=self.width,
                                     backbone_ffn_mult=self.ffn_mult,
                                     backbone_mixing_heads=self.mixing_heads,
                                     dropout=self.dropout)


def _build(name: str, spec: spec_lib.FeatureSpec, params) -> base.BuiltModel:
    backbone = params.backbone_params()   # validates the fields

    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, backbone, inputs, emb)
        logits = common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble(name, spec, params, core)


@registry.register("dnn", DNNConfig, paper="DNN baseline (MDL and PMTA papers)")
def build_dnn(spec: spec_lib.FeatureSpec, params: DNNConfig) -> base.BuiltModel:
    return _build("dnn", spec, params)


@registry.register("rankmixer", RankMixerConfig,
                   paper="RankMixer (Zhu et al. 2025), MDL's backbone baseline")
def build_rankmixer(spec: spec_lib.FeatureSpec, params: RankMixerConfig) -> base.BuiltModel:
    return _build("rankmixer", spec, params)
