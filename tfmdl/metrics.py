"""Offline evaluation metrics for ranking models (pure NumPy, no TensorFlow).

Conventions shared by every function in this module:

* ``labels`` are binary {0, 1}; the value ``-1`` (or NaN) marks a missing label
  and the row is dropped automatically (see :func:`valid_mask`).
* Every metric takes an optional boolean ``mask``; only rows where ``mask`` is
  True *and* the label is present are used.
* Metrics that are undefined on the remaining rows (empty input, a single
  class for the AUC family, zero positive rate for calibration) return ``nan``
  instead of raising.

AUC-type metrics are exact Mann-Whitney rank statistics: a tied
(positive, negative) pair counts 1/2. They run in O(n log n) (one sort).
"""

import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "MISSING_LABEL",
    "BootstrapResult",
    "auc",
    "calibration",
    "format_table_markdown",
    "gauc",
    "entropy",
    "logloss",
    "normalized_entropy",
    "paired_bootstrap_auc",
    "auc_half_width",
    "pos_rate",
    "positive_rate",
    "qauc",
    "slice_table",
    "valid_mask",
    "weighted_auc",
]

MISSING_LABEL = -1
"""Label value that marks a missing label; such rows are excluded everywhere."""

_LOGLOSS_EPS = 1e-7
_AUC_METRICS = ("auc", "gauc", "qauc")
_ALL_METRICS = ("auc", "gauc", "qauc", "logloss", "ne", "calibration", "pos_rate",
                "count", "positives")
# Upper bound on the floats in one (replicates x rows) bootstrap chunk.
_BOOTSTRAP_CHUNK_ELEMS = 2_000_000


# --------------------------------------------------------------------------- #
# Input handling
# --------------------------------------------------------------------------- #
def valid_mask(labels, mask=None) -> np.ndarray:
    """Returns the boolean mask of rows that take part in a metric.

    A row is valid when its label is not missing (``-1`` or NaN) and, if
    ``mask`` is given, ``mask`` is True for it.

    Args:
        labels: Array of labels, any shape.
        mask: Optional boolean array broadcastable to ``labels.shape``.

    Returns:
        Boolean array with the shape of ``labels``.
    """
    labels = np.asarray(labels)
    valid = labels != MISSING_LABEL
    if np.issubdtype(labels.dtype, np.floating):
        valid &= ~np.isnan(labels)
    if mask is not None:
        valid &= np.broadcast_to(np.asarray(mask, dtype=bool), labels.shape)
    return valid


