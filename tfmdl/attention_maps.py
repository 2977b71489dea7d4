"""Domain-aware attention of a trained model, averaged for plotting (the MDL
paper's Figures 3 and 4).

`average_attention` streams a data split through ``built.aux_outputs`` (MDL
returns ``layer_<l>/scenario`` ``[B, H, S+1, T]`` and ``layer_<l>/task``
``[B, H, K, T]``: the weights each scenario / task token puts on each feature
token), averages over heads, and averages over the examples of every scenario
(an example in two scenarios counts in both) and over all examples. Rows are
named by the scenario tokens (plus ``global``) or the tasks, columns by the
spec's semantic groups (the feature tokens).

    maps = average_attention(built, "data/feed")
    maps["maps"]["0"]["scenario"]      # [slices, S+1, T]: scenarios, then "all"
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader

_KEY = re.compile(r"layer_(\d+)/(scenario|task)$")


class AttentionUnavailable(ValueError):
    """The model has no attention read-out; the message names the model."""


def attention_keys(built) -> Dict[int, Dict[str, str]]:
    """``{layer: {"scenario"|"task": aux output name}}`` of ``built``'s read-out."""
    # the aux model's outputs are a dict keyed by read-out name (output_names would
    # give the producing layers' names)
    outputs = built.aux.output if built.aux is not None else None
    names = list(outputs) if isinstance(outputs, dict) else []
    out: Dict[int, Dict[str, str]] = {}
    for name in sorted(names):
        match = _KEY.match(name)
        if match:
            out.setdefault(int(match.group(1)), {})[match.group(2)] = name
    return out


def average_attention(built, data: str, split: str = "eval", batch_size: int = 1024,
                      max_examples: Optional[int] = None,
                      where: Optional[str] = None) -> Dict[str, Any]:
    """Attention averaged over heads and examples, per scenario slice (module docstring).

    Args:
      built: a trained `BuiltModel` with an attention read-out.
      data: a data directory (or file pattern) of the model's spec.
      split: the split to read.
      batch_size: examples per forward pass.
      max_examples: stop after this many examples (None: the whole split).
      where: names the model (e.g. its directory) in errors.

    Returns:
      JSON-able ``{"model", "layers", "slices", "counts", "token_names":
      {"scenario", "task"}, "feature_tokens", "maps": {layer: {kind: [slices,
      rows, T] nested lists}}}``.

    Raises:
      AttentionUnavailable: the model returns no attention weights.
    """
    keys = attention_keys(built)
    if not keys:
        raise AttentionUnavailable(
            f"model {built.name!r}{f' in {where}' if where else ''} has no attention "
            f"read-out: plot attention needs a model whose aux outputs (built.aux_outputs) "
            f"return domain-aware attention weights layer_<l>/scenario and layer_<l>/task, "
            f"e.g. mdl with scenario_interaction / task_interaction = daa.")
    spec = built.spec
    scen = spec.scenario
    files = reader.resolve_files(data, split)
    ds = reader.make_dataset(spec, files, batch_size, shuffle=False)
    input_names = [scen.feature] + list(spec.feature_names)
    wanted = [name for layer in sorted(keys) for name in keys[layer].values()]

    @tf.function(reduce_retracing=True)
    def forward(inputs):
        aux = built.aux_outputs(inputs)
        return {name: tf.reduce_mean(tf.cast(aux[name], tf.float32), axis=1) for name in wanted}

    S = scen.count
    sums: Dict[str, np.ndarray] = {}
    counts = np.zeros(S + 1)
    seen = 0
    for features, _, _ in reader.iterate(ds, files):
        inputs = {k: features[k] for k in input_names}
        member = label_stats.multi_hot(features[scen.feature].numpy(), S, np.float64)
        if max_examples is not None and seen + member.shape[0] > max_examples:
            keep = max_examples - seen
            inputs = {k: v[:keep] for k, v in inputs.items()}
            member = member[:keep]
        out = forward(inputs)
        member_all = np.concatenate([member, np.ones((member.shape[0], 1))], axis=1)
        for name, att in out.items():                         # [B, Q, T]
            part = np.einsum("bs,bqt->sqt", member_all, att.numpy().astype(np.float64))
            sums[name] = sums[name] + part if name in sums else part
        counts += member_all.sum(axis=0)
        seen += member.shape[0]
        if max_examples is not None and seen >= max_examples:
            break
    if not seen:
        raise AttentionUnavailable(f"{data}: the {split} split has no examples.")
    maps: Dict[str, Dict[str, List]] = {}
    T = None
    for layer in sorted(keys):
        for kind, name in keys[layer].items():
            mean = sums[name] / np.maximum(counts, 1)[:, None, None]
            mean[counts == 0] = np.nan
            maps.setdefault(str(layer), {})[kind] = mean.tolist()
            T = mean.shape[-1]
    groups = list(spec.semantic_groups)
    feature_tokens = groups if T == len(groups) else [f"token {i}" for i in range(T or 0)]
    return {"model": built.name, "data": data, "split": split, "examples": int(seen),
            "layers": sorted(keys), "slices": list(scen.names) + ["all"],
            "counts": [int(c) for c in counts],
            "token_names": {"scenario": list(scen.names) + ["global"],
                            "task": list(spec.task_names)},
            "feature_tokens": feature_tokens, "maps": maps}


def kinds(maps: Dict[str, Any]) -> Sequence[str]:
    """The token kinds ("scenario", "task") present in ``maps``."""
    present = {k for per_layer in maps["maps"].values() for k in per_layer}
    return [k for k in ("scenario", "task") if k in present]
