"""Label counts of a data split: per task, and per (scenario, task) cell.

The output-bias prior (docs/training.md, "Output-bias prior") starts each task's
logit bias at ``log(p / (1 - p))`` with ``p`` the task's positive rate in the
training split, missing labels excluded. The rates come from ``manifest.json``:
``tfmdl data synth`` and ``tfmdl data convert`` record the counts of every split
they write under ``"label_counts"``::

    "label_counts": {"train": {"rows": 200000,
                               "tasks": {"click": {"positives": 9012, "negatives": 190988}},
                               "cells": {"featured": {"click": {"positives": ..., ...}}}}}

A data directory without them (shards written by another tool, or by an older
tfmdl) gets one counting pass over its files (`count_files`).

Counting rules: a label is a positive (1), a negative (0) or missing (-1, or an
absent feature); missing labels count in neither. An example of a multi-valued
scenario field counts in every scenario it belongs to, so cell counts may add
up to more than the task's.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Dict, Mapping, Optional, Sequence, TextIO

import numpy as np

MANIFEST_KEY = "label_counts"


def multi_hot(ids: np.ndarray, num: int, dtype=np.int8) -> np.ndarray:
    """Scenario ids -> ``[n, num]`` membership: ``[n]`` ids, or ``[n, S]`` ids
    padded with -1 (a multi-valued scenario field as the reader yields it)."""
    ids = np.asarray(ids)
    out = np.zeros((ids.shape[0], num), dtype=dtype)
    if ids.ndim == 1:
        ids = ids[:, None]
    rows, cols = np.nonzero(ids >= 0)
    out[rows, ids[rows, cols]] = 1
    return out


class LabelCounts:
    """Running positive/negative counts per task and per (scenario, task) cell."""

    def __init__(self, task_names: Sequence[str], scenario_names: Sequence[str]):
        self.task_names = list(task_names)
        self.scenario_names = list(scenario_names)
        K, S = len(self.task_names), len(self.scenario_names)
        self.rows = 0
        self.positives = np.zeros(K, np.int64)
        self.negatives = np.zeros(K, np.int64)
        self.cell_positives = np.zeros((S, K), np.int64)
        self.cell_negatives = np.zeros((S, K), np.int64)

    def add(self, labels: np.ndarray, scenarios: np.ndarray) -> None:
        """Adds a batch.

        Args:
          labels: ``[n, K]`` in {1, 0, -1} (-1 missing), columns in task order.
          scenarios: ``[n]`` scenario ids in ``[0, S)``, or an ``[n, S]``
            membership mask (multi-valued scenario field).
        """
        labels = np.asarray(labels)
        n, K = labels.shape[0], len(self.task_names)
        if labels.shape != (n, K):
            raise ValueError(f"labels must be [n, {K}] (one column per task), "
                             f"got shape {labels.shape}.")
        scenarios = np.asarray(scenarios)
        if scenarios.ndim == 1:
            mask = multi_hot(scenarios.astype(np.int64), len(self.scenario_names), np.int64)
        else:
            mask = (scenarios > 0).astype(np.int64)
        pos = (labels == 1).astype(np.int64)
        neg = (labels == 0).astype(np.int64)
        self.rows += n
        self.positives += pos.sum(axis=0)
        self.negatives += neg.sum(axis=0)
        self.cell_positives += mask.T @ pos
        self.cell_negatives += mask.T @ neg

    def rates(self) -> Dict[str, float]:
        """``{task: positives / labelled}``; NaN for a task without labels."""
        out = {}
        for k, t in enumerate(self.task_names):
            labelled = int(self.positives[k] + self.negatives[k])
            out[t] = float(self.positives[k]) / labelled if labelled else math.nan
        return out

    def to_dict(self) -> dict:
        def pair(p, n):
            return {"positives": int(p), "negatives": int(n)}

        return {"rows": int(self.rows),
                "tasks": {t: pair(self.positives[k], self.negatives[k])
                          for k, t in enumerate(self.task_names)},
                "cells": {s: {t: pair(self.cell_positives[i, k], self.cell_negatives[i, k])
                              for k, t in enumerate(self.task_names)}
                          for i, s in enumerate(self.scenario_names)}}

    @classmethod
    def from_dict(cls, body: Mapping, task_names: Sequence[str],
                  scenario_names: Sequence[str], where: str = "label_counts") -> "LabelCounts":
        """Reads `to_dict`'s form back; raises ValueError naming ``where`` and the
        task when a task of ``task_names`` is missing or malformed."""
        out = cls(task_names, scenario_names)
        tasks = body.get("tasks") if isinstance(body, Mapping) else None
        if not isinstance(tasks, Mapping):
            raise ValueError(f"{where}: expected a 'tasks' mapping, got {body!r:.80}.")
        for k, t in enumerate(out.task_names):
            entry = tasks.get(t)
            try:
                out.positives[k] = int(entry["positives"])
                out.negatives[k] = int(entry["negatives"])
            except (TypeError, KeyError, ValueError):
                raise ValueError(f"{where}.tasks.{t}: expected {{positives: int, negatives: "
                                 f"int}}, got {entry!r:.80}.") from None
        cells = body.get("cells") or {}
        for i, s in enumerate(out.scenario_names):
            for k, t in enumerate(out.task_names):
                entry = (cells.get(s) or {}).get(t) or {}
                out.cell_positives[i, k] = int(entry.get("positives", 0))
                out.cell_negatives[i, k] = int(entry.get("negatives", 0))
        out.rows = int(body.get("rows", 0))
        return out


def counts_in_manifest(manifest: Optional[dict], split: str, spec) -> Optional[LabelCounts]:
    """The split's recorded counts, or None when the manifest has none for every
    task of ``spec`` (an older or foreign data directory)."""
    body = ((manifest or {}).get(MANIFEST_KEY) or {}).get(split)
    if not body:
        return None
    tasks = body.get("tasks") or {}
    if any(t not in tasks for t in spec.task_names):
        return None
    return LabelCounts.from_dict(body, spec.task_names, spec.scenario.names,
                                 where=f"manifest.json: {MANIFEST_KEY}.{split}")


def count_files(spec, files: Sequence[str], *, source: str = "auto", batch_size: int = 8192,
                total: Optional[int] = None, out: Optional[TextIO] = sys.stderr,
                progress_every: float = 2.0) -> LabelCounts:
    """One pass over ``files`` counting labels (for data without recorded counts).

    Prints a progress line (rows, rate, ETA when ``total`` is known) to ``out``
    every ``progress_every`` seconds; ``out=None`` is silent.
    """
    from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top

    counts = LabelCounts(spec.task_names, spec.scenario.names)
    ds = reader.make_dataset(spec, list(files), batch_size, shuffle=False, repeat=False,
                             source=source)
    scen = spec.scenario
    start = last = time.perf_counter()
    for features, labels, weights in ds:
        y = np.stack([labels[t].numpy() for t in spec.task_names], axis=1)
        w = np.stack([weights[t].numpy() for t in spec.task_names], axis=1)
        y = np.where(w > 0, y, -1).astype(np.int64)
        ids = features[scen.feature].numpy()
        counts.add(y, multi_hot(ids, scen.count) if scen.multi_valued else ids)
        now = time.perf_counter()
        if out is not None and now - last >= progress_every:
            last = now
            out.write(_progress_line(counts.rows, total, now - start) + "\n")
            out.flush()
    if out is not None:
        out.write(_progress_line(counts.rows, total, time.perf_counter() - start,
                                 done=True) + "\n")
        out.flush()
    return counts


def _progress_line(rows: int, total: Optional[int], seconds: float, done: bool = False) -> str:
    rate = rows / max(seconds, 1e-9)
    head = f"counting labels: {rows:,}" + (f" / {total:,}" if total else "") + " rows"
    tail = f", {rate:,.0f} rows/s"
    if done:
        return f"{head}{tail}, done in {seconds:.1f} s"
    if total and rate > 0:
        tail += f", ETA {max(total - rows, 0) / rate:.0f} s"
    return head + tail


def train_counts(spec, data_dir: str, files: Sequence[str], *, source: str = "auto",
                 out: Optional[TextIO] = sys.stderr,
                 counter: Optional[Callable[..., LabelCounts]] = None) -> LabelCounts:
    """The training split's counts: the manifest's when recorded, else one
    counting pass over ``files`` (`count_files`)."""
    from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

    recorded = counts_in_manifest(tfrecord.read_manifest(data_dir), "train", spec)
    if recorded is not None:
        return recorded
    if out is not None:
        out.write(f"{data_dir}: manifest.json records no label counts for the train split; "
                  f"counting them once (for the output-bias prior)\n")
    total = None
    try:
        total = tfrecord.expected_records(list(files))
    except (OSError, ValueError, KeyError):
        total = None
    return (counter or count_files)(spec, files, source=source, total=total, out=out)
