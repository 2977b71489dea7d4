"""Classic CTR baselines with per-task heads (docs/design.md 4; PMTA paper 3.1.2).

All five start from the shared input stage. ``x = [e_1; …; e_F; m]`` is the
concatenation of every feature embedding (sequences pooled, numerics as
scalars) and the scenario multi-hot ``m``; FM and CIN see *fields*: every
feature plus the scenario field (``m / |m|``), laid out at one width ``k`` by
`FieldProjection` (fields of another width get their own linear map). Every
model ends in one head per task (`common.towers`); with the default
``tower_hidden: []`` the heads are linear, so task ``k``'s logit is the original
single-task model's output layer with its own weights.

* ``deepfm``: ``logit_k = w_k·x + T_k([MLP(x); FM(V)])``, ``FM(V) = Σ_{i<j} <v_i, v_j>``.
* ``dcn``: ``logit_k = T_k([x_L; MLP(x)])``, ``x_{l+1} = x_0 (x_l·w_l) + b_l + x_l``.
* ``dcnv2``: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` (``tfrs.layers.dcn.Cross``,
  ``W_l`` full or low-rank ``U_l V_l``), stacked with or parallel to an MLP: the
  ``dcnv2`` backbone of `common.backbone` (layers ``backbone_cross_<l>``,
  ``backbone_mlp``), so PMTA with ``backbone: dcnv2`` warm-starts from it.
* ``dcnv2_mt``: DCN-V2's cross network plus a shared backbone (``dnn`` or
  ``rankmixer``, `common.BackboneParams`) as shared bottom; task-specific MLP towers.
* ``xdeepfm``: ``logit_k = w_k·x + T_k([MLP(x); CIN(V)])``.
"""

from __future__ import annotations

import dataclasses
from typing import List, Literal, Tuple

import tensorflow as tf
import tf_keras as keras

from tfmdl.layers import ctr
from tfmdl.layers import dnn
from tfmdl.layers import fusion
from tfmdl.models import base
from tfmdl.models import common
from tfmdl.models import registry
from tfmdl.pipelines import spec as spec_lib


def _check_cross(cfg) -> None:
    common.check_min(cfg, 1, "cross_layers")
    if cfg.projection_dim < 0:
        raise ValueError(f"projection_dim must be >= 0 (0 = full rank), got "
                         f"{cfg.projection_dim}.")
    if cfg.diag_scale < 0:
        raise ValueError(f"diag_scale must be >= 0, got {cfg.diag_scale}.")


def _check_fields(cfg) -> None:
    if cfg.field_dim < 0:
        raise ValueError(f"field_dim must be >= 0 (0 = widest embedding), got "
                         f"{cfg.field_dim}.")


# ------------------------------------------------------------------ configs -- #
@dataclasses.dataclass
class DeepFMConfig:
    """``deepfm`` hyper-parameters."""
    field_dim: int = 0                      # common field width k; 0 = widest embedding
    hidden: Tuple[int, ...] = (256, 128)    # deep MLP
    tower_hidden: Tuple[int, ...] = ()      # empty: linear per-task heads
    dropout: float = 0.0

    def __post_init__(self):
        _check_fields(self)
        common.check_widths(self, "hidden", "tower_hidden")
        common.check_dropout(self)


@dataclasses.dataclass
class DCNConfig:
    """``dcn`` hyper-parameters (cross network v1 parallel to an MLP)."""
    cross_layers: int = 3
    hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = ()
    dropout: float = 0.0

    def __post_init__(self):
        common.check_min(self, 1, "cross_layers")
        common.check_widths(self, "hidden", "tower_hidden")
        common.check_dropout(self)


@dataclasses.dataclass
class DCNv2Config:
    """``dcnv2`` hyper-parameters."""
    SIZE_FIELDS = ("hidden", "tower_hidden", "projection_dim")   # scaled by sizing
    cross_layers: int = 3
    projection_dim: int = 0                 # 0 = full-rank W_l, else rank of U_l V_l
    diag_scale: float = 0.0
    structure: Literal["parallel", "stacked"] = "parallel"
    hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = ()
    dropout: float = 0.0

    def __post_init__(self):
        _check_cross(self)
        common.check_widths(self, "hidden", "tower_hidden")
        common.check_dropout(self)

    def backbone_params(self) -> common.BackboneParams:
        """The same network as `common.backbone`'s ``dcnv2`` (layers ``backbone_cross_<l>``
        and ``backbone_mlp``), so a PMTA with ``backbone: dcnv2`` warm-starts from it."""
        return common.BackboneParams(
            backbone="dcnv2", backbone_hidden=tuple(self.hidden),
            backbone_cross_layers=self.cross_layers, backbone_projection_dim=self.projection_dim,
            backbone_diag_scale=self.diag_scale, backbone_structure=self.structure,
            dropout=self.dropout)


