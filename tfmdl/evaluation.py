"""Offline evaluation of trained models: predictions, metric reports, comparisons.

    from tfmdl import evaluation
    preds = evaluation.predict(built, spec, "data/feed")      # Predictions
    report = evaluation.evaluate("runs/mdl", "data/feed")     # writes eval.json / eval.md
    result = evaluation.compare("runs/a", "runs/b", "data/feed")

* `predict` streams a split through a model and keeps only the arrays the metrics
  need (labels, predictions, scenario membership, user / query keys).
* `evaluate` computes `metrics.slice_table` (every scenario slice x task, plus
  "overall"), attaches the data set's oracle table (``DIR/oracle.json``, written by
  ``tfmdl data synth``) with the "% of the oracle gap closed" for AUC / GAUC /
  QAUC, and writes ``M/eval.json`` and ``M/eval.md``.
* `compare` scores two models on the same rows and reports per-cell AUC deltas
  with paired-bootstrap intervals (resampling queries when the spec has a query
  key, else users, else rows).

Undefined metrics (a slice with one class) are NaN in memory and ``null`` in JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfmdl import metrics
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord

__all__ = [
    "EvaluationError",
    "Predictions",
    "compare",
    "evaluate",
    "format_compare_markdown",
    "format_report_markdown",
    "predict",
]

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
ORACLE_JSON = "oracle.json"
EVAL_METRICS = ("auc", "gauc", "qauc", "logloss", "ne", "calibration", "pos_rate", "count",
                "positives")
GAP_METRICS = ("auc", "gauc", "qauc")


class EvaluationError(ValueError):
    """Evaluation cannot run (e.g. two models with different tasks); the message
    names what differs."""


@dataclasses.dataclass
class Predictions:
    """Model outputs and what the metrics need, one row per example.

    Attributes:
      labels: ``[n, K]`` float32 in {0, 1}; -1 where the label is missing.
      preds: ``[n, K]`` float32 predicted probabilities.
      scenarios: ``[n, S]`` int8 multi-hot scenario membership.
      user_ids: ``[n]`` values of the spec's user key, or None.
      query_ids: ``[n]`` values of the spec's query key, or None.
      task_names: the K task names.
      scenario_names: the S scenario names.
    """
    labels: np.ndarray
    preds: np.ndarray
    scenarios: np.ndarray
    user_ids: Optional[np.ndarray]
    query_ids: Optional[np.ndarray]
    task_names: List[str]
    scenario_names: List[str]

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- #
# Prediction
# --------------------------------------------------------------------------- #
def _resolve_data(data: Union[str, Sequence[str]], split: str,
                  source: str = "auto") -> List[str]:
    """The split's files; a missing data directory is named as such."""
    filesystems.require(data)
    if isinstance(data, str) and not any(ch in data for ch in "*?[") \
            and not tf.io.gfile.exists(data):
        raise reader.DataError(f"data directory {data} does not exist.")
    return reader.resolve_files(data, split, source)


def _key_values(tensor) -> np.ndarray:
    values = tensor.numpy()
    return values.reshape(values.shape[0])


