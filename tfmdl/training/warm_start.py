"""Parameter warm-up: start a model from the weights of a trained model directory.

PMTA (docs/design.md 3, PMTA 2.4) is a plug-in on a large backbone; it is trained after
loading the backbone ("parameter warm-up") and the first classifier layers
``C1_k`` from a trained backbone model::

    tfmdl train --config=configs/pmta_feed.yaml --data=data/feed \\
        --model_dir=models/pmta --warm_start_from=models/rankmixer

or ``trainer.prepare(..., warm_start_from="models/rankmixer")``, or directly::

    report = warm_start.warm_start(built, "models/rankmixer")

Matching is by name, within a scope of top-level layers (default
`WARM_START_SCOPE`: the shared embedding tables ``feature_embedding``, the
backbone ``backbone_*`` and the classifiers ``task_towers``): a variable of the
new model is restored when the source model has a top-level layer of the same
name holding a variable of the same name (e.g. ``backbone_block_0`` /
``backbone_block_0/ffn/hidden/kernel:0``, or ``task_towers`` /
``task_towers/layer_0/kernel:0``). Everything else (PMTA's prompts, transformer,
rescaling, domain-specific tables, logits) keeps its initial values. A matched
name with a different shape is an error that names both shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

from absl import logging
import tensorflow as tf
import tf_keras as keras

from tfmdl.models import base
from tfmdl.training import model_dir as model_dir_lib

# top-level layers restored by default: names, or prefixes ending in "_"
WARM_START_SCOPE = ("feature_embedding", "backbone_", "task_towers")
# of those, the layers whose restoration is the point of a warm start
_WARM_START_CORE = ("backbone_", "task_towers")


class WarmStartError(ValueError):
    """The source model dir does not fit the new model; the message says why."""


@dataclasses.dataclass
class WarmStartReport:
    """What a warm start restored (variable names of the new model)."""
    source: str
    source_model: str
    restored: List[str]
    unmatched_target: List[str]    # new-model variables that kept their initial values
    unmatched_source: List[str]    # source variables the new model has no place for

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"warm start from {self.source} ({self.source_model}): restored "
                f"{len(self.restored)} variables, {len(self.unmatched_target)} new variables "
                f"keep their initial values, {len(self.unmatched_source)} source variables "
                f"unused")


def _variables(model: keras.Model) -> Dict[Tuple[str, str], tf.Variable]:
    """``{(top-level layer name, variable name): variable}`` of a (core) model."""
    out = {}
    for layer in model.layers:
        for v in layer.weights:
            out[(layer.name, v.name)] = v
    return out


def _in(name: str, scope: Sequence[str]) -> bool:
    return any(name == p or (p.endswith("_") and name.startswith(p)) for p in scope)


def restore_matching(target: base.BuiltModel, source: base.BuiltModel, source_dir: str = "",
                     scope: Sequence[str] = WARM_START_SCOPE) -> WarmStartReport:
    """Copies the variables of ``source``'s top-level layers in ``scope`` into the
    same-named variables of ``target`` (module docstring). Raises WarmStartError on
    shape mismatches, or when no backbone / ``task_towers`` variable of ``target``
    could be restored."""
    tgt, src = _variables(target.core), _variables(source.core)
    matched = [key for key in tgt if key in src and _in(key[0], scope)]
    mismatched = [f"{name}: source {tuple(src[(l, name)].shape)} vs new "
                  f"{tuple(tgt[(l, name)].shape)}" for (l, name) in matched
                  if tuple(src[(l, name)].shape) != tuple(tgt[(l, name)].shape)]
    if mismatched:
        raise WarmStartError(
            f"warm start from {source_dir or source.name}: {len(mismatched)} variable(s) have "
            f"the same name but a different shape (the backbone / classifier settings "
            f"differ from the source model's, e.g. backbone_width, backbone_hidden or "
            f"classifier_width vs tower_hidden[0]; or a different feature spec): "
            + "; ".join(mismatched))
    if not any(_in(layer, _WARM_START_CORE) for layer, _ in matched):
        raise WarmStartError(
            f"warm start from {source_dir or source.name} ({source.name}): no backbone or "
            f"task_towers variable of the new model ({target.name}) matches one of the source "
            f"model; is the source a model with the same backbone "
            f"({getattr(target.params, 'backbone', '?')})?")
    for key in matched:
        tgt[key].assign(src[key].read_value())
    done = set(matched)
    report = WarmStartReport(
        source=source_dir or source.name, source_model=source.name,
        restored=[name for _, name in matched],
        unmatched_target=[key[1] for key in tgt if key not in done],
        unmatched_source=[key[1] for key in src if key not in done])
    logging.info("%s", report.summary())
    for name in report.restored:
        logging.info("warm start: restored %s", name)
    for name in report.unmatched_target:
        logging.info("warm start: kept the initial value of %s", name)
    for name in report.unmatched_source:
        logging.info("warm start: unused source variable %s", name)
    missing = [name for (layer, name) in tgt
               if _in(layer, _WARM_START_CORE) and (layer, name) not in done]
    if missing:
        logging.warning("warm start: %d backbone/classifier variable(s) of the new model are "
                        "not in the source and keep their initial values: %s",
                        len(missing), ", ".join(missing))
    return report


def warm_start(target: base.BuiltModel, source_dir: str,
               scope: Sequence[str] = WARM_START_SCOPE) -> WarmStartReport:
    """Loads the trained model of ``source_dir`` (`model_dir.load_trained`) and
    restores its matching variables in ``scope`` into ``target`` (see
    `restore_matching`); returns the report, which is also logged.

    Call it outside any strategy scope; ``target`` may live in one (its
    variables are assigned in cross-replica context).
    """
    try:
        source, _ = model_dir_lib.load_trained(source_dir)
    except model_dir_lib.ModelDirError as exc:
        raise WarmStartError(f"--warm_start_from: {exc}") from None
    return restore_matching(target, source, source_dir, scope)