def _prepare(labels, preds=None, mask=None, extra=(), binary=False):
    """Flattens inputs to 1-D, drops invalid rows and validates values.

    Args:
        labels: 1-D labels.
        preds: Optional 1-D predictions of the same length.
        mask: Optional 1-D boolean mask.
        extra: Arrays (first axis of length n) filtered with the same rows.
        binary: Whether the remaining labels must be exactly 0 or 1.

    Returns:
        Tuple ``(labels, preds, *extra)`` restricted to valid rows; labels and
        preds as float64.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    n = labels.shape[0]
    keep = valid_mask(labels, mask)
    y = labels[keep].astype(np.float64)
    if binary and not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("labels must be 0, 1 or -1 (missing).")
    out = [y]
    if preds is not None:
        p = np.asarray(preds, dtype=np.float64)
        if p.shape != (n,):
            raise ValueError(
                f"preds shape {p.shape} does not match labels shape ({n},).")
        p = p[keep]
        if np.isnan(p).any():
            raise ValueError("preds contain NaN.")
        out.append(p)
    for arr in extra:
        arr = np.asarray(arr)
        if arr.shape[0] != n:
            raise ValueError(
                f"array of length {arr.shape[0]} does not match {n} labels.")
        out.append(arr[keep])
    return tuple(out)


def _group_codes(groups) -> Tuple[np.ndarray, int]:
    """Maps group keys to dense int64 codes ``0..G-1``.

    Args:
        groups: ``[n]`` keys (any sortable dtype) or ``[n, k]`` composite keys,
            e.g. (user, query) pairs. Composite keys get one code per distinct
            row, in lexicographic row order, i.e. the inverse of
            ``np.unique(groups, axis=0)``, computed column by column because
            that is several times faster.

    Returns:
        Tuple ``(codes, num_groups)``.
    """
    groups = np.asarray(groups)
    if groups.ndim == 1:
        uniq, inv = np.unique(groups, return_inverse=True)
        return inv.reshape(-1).astype(np.int64), len(uniq)
    if groups.ndim != 2:
        raise ValueError(f"groups must be [n] or [n, k], got {groups.shape}.")
    codes = np.zeros(groups.shape[0], dtype=np.int64)
    num_groups = 1
    for j in range(groups.shape[1]):
        uniq, inv = np.unique(groups[:, j], return_inverse=True)
        # Both factors are < n, so the mixed-radix key cannot overflow int64.
        combined = codes * len(uniq) + inv.reshape(-1)
        uniq, inv = np.unique(combined, return_inverse=True)
        codes, num_groups = inv.reshape(-1).astype(np.int64), len(uniq)
    return codes, num_groups


# --------------------------------------------------------------------------- #
# AUC family
# --------------------------------------------------------------------------- #
def _group_auc_stats(y, p, codes=None, num_groups=1):
    """Exact per-group AUC via tie-averaged ranks (fully vectorised).

    Rows are sorted once by (group, pred). Within a group, a run of equal
    predictions gets the average of the ranks it spans; the Mann-Whitney
    statistic of group g is then ``U_g = R_g - P_g (P_g + 1) / 2`` where
    ``R_g`` is the rank sum of its positives, and ``AUC_g = U_g / (P_g N_g)``.

    Args:
        y: float64 {0, 1} labels, already filtered.
        p: float64 predictions, already filtered.
        codes: Dense int64 group codes, or None for a single group.
        num_groups: Number of groups (length of the returned arrays).

    Returns:
        Tuple ``(auc, num_pos, num_neg)`` of float64 arrays of length
        ``num_groups``; ``auc`` is nan for groups lacking either class.
    """
    n = y.shape[0]
    if codes is None:
        codes = np.zeros(n, dtype=np.int64)
        order = np.argsort(p, kind="stable")
    else:
        order = np.lexsort((p, codes))
    if n == 0:
        nan = np.full(num_groups, np.nan)
        return nan, np.zeros(num_groups), np.zeros(num_groups)
    c = codes[order]
    ps = p[order]
    ys = y[order]

    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(c[1:], c[:-1], out=new_group[1:])
    new_block = new_group.copy()
    new_block[1:] |= ps[1:] != ps[:-1]

    positions = np.arange(n, dtype=np.int64)
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0))
    block_starts = np.flatnonzero(new_block)
    block_ends = np.append(block_starts[1:], n)  # exclusive
    # Block [s, e) holds 1-based global ranks s+1..e; subtract the group start
    # to get ranks within the group.
    block_rank = ((block_starts + block_ends + 1) * 0.5 -
                  group_start[block_starts])
    rank = np.repeat(block_rank, block_ends - block_starts)

    num_pos = np.bincount(c, weights=ys, minlength=num_groups)
    size = np.bincount(c, minlength=num_groups).astype(np.float64)
    num_neg = size - num_pos
    rank_sum = np.bincount(c, weights=rank * ys, minlength=num_groups)
    u_stat = rank_sum - num_pos * (num_pos + 1.0) * 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = u_stat / (num_pos * num_neg)
    aucs[(num_pos == 0) | (num_neg == 0)] = np.nan
    return aucs, num_pos, num_neg


def auc(labels, preds, mask=None) -> float:
    """Exact ROC AUC (Mann-Whitney statistic, tied pairs count 1/2).

    Args:
        labels: ``[n]`` labels in {0, 1}; -1 = missing (dropped).
        preds: ``[n]`` scores (any monotone scale).
        mask: Optional ``[n]`` boolean mask of rows to use.

    Returns:
        AUC as a float, or nan when fewer than two classes are present.
    """
    y, p = _prepare(labels, preds, mask, binary=True)
    return float(_group_auc_stats(y, p)[0][0])


def _group_average_auc(labels, preds, groups, mask, weighted):
    y, p, g = _prepare(labels, preds, mask, extra=(groups,), binary=True)
    if y.shape[0] == 0:
        return float("nan")
    codes, num_groups = _group_codes(g)
    aucs, num_pos, num_neg = _group_auc_stats(y, p, codes, num_groups)
    ok = ~np.isnan(aucs)
    if not ok.any():
        return float("nan")
    if weighted:
        w = (num_pos + num_neg)[ok]
        return float(np.sum(aucs[ok] * w) / np.sum(w))
    return float(np.mean(aucs[ok]))


def gauc(labels, preds, groups, mask=None) -> float:
    """Group AUC: per-user AUC averaged with weights = impressions per user.

    Users whose (valid) labels are all one class are skipped. The weight of a
    user is its number of valid rows after masking.

    Args:
        labels: ``[n]`` labels in {0, 1}; -1 = missing (dropped).
        preds: ``[n]`` scores.
        groups: ``[n]`` user ids (or ``[n, k]`` composite keys).
        mask: Optional ``[n]`` boolean mask.

    Returns:
        GAUC as a float, or nan when no user has both classes.
    """
    return _group_average_auc(labels, preds, groups, mask, weighted=True)


def qauc(labels, preds, groups, mask=None) -> float:
    """Query AUC: per-query AUC averaged unweighted over groups.

    Only groups that contain both classes count.

    Args:
        labels: ``[n]`` labels in {0, 1}; -1 = missing (dropped).
        preds: ``[n]`` scores.
        groups: ``[n]`` query keys (e.g. a query id, or a (user, query) pair
            already combined into one int64), or an ``[n, 2]`` array of
            (user, query) keys; each distinct row is one group (as with
            ``np.unique(axis=0)``).
        mask: Optional ``[n]`` boolean mask.

    Returns:
        QAUC as a float, or nan when no group has both classes.
    """
    return _group_average_auc(labels, preds, groups, mask, weighted=False)


def _sorted_blocks(p):
    """Sort order of ``p`` and start indices of its runs of equal values."""
    order = np.argsort(p, kind="stable")
    ps = p[order]
    new_block = np.empty(ps.shape[0], dtype=bool)
    if ps.shape[0]:
        new_block[0] = True
        np.not_equal(ps[1:], ps[:-1], out=new_block[1:])
    return order, np.flatnonzero(new_block)


def _weighted_auc_sorted(ys, ws, block_starts):
    """Weighted AUC of pre-sorted data, batched over leading weight rows.

    Args:
        ys: ``[n]`` {0, 1} labels in ascending-prediction order.
        ws: ``[..., n]`` non-negative float64 weights in the same order.
        block_starts: Start indices of runs of tied predictions.

    Returns:
        ``[...]`` array of AUCs (nan where a class has zero total weight).
    """
    n = ws.shape[-1]
    num_blocks = block_starts.shape[0]
    pos = ws * ys
    # Per-block positive / total weight. reduceat has a per-segment overhead,
    # so with many blocks differences of cumulative sums are faster.
    if num_blocks == n:  # no ties: every row is its own block
        pos_w, tot_w = pos, ws
    elif num_blocks * 16 <= n:
        pos_w = np.add.reduceat(pos, block_starts, axis=-1)
        tot_w = np.add.reduceat(ws, block_starts, axis=-1)
    else:
        block_last = np.append(block_starts[1:], n) - 1
        pos_w = np.diff(np.cumsum(pos, axis=-1)[..., block_last], axis=-1,
                        prepend=0.0)
        tot_w = np.diff(np.cumsum(ws, axis=-1)[..., block_last], axis=-1,
                        prepend=0.0)
    neg_w = tot_w - pos_w
    # Negatives strictly below each block, plus half of the tied ones.
    neg_below = np.cumsum(neg_w, axis=-1) - 0.5 * neg_w
    num = np.sum(pos_w * neg_below, axis=-1)
    den = np.sum(pos_w, axis=-1) * np.sum(neg_w, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, np.nan)


def weighted_auc(labels, preds, weights, mask=None) -> float:
    """AUC where row i counts ``weights[i]`` times (tied pairs count 1/2).

    With integer weights this equals :func:`auc` on the arrays with each row
    repeated ``weights[i]`` times.

    Args:
        labels: ``[n]`` labels in {0, 1}; -1 = missing (dropped).
        preds: ``[n]`` scores.
        weights: ``[n]`` non-negative weights.
        mask: Optional ``[n]`` boolean mask.

    Returns:
        Weighted AUC, or nan if either class has zero total weight.
    """
    y, p, w = _prepare(labels, preds, mask, extra=(weights,), binary=True)
    w = w.astype(np.float64)
    if np.any(w < 0) or np.isnan(w).any():
        raise ValueError("weights must be non-negative.")
    if y.shape[0] == 0:
        return float("nan")
    order, starts = _sorted_blocks(p)
    return float(_weighted_auc_sorted(y[order], w[order], starts))


# --------------------------------------------------------------------------- #
# Pointwise metrics
# --------------------------------------------------------------------------- #
def logloss(labels, preds, mask=None, eps: float = _LOGLOSS_EPS) -> float:
    """Mean binary cross entropy with predictions clipped to [eps, 1 - eps].

    Args:
        labels: ``[n]`` labels in [0, 1]; -1 = missing (dropped).
        preds: ``[n]`` predicted probabilities.
        mask: Optional ``[n]`` boolean mask.
        eps: Clipping constant.

    Returns:
        Mean log loss, or nan on empty input.
    """
    y, p = _prepare(labels, preds, mask)
    if y.shape[0] == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def positive_rate(labels, mask=None) -> float:
    """Mean label over valid rows (nan on empty input)."""
    (y,) = _prepare(labels, None, mask)
    return float(np.mean(y)) if y.shape[0] else float("nan")


pos_rate = positive_rate


def entropy(rate: float) -> float:
    """Binary entropy ``-(r log r + (1 - r) log(1 - r))`` of a positive rate, in
    nats (the logloss of always predicting ``rate``); nan outside (0, 1)."""
    r = float(rate)
    if not 0.0 < r < 1.0:
        return float("nan")
    return float(-(r * math.log(r) + (1.0 - r) * math.log1p(-r)))


def normalized_entropy(labels, preds, mask=None, eps: float = _LOGLOSS_EPS) -> float:
    """Logloss divided by the entropy of the positive rate (docs/benchmark_suite.md,
    "Normalized entropy"): 1.0 is a model no better than predicting the rate,
    lower is better. Unlike logloss it compares tasks with different rates.

    Returns:
        NE, or nan on empty input or a slice with no positives or no negatives.
    """
    y, p = _prepare(labels, preds, mask)
    if y.shape[0] == 0:
        return float("nan")
    h = entropy(np.mean(y))
    if math.isnan(h):
        return h
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)) / h)


def calibration(labels, preds, mask=None) -> float:
    """Mean prediction divided by positive rate (1.0 = calibrated).

    Returns:
        The ratio, or nan if there are no valid rows or no positives.
    """
    y, p = _prepare(labels, preds, mask)
    if y.shape[0] == 0:
        return float("nan")
    rate = np.mean(y)
    if rate == 0:
        return float("nan")
    return float(np.mean(p) / rate)


def auc_half_width(auc_value: float, positives: int, negatives: int,
                   z: float = 1.96) -> float:
    """Half-width of the normal confidence interval of an AUC (95% for z=1.96).

    The standard error is Hanley & McNeil's (1982) closed form, with
    ``Q1 = A / (2 - A)`` and ``Q2 = 2A^2 / (1 + A)``:
    ``se^2 = (A(1 - A) + (n1 - 1)(Q1 - A^2) + (n0 - 1)(Q2 - A^2)) / (n1 n0)``
    for ``n1`` positives and ``n0`` negatives: the bootstrap's answer without
    resampling (docs/training.md, "Head health").

    Returns:
        ``z * se``, or nan without positives, negatives or a finite AUC.
    """
    a, n1, n0 = float(auc_value), int(positives), int(negatives)
    if not np.isfinite(a) or n1 < 1 or n0 < 1:
        return float("nan")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(z * np.sqrt(max(var, 0.0)))


# --------------------------------------------------------------------------- #
# Scenario x task slicing
# --------------------------------------------------------------------------- #
def _scenario_slices(scenarios, scenario_names, n):
    """Returns ``[(name, row_mask)]`` for each scenario slice."""
    scenarios = np.asarray(scenarios)
    if scenarios.shape[0] != n:
        raise ValueError(
            f"scenarios has {scenarios.shape[0]} rows, expected {n}.")
    if scenarios.ndim == 2:  # multi-hot membership
        num = scenarios.shape[1]
        if scenario_names is None:
            scenario_names = [str(j) for j in range(num)]
        if len(scenario_names) != num:
            raise ValueError(f"{len(scenario_names)} scenario_names for a "
                             f"multi-hot matrix with {num} columns.")
        member = scenarios.astype(bool)
        return [(str(scenario_names[j]), member[:, j]) for j in range(num)]
    if scenarios.ndim != 1:
        raise ValueError(
            f"scenarios must be [n] or [n, S], got {scenarios.shape}.")
    if scenario_names is None:
        id_to_name = {sid: str(sid) for sid in np.unique(scenarios).tolist()}
    elif isinstance(scenario_names, Mapping):
        id_to_name = dict(scenario_names)
    else:
        id_to_name = dict(enumerate(scenario_names))
    unknown = np.setdiff1d(np.unique(scenarios), np.asarray(list(id_to_name)))
    if unknown.size:
        raise ValueError(f"scenario ids {unknown.tolist()} have no name.")
    return [(str(name), scenarios == sid) for sid, name in id_to_name.items()]


def _slice_metrics(y, p, row_mask, metrics, user_ids, query_ids):
    out = {}
    for name in metrics:
        if name == "auc":
            out[name] = auc(y, p, row_mask)
        elif name == "gauc":
            if user_ids is not None:
                out[name] = gauc(y, p, user_ids, row_mask)
        elif name == "qauc":
            if query_ids is not None:
                out[name] = qauc(y, p, query_ids, row_mask)
        elif name == "logloss":
            out[name] = logloss(y, p, row_mask)
        elif name == "ne":
            out[name] = normalized_entropy(y, p, row_mask)
        elif name == "calibration":
            out[name] = calibration(y, p, row_mask)
        elif name == "pos_rate":
            out[name] = positive_rate(y, row_mask)
        elif name == "count":
            out[name] = int(np.count_nonzero(valid_mask(y, row_mask)))
        elif name == "positives":
            out[name] = int(np.count_nonzero(valid_mask(y, row_mask) & (np.asarray(y) == 1)))
    return out


def slice_table(labels,
                preds,
                scenarios,
                task_names: Sequence[str],
                scenario_names: Optional[Union[Sequence[str], Mapping]] = None,
                user_ids=None,
                query_ids=None,
                metrics: Sequence[str] = _ALL_METRICS,
                mask=None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Computes metrics for every (scenario slice, task) cell plus "overall".

    Args:
        labels: ``[n, K]`` labels (``[n]`` is treated as K = 1); -1 = missing,
            excluded per task.
        preds: ``[n, K]`` predictions.
        scenarios: ``[n]`` integer scenario ids, or an ``[n, S]`` multi-hot
            0/1 membership matrix (a row in two scenarios counts in both).
        task_names: K task names.
        scenario_names: For ``[n]`` ids, a sequence indexed by id or a
            ``{id: name}`` mapping (every id present must have a name); for a
            multi-hot matrix, S names. None uses the ids / column indices.
        user_ids: Optional ``[n]`` user ids; enables "gauc".
        query_ids: Optional ``[n]`` or ``[n, 2]`` query keys; enables "qauc".
        metrics: Metric names, a subset of ``("auc", "gauc", "qauc",
            "logloss", "ne", "calibration", "pos_rate", "count", "positives")``
            ("ne": `normalized_entropy`). "gauc"/"qauc"
            are silently left out when their ids are not given.
        mask: Optional ``[n]`` or ``[n, K]`` boolean mask applied everywhere.

    Returns:
        ``{slice_name: {task_name: {metric: value}}}`` with scenario slices in
        order followed by ``"overall"`` (all rows). "count" is the number of
        rows with a valid label for that task in that slice, "positives" those
        with label 1.
    """
    unknown = set(metrics) - set(_ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; "
                         f"choose from {_ALL_METRICS}.")
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.ndim == 1:
        labels = labels[:, None]
    if preds.ndim == 1:
        preds = preds[:, None]
    if labels.shape != preds.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} "
                         "must both be [n, K].")
    n, num_tasks = labels.shape
    if len(task_names) != num_tasks:
        raise ValueError(f"{len(task_names)} task_names for {num_tasks} tasks.")
    if mask is None:
        task_mask = np.ones((n, num_tasks), dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        task_mask = np.broadcast_to(mask if mask.ndim == 2 else mask[:, None],
                                    (n, num_tasks))
    for ids in (user_ids, query_ids):
        if ids is not None and np.asarray(ids).shape[0] != n:
            raise ValueError("user_ids / query_ids must have n rows.")

    slices = _scenario_slices(scenarios, scenario_names, n)
    names = [name for name, _ in slices]
    if "overall" in names or len(set(names)) != len(names):
        raise ValueError(f"scenario names must be unique and not 'overall': "
                         f"{names}.")
    slices.append(("overall", np.ones(n, dtype=bool)))

    table = {}
    for slice_name, rows in slices:
        table[slice_name] = {
            task: _slice_metrics(labels[:, k], preds[:, k],
                                 rows & task_mask[:, k], metrics, user_ids,
                                 query_ids)
            for k, task in enumerate(task_names)
        }
    return table


def _fmt(value, pattern="{:.4f}"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return pattern.format(value)


def format_table_markdown(table: Mapping,
                          metric: str = "auc",
                          oracle: Optional[Mapping] = None,
                          baseline: Optional[float] = None) -> str:
    """Renders one metric of a :func:`slice_table` result as a markdown table.

    Rows are slices (in table order), columns are tasks, values have 4
    decimals; missing or nan values print as ``n/a``. If ``oracle`` (same
    nested shape) is given, each slice gets two extra rows: the oracle values
    and the "% of oracle gap closed",
    ``(model - baseline) / (oracle - baseline) * 100``.

    Args:
        table: Output of :func:`slice_table`.
        metric: Metric to show.
        oracle: Optional table of the same shape from an oracle model.
        baseline: Reference value of a useless model for the gap figure.
            Defaults to 0.5 for auc/gauc/qauc; for other metrics the gap row
            is only shown when a baseline is given.

    Returns:
        Markdown table as a string (no trailing newline).
    """
    if baseline is None and metric in _AUC_METRICS:
        baseline = 0.5
    tasks = []
    for per_task in table.values():
        tasks.extend(t for t in per_task if t not in tasks)

    def value(src, slice_name, task):
        return src.get(slice_name, {}).get(task, {}).get(metric)

    def gap(slice_name, task):
        model = value(table, slice_name, task)
        ref = value(oracle, slice_name, task)
        if model is None or ref is None or ref == baseline:
            return None
        return (model - baseline) / (ref - baseline) * 100.0

    lines = [
        "| " + " | ".join([f"slice ({metric})"] + tasks) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(tasks)) + "|",
    ]
    for slice_name in table:
        rows = [(slice_name,
                 [_fmt(value(table, slice_name, t)) for t in tasks])]
        if oracle is not None:
            rows.append((f"{slice_name} (oracle)",
                         [_fmt(value(oracle, slice_name, t)) for t in tasks]))
            if baseline is not None:
                rows.append((f"{slice_name} (% of oracle gap closed)",
                             [_fmt(gap(slice_name, t), "{:.1f}%")
                              for t in tasks]))
        for label, cells in rows:
            lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Paired bootstrap
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """Result of :func:`paired_bootstrap_auc`.

    Attributes:
        delta: AUC(a) - AUC(b) on the full data.
        low: Lower percentile bound of the (1 - alpha) interval.
        high: Upper percentile bound.
        n_boot: Number of replicates requested.
        p_value: Two-sided bootstrap p-value: 2 x the fraction of replicates
            whose delta does not have the sign of ``delta`` (zero counts as
            not having it), clipped to 1; 1.0 when ``delta == 0``.
        auc_a: AUC of model a on the full data.
        auc_b: AUC of model b on the full data.
        n_valid: Replicates with both classes present (the others are dropped).
        alpha: Significance level used for the interval.
    """

    delta: float
    low: float
    high: float
    n_boot: int
    p_value: float
    auc_a: float
    auc_b: float
    n_valid: int
    alpha: float


def _bootstrap_counts(rng, num_groups, num_reps):
    """``[num_reps, num_groups]`` counts of groups drawn with replacement."""
    draws = rng.integers(0, num_groups, size=(num_reps, num_groups))
    draws += np.arange(num_reps, dtype=draws.dtype)[:, None] * num_groups
    counts = np.bincount(draws.ravel(), minlength=num_reps * num_groups)
    return counts.reshape(num_reps, num_groups).astype(np.float64)


def paired_bootstrap_auc(labels,
                         preds_a,
                         preds_b,
                         groups=None,
                         n_boot: int = 1000,
                         seed: int = 0,
                         alpha: float = 0.05,
                         mask=None) -> BootstrapResult:
    """Paired bootstrap of the AUC difference between two models.

    Each replicate draws groups (users / queries; rows if ``groups`` is None)
    with replacement, the same draw for both models, and computes
    AUC(a) - AUC(b) on the resampled data. Resampled arrays are never built:
    a replicate is a weight vector (how often each row's group was drawn) fed
    to a weighted AUC. Each model is sorted once; replicates are then
    batched weighted cumulative sums over the fixed order.

    Args:
        labels: ``[n]`` labels in {0, 1}; -1 = missing (dropped).
        preds_a: ``[n]`` scores of model a.
        preds_b: ``[n]`` scores of model b.
        groups: Optional ``[n]`` (or ``[n, k]``) cluster keys to resample.
        n_boot: Number of bootstrap replicates.
        seed: Seed of ``np.random.default_rng``; same seed, same result.
        alpha: The interval is the (alpha/2, 1 - alpha/2) percentile range.
        mask: Optional ``[n]`` boolean mask.

    Returns:
        A :class:`BootstrapResult`.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1.")
    extra = (preds_b,) if groups is None else (preds_b, groups)
    y, pa, *rest = _prepare(labels, preds_a, mask, extra=extra, binary=True)
    pb = rest[0].astype(np.float64)
    if pb.ndim != 1:
        raise ValueError(f"preds_b must be 1-D, got shape {pb.shape}.")
    if np.isnan(pb).any():
        raise ValueError("preds contain NaN.")
    n = y.shape[0]
    if groups is None:
        codes, num_groups = np.arange(n, dtype=np.int64), n
    else:
        codes, num_groups = _group_codes(rest[1])

    auc_a = float(_group_auc_stats(y, pa)[0][0])
    auc_b = float(_group_auc_stats(y, pb)[0][0])
    delta = auc_a - auc_b
    if n == 0 or math.isnan(delta):
        return BootstrapResult(float("nan"), float("nan"), float("nan"),
                               n_boot, float("nan"), auc_a, auc_b, 0, alpha)

    order_a, starts_a = _sorted_blocks(pa)
    order_b, starts_b = _sorted_blocks(pb)
    ya, yb = y[order_a], y[order_b]
    codes_a, codes_b = codes[order_a], codes[order_b]

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOTSTRAP_CHUNK_ELEMS // max(n, num_groups)))
    deltas = np.empty(n_boot)
    for lo in range(0, n_boot, chunk):
        reps = min(chunk, n_boot - lo)
        counts = _bootstrap_counts(rng, num_groups, reps)
        # Row weight = how often the row's group was drawn, in sorted order.
        wa = np.take(counts, codes_a, axis=1)
        wb = np.take(counts, codes_b, axis=1)
        deltas[lo:lo + reps] = (_weighted_auc_sorted(ya, wa, starts_a) -
                                _weighted_auc_sorted(yb, wb, starts_b))
    deltas = deltas[~np.isnan(deltas)]
    if deltas.size == 0:
        return BootstrapResult(delta, float("nan"), float("nan"), n_boot,
                               float("nan"), auc_a, auc_b, 0, alpha)

    low, high = np.quantile(deltas, [alpha / 2.0, 1.0 - alpha / 2.0])
    if delta > 0:
        p_value = 2.0 * np.mean(deltas <= 0)
    elif delta < 0:
        p_value = 2.0 * np.mean(deltas >= 0)
    else:
        p_value = 1.0
    return BootstrapResult(delta=delta,
                           low=float(low),
                           high=float(high),
                           n_boot=n_boot,
                           p_value=float(min(1.0, p_value)),
                           auc_a=auc_a,
                           auc_b=auc_b,
                           n_valid=int(deltas.size),
                           alpha=alpha)