def predict(built, spec: spec_lib.FeatureSpec, data: Union[str, Sequence[str]],
            split: str = "eval", batch_size: int = 4096, source: str = "auto") -> Predictions:
    """Runs ``built.model`` over a data split, streaming.

    Args:
      built: a `BuiltModel` (its ``model`` maps raw spec features to
        ``{task: [B, 1]}`` probabilities).
      spec: the spec the data is read with (the model's spec).
      data: a data directory (with ``split``), a file pattern or a list of files.
      split: "eval" or "train" when ``data`` is a directory.
      batch_size: examples per model call.
      source: "auto", "tfrecord" or "parquet" (`reader.make_dataset`).

    Returns:
      `Predictions` in file order (deterministic).

    Raises:
      reader.DataError: missing data, a corrupt shard (named), or fewer or more
        rows than the split's manifest lists (`reader.check_row_count`).
    """
    files = _resolve_data(data, split, source)
    ds = reader.make_dataset(spec, files, batch_size, shuffle=False, include_passthrough=True,
                             source=source)
    tasks = list(spec.task_names)
    scen = spec.scenario
    input_names = [scen.feature] + list(spec.feature_names)
    model = built.model

    @tf.function(reduce_retracing=True)
    def forward(inputs):
        out = model(inputs, training=False)
        return tf.concat([tf.reshape(tf.cast(out[t], tf.float32), [-1, 1]) for t in tasks],
                         axis=1)

    labels, preds, scenarios, users, queries = [], [], [], [], []
    for features, batch_labels, batch_weights in reader.iterate(ds, files):
        preds.append(forward({k: features[k] for k in input_names}).numpy())
        y = np.stack([batch_labels[t].numpy() for t in tasks], axis=1).astype(np.float32)
        w = np.stack([batch_weights[t].numpy() for t in tasks], axis=1)
        y[w <= 0] = metrics.MISSING_LABEL
        labels.append(y)
        scenarios.append(label_stats.multi_hot(features[scen.feature].numpy(), scen.count))
        if spec.user_key:
            users.append(_key_values(features[spec.user_key]))
        if spec.query_key:
            queries.append(_key_values(features[spec.query_key]))

    reader.check_row_count(files, sum(len(p) for p in preds))

    def cat(parts, width=None, dtype=np.float32):
        if parts:
            return np.concatenate(parts)
        return np.zeros((0,) if width is None else (0, width), dtype=dtype)

    return Predictions(
        labels=cat(labels, len(tasks)),
        preds=cat(preds, len(tasks)),
        scenarios=cat(scenarios, scen.count, np.int8),
        user_ids=cat(users, dtype=np.int64) if spec.user_key else None,
        query_ids=cat(queries, dtype=np.int64) if spec.query_key else None,
        task_names=tasks,
        scenario_names=list(scen.names))


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def json_safe(value: Any) -> Any:
    """NaN / inf -> None and NumPy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _dump_json(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"


def _check_data_spec(spec: spec_lib.FeatureSpec, data, model_dir: str) -> None:
    """Fails clearly when a data directory's spec cannot be scored by the model:
    other scenario names (slices would be mislabelled) or a missing task."""
    if not isinstance(data, str) or not tf.io.gfile.isdir(data):
        return
    path = os.path.join(data, "spec.yaml")
    if not tf.io.gfile.exists(path):
        return
    data_spec = spec_lib.load_spec(path)
    if tuple(data_spec.scenario.names) != tuple(spec.scenario.names):
        raise EvaluationError(
            f"{path} has scenarios {list(data_spec.scenario.names)} but the model in "
            f"{model_dir} was trained on {list(spec.scenario.names)}.")
    data_labels = {t.name: t.label for t in data_spec.tasks}
    missing = [t.name for t in spec.tasks if data_labels.get(t.name) != t.label]
    if missing:
        raise EvaluationError(
            f"{path} has no label for task(s) {missing} of the model in {model_dir} "
            f"(data tasks: {list(data_labels)}).")


def _load_oracle(data) -> Optional[dict]:
    if not isinstance(data, str) or not tf.io.gfile.isdir(data):
        return None
    path = os.path.join(data, ORACLE_JSON)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as fh:
            return json.load(fh)
    except ValueError as exc:
        raise reader.DataError(f"{path} is not valid JSON: {exc}") from None


def _gap_closed(table: Mapping, oracle: Mapping) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``(model - 0.5) / (oracle - 0.5) * 100`` per slice x task for AUC metrics."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for slice_name, per_task in table.items():
        for task, values in per_task.items():
            cell = {}
            for metric in GAP_METRICS:
                if metric not in values:
                    continue
                model = values.get(metric)
                ref = oracle.get(slice_name, {}).get(task, {}).get(metric)
                gap = None
                if model is not None and ref is not None and not (
                        math.isnan(model) or math.isnan(ref)) and ref != 0.5:
                    gap = (model - 0.5) / (ref - 0.5) * 100.0
                cell[metric] = gap
            out.setdefault(slice_name, {})[task] = cell
    return out


def _table_of(p: Predictions, metrics_to_compute=EVAL_METRICS):
    return metrics.slice_table(p.labels, p.preds, p.scenarios, p.task_names,
                               p.scenario_names, user_ids=p.user_ids, query_ids=p.query_ids,
                               metrics=metrics_to_compute)


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #
_SECTIONS = (
    ("auc", "AUC", True),
    ("gauc", "GAUC (per-user AUC, weighted by the user's labelled rows)", True),
    ("qauc", "QAUC (per-query AUC, unweighted mean over queries)", True),
    ("logloss", "Log loss", True),
    ("ne", "Normalized entropy (log loss / entropy of the positive rate; 1 = predicting the "
           "rate, lower is better)", False),
    ("calibration", "Calibration (mean prediction / positive rate; 1 = calibrated)", False),
    ("pos_rate", "Positive rate", False),
    ("count", "Labelled rows", False),
    ("positives", "Positive labels", False),
)


def _has_metric(table: Mapping, metric: str) -> bool:
    return any(metric in values for per_task in table.values() for values in per_task.values())


HEALTH_MIN_POSITIVES = 100
HEALTH_CALIBRATION = (0.5, 2.0)


def head_health(table: Mapping, min_positives: int = HEALTH_MIN_POSITIVES) -> Dict[str, Any]:
    """Which scenario x task heads look broken (docs/training.md, "Head health").

    A cell with at least ``min_positives`` positives is *unhealthy* when its AUC
    does not clear 0.5 by more than its 95% half-width (`metrics.auc_half_width`)
    or its calibration (mean prediction / positive rate) is outside
    `HEALTH_CALIBRATION`; a cell with fewer positives is listed as too small to
    judge. The "overall" slice is left out (its cells pool the scenarios).
    Returns ``{"min_positives", "checked", "unhealthy": [{slice, task,
    positives, auc, half_width, calibration, why}], "too_few_positives":
    [{slice, task, positives}]}``.
    """
    lo, hi = HEALTH_CALIBRATION
    out: Dict[str, Any] = {"min_positives": min_positives, "checked": 0, "unhealthy": [],
                           "too_few_positives": []}
    for slice_name, tasks in table.items():
        if slice_name == "overall":
            continue
        for task, m in tasks.items():
            count, rate = m.get("count"), m.get("pos_rate")
            positives = int(round(count * rate)) if count and rate is not None else 0
            if positives < min_positives:
                out["too_few_positives"].append({"slice": slice_name, "task": task,
                                                 "positives": positives})
                continue
            out["checked"] += 1
            auc, cal = m.get("auc"), m.get("calibration")
            half = (metrics.auc_half_width(auc, positives, int(count) - positives)
                    if auc is not None else float("nan"))
            why = []
            if auc is None or not auc - 0.5 > half:
                why.append(f"AUC {auc if auc is None else round(auc, 4)} does not clear 0.5 "
                           f"by its 95% half-width {half:.4f}")
            if cal is None or not lo <= cal <= hi:
                why.append(f"calibration {cal if cal is None else float(f'{cal:.4g}')} outside "
                           f"[{lo}, {hi}]")
            if why:
                out["unhealthy"].append({"slice": slice_name, "task": task,
                                         "positives": positives, "auc": auc,
                                         "half_width": half, "calibration": cal,
                                         "why": "; ".join(why)})
    return out


def format_health_markdown(health: Mapping) -> List[str]:
    """The "Head health" section's lines."""
    n = health["min_positives"]
    lines = ["", "## Head health", ""]
    if health["unhealthy"]:
        lines.append(f"{len(health['unhealthy'])} of {health['checked']} cells with at "
                     f"least {n} positives look broken:")
        lines += [f"- {c['slice']} / {c['task']} ({c['positives']} positives): {c['why']}"
                  for c in health["unhealthy"]]
    else:
        lines.append(f"All {health['checked']} cells with at least {n} positives have an AUC "
                     f"above 0.5 by more than its 95% half-width and calibration in [{HEALTH_CALIBRATION[0]}, "
                     f"{HEALTH_CALIBRATION[1]}].")
    if health["too_few_positives"]:
        small = ", ".join(f"{c['slice']} / {c['task']} ({c['positives']})"
                          for c in health["too_few_positives"])
        lines.append(f"Too few positives to judge: {small}.")
    return lines


