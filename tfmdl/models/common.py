"""What the zoo's models share on top of the input stage: feature vectors,
backbones and task heads.

Every model starts from ``base.core_inputs(spec)`` (looked-up features) and
`embed` (one `FeatureEmbedding` layer named ``feature_embedding``). A
*backbone* maps those embeddings to one representation ``h`` ``[B, D]``:

* ``dnn``: ``h = MLP([e_1; …; e_F; m])`` — all feature embeddings (sequences
  pooled, numerics as scalars) concatenated with the scenario multi-hot ``m``;
  an empty ``backbone_hidden`` gives the concatenation itself (experts of MMoE
  and friends then sit directly on the embeddings, as in the original papers).
* ``rankmixer``: one token per semantic group (`FeatureTokenizer`), ``L``
  `RankMixerBlock` s, mean over tokens, then ``[·; m]``.
* ``dcnv2``: DCN-V2's cross network on ``x = [e_1; …; e_F; m]``,
  ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` (``tfrs.layers.dcn.Cross``, ``W_l``
  full rank or ``U_l V_l`` of rank ``backbone_projection_dim``), then
  ``h = [x_L; MLP(x)]`` (``backbone_structure: parallel``) or ``h = MLP(x_L)``
  (``stacked``), the MLP of widths ``backbone_hidden`` (`cross_network`).

Models that "accept backbone=dnn|rankmixer|dcnv2" mix `BackboneParams` into
their config and call `backbone`; its layers have fixed names (``backbone_mlp``,
``backbone_tokenizer``, ``backbone_block_<l>``, ``backbone_cross_<l>``) so a
PMTA model can warm-start from the plain ``dnn``, ``rankmixer`` or ``dcnv2``
model with the same settings. Task heads are `TaskTowers` named ``task_towers``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfmdl.layers import ctr
from tfmdl.layers import dnn
from tfmdl.layers import fusion
from tfmdl.layers import inputs as inputs_lib
from tfmdl.layers import mixing
from tfmdl.layers import tokenization
from tfmdl.pipelines import spec as spec_lib

BACKBONES = ("dnn", "rankmixer", "dcnv2")


def concat(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Flattens every tensor to ``[B, n]`` and concatenates along the last axis, in
    the first tensor's dtype (under mixed precision embeddings are bfloat16 while
    the scenario multi-hot is float32)."""
    dtype = tensors[0].dtype
    flat = [tf.reshape(t if t.dtype == dtype else tf.cast(t, dtype),
                       [-1, int(tf.TensorShape(t.shape[1:]).num_elements())])
            for t in tensors]
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=-1)


def embed(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor],
          extra_features: Iterable[str] = (), domain_features: Iterable[str] = (),
          name: str = "feature_embedding") -> Dict[str, tf.Tensor]:
    """Looks every feature up in the shared tables (see `FeatureEmbedding`)."""
    return inputs_lib.FeatureEmbedding(spec, extra_features=tuple(extra_features),
                                       domain_features=tuple(domain_features),
                                       name=name)(inputs)


def feature_names(spec: spec_lib.FeatureSpec) -> List[str]:
    """The model features in spec order (what `feature_vector` concatenates)."""
    return [f.name for f in spec.features]


def feature_vector(spec: spec_lib.FeatureSpec, emb: Dict[str, tf.Tensor],
                   names: Optional[Sequence[str]] = None) -> tf.Tensor:
    """``[e_1; …; e_F]`` ``[B, Σ d_f]`` of ``names`` (default: every feature)."""
    names = feature_names(spec) if names is None else list(names)
    if not names:
        raise ValueError("feature_vector: no features to concatenate.")
    return concat([emb[n] for n in names])