@dataclasses.dataclass
class DCNv2MTConfig(common.BackboneParams):
    """``dcnv2_mt`` hyper-parameters: the cross network's fields plus a backbone
    (``backbone_*``) as the deep part, and task-specific MLP towers.
    ``structure: stacked`` (backbone MLP on the cross output) needs ``backbone: dnn``."""
    SIZE_FIELDS = ("backbone_hidden", "backbone_width", "tower_hidden", "projection_dim")
    cross_layers: int = 3
    projection_dim: int = 0
    diag_scale: float = 0.0
    structure: Literal["parallel", "stacked"] = "parallel"
    tower_hidden: Tuple[int, ...] = (64,)

    def __post_init__(self):
        super().__post_init__()
        _check_cross(self)
        common.check_widths(self, "tower_hidden")
        if self.backbone == "dcnv2":
            raise ValueError("dcnv2_mt has its own cross network (cross_layers, "
                             "projection_dim); its backbone is the deep part beside it and "
                             "must be 'dnn' or 'rankmixer', got 'dcnv2' (use the dcnv2 model "
                             "for one cross network).")
        if self.structure == "stacked" and self.backbone != "dnn":
            raise ValueError(f"structure 'stacked' puts the backbone MLP on the cross "
                             f"network's output and needs backbone 'dnn', got backbone "
                             f"{self.backbone!r}; use structure 'parallel'.")


@dataclasses.dataclass
class XDeepFMConfig:
    """``xdeepfm`` hyper-parameters."""
    SIZE_FIELDS = ("hidden", "tower_hidden", "cin_layers")
    field_dim: int = 0
    cin_layers: Tuple[int, ...] = (64, 64)  # feature maps H_k per CIN layer
    cin_split_half: bool = True
    cin_activation: Literal["linear", "relu"] = "linear"
    hidden: Tuple[int, ...] = (256, 128)
    tower_hidden: Tuple[int, ...] = ()
    dropout: float = 0.0

    def __post_init__(self):
        _check_fields(self)
        common.check_widths(self, "hidden", "tower_hidden")
        common.check_dropout(self)
        if not self.cin_layers:
            raise ValueError("cin_layers must list at least one layer size, got [].")
        common.check_widths(self, "cin_layers")
        if self.cin_split_half and any(h % 2 for h in self.cin_layers[:-1]):
            raise ValueError(f"cin_layers: with cin_split_half every size but the last must "
                             f"be even, got {list(self.cin_layers)}.")


# ------------------------------------------------------------------- inputs -- #
def deep_input(spec: spec_lib.FeatureSpec, inputs, emb) -> tf.Tensor:
    """``x = [e_1; …; e_F; m]`` ``[B, D]``."""
    return common.concat([common.feature_vector(spec, emb),
                          common.scenario_multi_hot(spec, inputs)])