def format_report_markdown(report: Mapping) -> str:
    """The markdown of ``eval.md`` for an `evaluate` report."""
    table = report["metrics"]
    oracle = report.get("oracle")
    lines = [f"# Evaluation: {report['model_dir']}", "",
             f"- model: {report['model']}",
             f"- data: {report['data']} (split {report['split']}, {report['rows']} rows)",
             f"- tasks: {', '.join(report['tasks'])}",
             f"- scenarios: {', '.join(report['scenarios'])}"]
    if report.get("user_key"):
        lines.append(f"- GAUC groups by {report['user_key']}")
    if report.get("query_key"):
        lines.append(f"- QAUC groups by {report['query_key']}")
    if oracle is not None:
        lines.append(f"- oracle: true probabilities of {report.get('oracle_source')} "
                     f"({report.get('oracle_rows')} eval rows); \"% of oracle gap closed\" = "
                     f"(model - 0.5) / (oracle - 0.5) x 100")
    elif report.get("oracle_note"):
        lines.append(f"- oracle: {report['oracle_note']}")
    for metric, title, with_oracle in _SECTIONS:
        if not _has_metric(table, metric):
            continue
        ref = oracle if with_oracle and oracle is not None and _has_metric(oracle, metric) \
            else None
        lines += ["", f"## {title}", "",
                  metrics.format_table_markdown(table, metric=metric, oracle=ref)]
    if report.get("health"):
        lines += format_health_markdown(report["health"])
    return "\n".join(lines) + "\n"