def scenario_multi_hot(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The scenario field as ``[B, S]`` float multi-hot."""
    return dnn.scenario_features(inputs[spec.scenario.feature], spec.scenario.count)


def group_inputs(spec: spec_lib.FeatureSpec, emb: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
    """One ``[B, |g_i|]`` tensor per semantic group (what tokenizers take)."""
    if not spec.semantic_groups:
        raise ValueError("spec.semantic_groups is empty: token-based models (mdl, "
                         "rankmixer) build one token per semantic group; declare "
                         "semantic_groups in the spec.")
    return [concat([emb[n] for n in g]) for g in spec.semantic_groups.values()]


def check_min(cfg, minimum: int, *keys: str) -> None:
    """Raises ValueError naming the first field of ``cfg`` below ``minimum``."""
    for key in keys:
        value = getattr(cfg, key)
        if value < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {value}.")


def check_dropout(cfg, key: str = "dropout") -> None:
    """Raises ValueError unless ``cfg.<key>`` is a rate in [0, 1)."""
    value = getattr(cfg, key)
    if not 0 <= value < 1:
        raise ValueError(f"{key} must be in [0, 1), got {value}.")


def check_widths(cfg, *keys: str, allow_empty: bool = True) -> None:
    """Raises ValueError naming the first field of ``cfg`` that is not a list of
    positive widths (or is empty when ``allow_empty`` is False)."""
    for key in keys:
        value = tuple(getattr(cfg, key))
        if any(u < 1 for u in value) or (not value and not allow_empty):
            need = "" if allow_empty else "a non-empty list of "
            raise ValueError(f"{key} must hold {need}positive widths, got {list(value)}.")


@dataclasses.dataclass
class BackboneParams:
    """Backbone fields mixed into the config of every model that takes one."""
    backbone: Literal["dnn", "rankmixer", "dcnv2"] = "dnn"
    backbone_hidden: Tuple[int, ...] = (256, 128)   # dnn, dcnv2: MLP widths (empty: none)
    backbone_layers: int = 2                         # rankmixer: blocks
    backbone_width: int = 96                         # rankmixer: token width
    backbone_ffn_mult: int = 2                       # rankmixer: PFFN width multiple
    backbone_mixing_heads: int = 0                   # rankmixer: 0 = number of tokens
    backbone_cross_layers: int = 3                   # dcnv2: cross layers L
    backbone_projection_dim: int = 0                 # dcnv2: 0 = full-rank W_l, else rank
    backbone_diag_scale: float = 0.0                 # dcnv2: added to W_l's diagonal
    backbone_structure: Literal["parallel", "stacked"] = "parallel"   # dcnv2
    dropout: float = 0.0

    def __post_init__(self):
        check_min(self, 1, "backbone_layers", "backbone_width", "backbone_ffn_mult",
                  "backbone_cross_layers")
        check_min(self, 0, "backbone_projection_dim")
        check_widths(self, "backbone_hidden")
        if self.backbone_diag_scale < 0:
            raise ValueError(f"backbone_diag_scale must be >= 0, got "
                             f"{self.backbone_diag_scale}.")
        check_dropout(self)


def backbone(spec: spec_lib.FeatureSpec, params: BackboneParams,
             inputs: Dict[str, tf.Tensor], emb: Dict[str, tf.Tensor],
             with_scenario: bool = True) -> tf.Tensor:
    """The shared representation ``h`` ``[B, D]`` (module docstring)."""
    scen = [scenario_multi_hot(spec, inputs)] if with_scenario else []
    if params.backbone in ("dnn", "dcnv2"):
        x = concat([feature_vector(spec, emb)] + scen)
        mlp = backbone_mlp(params)
        if params.backbone == "dnn":
            return mlp(x)
        return cross_network(x, params.backbone_cross_layers, mlp,
                             projection_dim=params.backbone_projection_dim,
                             diag_scale=params.backbone_diag_scale,
                             structure=params.backbone_structure, prefix="backbone_cross")
    groups = group_inputs(spec, emb)
    x = tokenization.FeatureTokenizer([int(g.shape[-1]) for g in groups],
                                      params.backbone_width,
                                      name="backbone_tokenizer")(concat(groups))
    for layer in range(params.backbone_layers):
        x = mixing.RankMixerBlock(ffn_mult=params.backbone_ffn_mult, dropout=params.dropout,
                                  mixing_heads=params.backbone_mixing_heads or None,
                                  name=f"backbone_block_{layer}")(x)
    pooled = tf.reduce_mean(x, axis=1)
    return concat([pooled] + scen) if scen else pooled


def backbone_mlp(params: BackboneParams):
    """The backbone MLP ``backbone_mlp`` of widths ``backbone_hidden`` as a callable,
    the identity when ``backbone_hidden`` is empty."""
    if not params.backbone_hidden:
        return lambda t: t
    return dnn.MLP(list(params.backbone_hidden), dropout=params.dropout, name="backbone_mlp")


def cross_stack(x0: tf.Tensor, layers: int, v2: bool = True, projection_dim: int = 0,
                diag_scale: float = 0.0, prefix: str = "cross") -> tf.Tensor:
    """``L`` cross layers on ``x0`` ``[B, D]``, named ``<prefix>_<l>``: DCN-V2's
    ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` (``tfrs.layers.dcn.Cross``) or, with
    ``v2=False``, DCN's ``x_{l+1} = x_0 (x_l·w_l) + b_l + x_l`` (`CrossV1`)."""
    x = x0
    for layer in range(layers):
        if v2:
            cross = tfrs.layers.dcn.Cross(projection_dim=projection_dim or None,
                                          diag_scale=diag_scale, use_bias=True,
                                          name=f"{prefix}_{layer}")
        else:
            cross = ctr.CrossV1(name=f"{prefix}_{layer}")
        x = cross(x0, x)
    return x


def cross_network(x: tf.Tensor, layers: int, deep, projection_dim: int = 0,
                  diag_scale: float = 0.0, structure: str = "parallel",
                  prefix: str = "cross") -> tf.Tensor:
    """DCN-V2's bottom: ``[x_L; deep(x)]`` (``parallel``) or ``deep(x_L)``
    (``stacked``), ``x_L`` the `cross_stack` on ``x`` and ``deep`` a callable
    (the MLP)."""
    crossed = cross_stack(x, layers, projection_dim=projection_dim, diag_scale=diag_scale,
                          prefix=prefix)
    if structure == "stacked":
        return deep(crossed)
    return concat([crossed, deep(x)])


def task_logits(spec: spec_lib.FeatureSpec, logits: tf.Tensor) -> Dict[str, tf.Tensor]:
    """``[B, K]`` logits -> ``{task: logit [B, 1]}`` in spec task order: what a
    model's core function returns (`tfmdl.models.base.assemble` adds the output
    bias and the sigmoid)."""
    return {t: logits[:, k:k + 1] for k, t in enumerate(spec.task_names)}


def towers(spec: spec_lib.FeatureSpec, h: tf.Tensor, hidden: Sequence[int],
           dropout: float = 0.0, name: str = "task_towers") -> tf.Tensor:
    """Per-task towers on ``h`` (``[B, d]`` shared or ``[B, K, d]``) -> logits ``[B, K]``."""
    return dnn.TaskTowers(len(spec.tasks), list(hidden), dropout=dropout, name=name)(h)


def scenario_task_logits(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor],
                         h: tf.Tensor, hidden: Sequence[int], dropout: float = 0.0,
                         name: str = "scenario_task_towers") -> tf.Tensor:
    """One tower per (scenario, task): logits ``[B, K]`` average the towers of the
    instance's scenarios (one scenario for single-valued fields)."""
    S, K = spec.scenario.count, len(spec.tasks)
    logits = dnn.TaskTowers(S * K, list(hidden), dropout=dropout, name=name)(h)  # [B, S*K]
    return scenario_mean(spec, inputs, tf.reshape(logits, [-1, S, K]))


def scenario_mean(spec: spec_lib.FeatureSpec, inputs: Dict[str, tf.Tensor],
                  per_scenario: tf.Tensor) -> tf.Tensor:
    """``Σ_s m_s x_s / |m|``: ``[B, S, ...]`` -> ``[B, ...]``, the mean over the
    instance's scenarios (``m`` the scenario multi-hot), in ``per_scenario``'s dtype."""
    share = fusion.scenario_share(scenario_multi_hot(spec, inputs), per_scenario.dtype)  # [B, S]
    share = tf.reshape(share, [-1, share.shape[1]] + [1] * (per_scenario.shape.rank - 2))
    # multiply + sum, not tf.einsum: Keras 2 cannot reload a functional graph with a
    # tf.einsum op between layers (its variadic inputs do not deserialize)
    return tf.reduce_sum(share * per_scenario, axis=1)