def fields(spec: spec_lib.FeatureSpec, inputs, emb) -> List[tf.Tensor]:
    """One ``[B, w_i]`` tensor per field: every feature (kept sequences masked-mean
    pooled, numerics ``[B, 1]``) and the scenario field ``m / |m|`` ``[B, S]``."""
    out = []
    for f in spec.features:
        t = emb[f.name]
        if t.shape.rank == 3:                               # pooling: none
            mask = emb[f"{f.name}/mask"][..., None]
            t = tf.reduce_sum(t * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        out.append(t)
    m = common.scenario_multi_hot(spec, inputs)
    out.append(fusion.scenario_share(m))
    return out


def field_dim(spec: spec_lib.FeatureSpec, requested: int) -> int:
    """``requested``, or the widest categorical embedding when it is 0."""
    if requested:
        return requested
    dims = [spec.feature(f.table_name).embedding_dim for f in spec.features if f.is_categorical]
    if not dims:
        raise ValueError("field_dim: the spec has no categorical feature to take the field "
                         "width from; set field_dim.")
    return max(dims)


def field_matrix(spec: spec_lib.FeatureSpec, inputs, emb, dim: int) -> tf.Tensor:
    """The field vectors ``V`` ``[B, F + 1, k]`` (features and the scenario field)."""
    parts = fields(spec, inputs, emb)
    return ctr.FieldProjection([int(p.shape[-1]) for p in parts], field_dim(spec, dim),
                               name="field_projection")(common.concat(parts))


def _linear(spec, x) -> tf.Tensor:
    """Per-task first-order term ``w_k·x`` ``[B, K]`` (its bias is the models'
    output bias, `tfmdl.models.base.OutputBias`)."""
    return keras.layers.Dense(len(spec.tasks), use_bias=False, name="linear")(x)


# ------------------------------------------------------------------- models -- #
def _mlp(hidden, dropout, name="deep_mlp"):
    return dnn.MLP(list(hidden), dropout=dropout, name=name)


@registry.register("deepfm", DeepFMConfig,
                   paper="DeepFM (Guo et al. 2017), a PMTA paper baseline")
def build_deepfm(spec: spec_lib.FeatureSpec, params: DeepFMConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        x = deep_input(spec, inputs, emb)
        fm = ctr.FMInteraction(name="fm")(field_matrix(spec, inputs, emb, params.field_dim))
        h = common.concat([_mlp(params.hidden, params.dropout)(x), fm])
        logits = _linear(spec, x) + common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("deepfm", spec, params, core)


@registry.register("dcn", DCNConfig,
                   paper="DCN: Deep & Cross Network (Wang et al. 2017), a PMTA paper baseline")
def build_dcn(spec: spec_lib.FeatureSpec, params: DCNConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        x = deep_input(spec, inputs, emb)
        h = common.concat([common.cross_stack(x, params.cross_layers, v2=False),
                           _mlp(params.hidden, params.dropout)(x)])
        logits = common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("dcn", spec, params, core)


@registry.register("dcnv2", DCNv2Config,
                   paper="DCN-V2 (Wang et al. 2021), a PMTA paper baseline")
def build_dcnv2(spec: spec_lib.FeatureSpec, params: DCNv2Config) -> base.BuiltModel:
    backbone = params.backbone_params()

    def core(inputs):
        emb = common.embed(spec, inputs)
        h = common.backbone(spec, backbone, inputs, emb)
        logits = common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("dcnv2", spec, params, core)


@registry.register("dcnv2_mt", DCNv2MTConfig,
                   paper="DCNv2-MT: DCN-V2 (Wang et al. 2021) shared bottom with task-specific "
                         "towers, a PMTA paper baseline")
def build_dcnv2_mt(spec: spec_lib.FeatureSpec, params: DCNv2MTConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        x = deep_input(spec, inputs, emb)
        if params.structure == "stacked":
            mlp = common.backbone_mlp(params)
        else:
            mlp = lambda _: common.backbone(spec, params, inputs, emb)   # noqa: E731
        h = common.cross_network(x, params.cross_layers, mlp,
                                 projection_dim=params.projection_dim,
                                 diag_scale=params.diag_scale, structure=params.structure)
        logits = common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("dcnv2_mt", spec, params, core)


@registry.register("xdeepfm", XDeepFMConfig,
                   paper="xDeepFM: compressed interaction network (Lian et al. 2018), a PMTA "
                         "paper baseline")
def build_xdeepfm(spec: spec_lib.FeatureSpec, params: XDeepFMConfig) -> base.BuiltModel:
    def core(inputs):
        emb = common.embed(spec, inputs)
        x = deep_input(spec, inputs, emb)
        cin = ctr.CompressedInteraction(list(params.cin_layers), split_half=params.cin_split_half,
                                        activation=params.cin_activation, name="cin")(
            field_matrix(spec, inputs, emb, params.field_dim))
        h = common.concat([_mlp(params.hidden, params.dropout)(x), cin])
        logits = _linear(spec, x) + common.towers(spec, h, params.tower_hidden, params.dropout)
        return common.task_logits(spec, logits), {}

    return base.assemble("xdeepfm", spec, params, core)