def evaluate(model_dir: str, data_dir: str, split: str = "eval",
             batch_size: int = 4096, source: str = "auto") -> Dict[str, Any]:
    """Evaluates the trained model of ``model_dir`` on a data split.

    Writes ``model_dir/eval.json`` (this report) and ``model_dir/eval.md`` (its
    tables), each atomically.

    Returns:
      The JSON-safe report: ``metrics`` is ``{slice: {task: {metric: value}}}``
      (scenario slices, then "overall"; metrics auc, gauc (with a user key), qauc
      (with a query key), logloss, calibration, pos_rate, count); with an oracle,
      ``oracle`` (same shape) and ``oracle_gap_closed`` (``{slice: {task:
      {auc|gauc|qauc: percent}}}``). Undefined values are None.
    """
    from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

    built, config = model_dir_lib.load_trained(model_dir)
    spec = built.spec
    _check_data_spec(spec, data_dir, model_dir)
    preds = predict(built, spec, data_dir, split=split, batch_size=batch_size, source=source)
    table = _table_of(preds)
    report: Dict[str, Any] = {
        "model_dir": model_dir,
        "model": config.model,
        "data": data_dir,
        "split": split,
        "rows": preds.num_rows,
        "tasks": preds.task_names,
        "scenarios": preds.scenario_names,
        "user_key": spec.user_key,
        "query_key": spec.query_key,
        "metrics": table,
    }
    report["health"] = head_health(json_safe(table))
    oracle_report = _load_oracle(data_dir)
    if oracle_report is not None and oracle_report.get("oracle"):
        scored = oracle_report.get("eval_rows_scored")
        if split == "eval" and scored not in (None, preds.num_rows):
            report["oracle_note"] = (f"{os.path.join(data_dir, ORACLE_JSON)} scores "
                                     f"{scored} eval rows, not the {preds.num_rows} read; "
                                     f"not shown.")
        elif split == "eval":
            oracle = oracle_report["oracle"]
            report["oracle"] = oracle
            report["oracle_source"] = os.path.join(data_dir, ORACLE_JSON)
            report["oracle_rows"] = oracle_report.get("eval_rows_scored")
            report["oracle_gap_closed"] = _gap_closed(table, oracle)
        else:
            report["oracle_note"] = (f"{os.path.join(data_dir, ORACLE_JSON)} scores the eval "
                                     f"split, not {split}; not shown.")
    report = json_safe(report)
    tfrecord.atomic_write_text(os.path.join(model_dir, EVAL_JSON), _dump_json(report))
    tfrecord.atomic_write_text(os.path.join(model_dir, EVAL_MD), format_report_markdown(report))
    return report


# --------------------------------------------------------------------------- #
# compare
# --------------------------------------------------------------------------- #
def _check_same_heads(spec_a, spec_b, dir_a: str, dir_b: str) -> None:
    problems = []
    if list(spec_a.task_names) != list(spec_b.task_names):
        problems.append(f"tasks: {dir_a} has {spec_a.task_names}, {dir_b} has "
                        f"{spec_b.task_names}")
    if tuple(spec_a.scenario.names) != tuple(spec_b.scenario.names):
        problems.append(f"scenarios: {dir_a} has {list(spec_a.scenario.names)}, {dir_b} has "
                        f"{list(spec_b.scenario.names)}")
    labels_a = [t.label for t in spec_a.tasks]
    labels_b = [t.label for t in spec_b.tasks]
    if not problems and labels_a != labels_b:
        problems.append(f"label fields: {dir_a} reads {labels_a}, {dir_b} reads {labels_b}")
    if spec_a.scenario.feature != spec_b.scenario.feature:
        problems.append(f"scenario field: {dir_a} reads {spec_a.scenario.feature}, {dir_b} "
                        f"reads {spec_b.scenario.feature}")
    if problems:
        raise EvaluationError("the two models were not trained on the same tasks and "
                              "scenarios, so they cannot be compared: " + "; ".join(problems))


def compare(model_dir_a: str, model_dir_b: str, data_dir: str, split: str = "eval",
            n_boot: int = 1000, seed: int = 0, batch_size: int = 4096,
            alpha: float = 0.05) -> Dict[str, Any]:
    """Compares the AUC of two trained models on the same rows.

    For every scenario slice (and "overall") x task: AUC of a, AUC of b, delta =
    a - b, the (1 - alpha) paired-bootstrap interval of delta and its p-value
    (`metrics.paired_bootstrap_auc`). The bootstrap resamples queries when the spec
    has a query key, else users, else rows; rows without a label are skipped.

    Returns:
      JSON-safe ``{"a", "b", "data", "split", "rows", "n_boot", "seed", "alpha",
      "resampled", "table": {slice: {task: {auc_a, auc_b, delta, low, high,
      p_value, n_valid, count, positives}}}}``. With few positives in a cell the
      interval is degenerate (replicates without a positive are dropped); the
      markdown shows the positives next to the interval for that reason.
    """
    from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

    built_a, _ = model_dir_lib.load_trained(model_dir_a)
    built_b, _ = model_dir_lib.load_trained(model_dir_b)
    _check_same_heads(built_a.spec, built_b.spec, model_dir_a, model_dir_b)
    _check_data_spec(built_a.spec, data_dir, model_dir_a)
    _check_data_spec(built_b.spec, data_dir, model_dir_b)
    pa = predict(built_a, built_a.spec, data_dir, split=split, batch_size=batch_size)
    pb = predict(built_b, built_b.spec, data_dir, split=split, batch_size=batch_size)
    if pa.labels.shape != pb.labels.shape or not np.array_equal(pa.labels, pb.labels):
        raise EvaluationError(f"{model_dir_a} and {model_dir_b} read different rows or labels "
                              f"from {data_dir}; check that their specs match.")
    return _compare_predictions(pa, pb, n_boot=n_boot, seed=seed, alpha=alpha,
                                query_key=built_a.spec.query_key,
                                user_key=built_a.spec.user_key,
                                extra={"a": model_dir_a, "b": model_dir_b, "data": data_dir,
                                       "split": split})


def _compare_predictions(pa: Predictions, pb: Predictions, n_boot: int, seed: int,
                         alpha: float, query_key: Optional[str], user_key: Optional[str],
                         extra: Mapping[str, Any]) -> Dict[str, Any]:
    if pa.query_ids is not None:
        groups, resampled = pa.query_ids, f"queries ({query_key})"
    elif pa.user_ids is not None:
        groups, resampled = pa.user_ids, f"users ({user_key})"
    else:
        groups, resampled = None, "rows"
    slices = [(name, pa.scenarios[:, j].astype(bool))
              for j, name in enumerate(pa.scenario_names)]
    slices.append(("overall", np.ones(pa.num_rows, dtype=bool)))
    table: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for slice_name, rows in slices:
        table[slice_name] = {}
        for k, task in enumerate(pa.task_names):
            y = pa.labels[:, k]
            res = metrics.paired_bootstrap_auc(y, pa.preds[:, k], pb.preds[:, k], groups=groups,
                                               n_boot=n_boot, seed=seed, alpha=alpha, mask=rows)
            table[slice_name][task] = {
                "auc_a": res.auc_a, "auc_b": res.auc_b, "delta": res.delta, "low": res.low,
                "high": res.high, "p_value": res.p_value, "n_valid": res.n_valid,
                "count": int(np.count_nonzero(metrics.valid_mask(y, rows))),
                "positives": int(np.count_nonzero(metrics.valid_mask(y, rows) & (y == 1)))}
    out = dict(extra)
    out.update(rows=pa.num_rows, n_boot=n_boot, seed=seed, alpha=alpha, resampled=resampled,
               tasks=pa.task_names, scenarios=pa.scenario_names, table=table)
    return json_safe(out)


def _num(value, pattern="{:.4f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else pattern.format(value)


def format_compare_markdown(result: Mapping) -> str:
    """Markdown of a `compare` result: one row per slice x task."""
    level = int(round((1 - result.get("alpha", 0.05)) * 100))
    lines = [f"# Comparison: a = {result['a']}, b = {result['b']}", "",
             f"- data: {result['data']} (split {result['split']}, {result['rows']} rows)",
             f"- {level}% paired-bootstrap intervals of delta = AUC(a) - AUC(b), "
             f"{result['n_boot']} replicates resampling {result['resampled']}, "
             f"seed {result['seed']}", "",
             f"| slice | task | AUC a | AUC b | delta | {level}% interval | p | rows | "
             f"positives |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for slice_name, per_task in result["table"].items():
        for task, cell in per_task.items():
            interval = (f"[{_num(cell['low'], '{:+.4f}')}, {_num(cell['high'], '{:+.4f}')}]"
                        if cell["low"] is not None else "n/a")
            lines.append(f"| {slice_name} | {task} | {_num(cell['auc_a'])} | "
                         f"{_num(cell['auc_b'])} | {_num(cell['delta'], '{:+.4f}')} | "
                         f"{interval} | {_num(cell['p_value'], '{:.3f}')} | {cell['count']} | "
                         f"{cell['positives']} |")
    return "\n".join(lines) + "\n"


def write_json(path: str, value: Any) -> None:
    """Writes JSON-safe ``value`` to ``path`` atomically."""
    tfrecord.atomic_write_text(path, _dump_json(value))
