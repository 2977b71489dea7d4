"""Reports of the quality benchmark suite: markdown, JSON and a PNG chart.

`write_table_report` renders a `quality` / `ablation` summary
(`tfmdl.benchmark.quality`) like the papers' Table 1 / Table 2: one row per
model (or variant) and the oracle row, one column per scenario x task cell, the
mean over cells and the mean "% of the oracle gap closed"
(``(AUC - 0.5) / (oracle AUC - 0.5) x 100``); the paired-bootstrap AUC
differences with their 95% intervals; the per-cell gap table; and the runs
(parameter counts, FLOPs, training time). `write_scaling_report` renders a
`scaling` summary (the MDL paper's Figure 2). Values are ``mean ± std`` over
seeds when there are several.
"""

from __future__ import annotations

import datetime
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from tfmdl import plots
from tfmdl.benchmark import quality as quality_lib
from tfmdl.pipelines import tfrecord

_METRIC_NAMES = {"auc": "AUC", "qauc": "QAUC (per-query AUC)", "gauc": "GAUC",
                 "logloss": "Log loss (lower is better)",
                 "ne": "Normalized entropy (log loss / entropy of the cell's positive rate; "
                       "lower is better)"}


def _machine() -> str:
    return f"{os.cpu_count()} cores, {datetime.date.today().isoformat()}"


def _value(stat: Optional[Mapping[str, Any]], pattern: str = "{:.4f}") -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = pattern.format(stat["mean"])
    if stat.get("std") is not None:
        text += " ± " + pattern.format(stat["std"]).lstrip("+")
    return text


def _num(value: Optional[float], pattern: str = "{:+.4f}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else pattern.format(value)


def _header(summary: Mapping[str, Any], title: str, command: Optional[str]) -> List[str]:
    lines = [f"# {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines.append(f"- machine: {_machine()}")
    lines.append(f"- data: {summary['data']} ({summary['preset']} preset, "
                 f"{summary['eval_rows']:,} eval rows)")
    budget = summary.get("budget")
    if budget:
        lines.append(f"- parameter budget: {quality_lib.format_count(budget)} "
                     f"{summary['match']} parameters (±{summary['tolerance']:.0%}, "
                     f"tfmdl.models.sizing scales each config's widths)")
    elif summary["kind"] != "scaling":
        lines.append("- parameter budget: none (configs as written)")
    lines.append(f"- training (every row): {summary['profile_text']}")
    seeds = summary.get("seeds")
    if seeds and len(seeds) > 1:
        lines.append(f"- seeds: {', '.join(map(str, seeds))} (values are mean ± sample std "
                     f"over seeds)")
    return lines


def _cell_heads(summary: Mapping[str, Any]) -> List[str]:
    """Cell column titles; a cell outside the means is marked ``†``."""
    keep = summary.get("measurable") or [True] * len(summary["cells"])
    return [c if k else f"{c} †" for c, k in zip(summary["cells"], keep)]


def _positives_line(summary: Mapping[str, Any]) -> List[str]:
    """Each cell's eval positives, and its train-split positives when known."""
    lines = []
    for key, title in (("positives", "eval positives"), ("train_positives", "train positives")):
        counts = summary.get(key)
        if counts:
            lines.append(f"| {title} | | " + " | ".join(f"{n:,}" for n in counts) + " | | |")
    return lines


def _row_table(summary: Mapping[str, Any], metric: str) -> List[str]:
    cells = summary["cells"]
    loss = metric in quality_lib.LOSS_METRICS
    head = ["model", "params"] + _cell_heads(summary) + \
        ["mean", "epochs · lr" if loss else "% of oracle gap closed"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---:"] + ["---:"] * (len(cells) + 2)) + "|"]
    lines += _positives_line(summary)
    oracle = summary.get("oracle")
    if oracle and metric in oracle["cells"]:
        lines.append("| " + " | ".join(
            ["oracle", ""] + [_value(oracle["cells"][metric][c]) for c in cells]
            + [_value(oracle["mean"][metric]), "" if loss else "100.0"]) + " |")
    for row in summary["rows"]:
        if loss:
            lr = row.get("learning_rate")
            last = f"{_value(row.get('epochs'), '{:.1f}')} · " + \
                ("n/a" if lr is None else f"{lr:g}")
        else:
            last = _value(row["gap"].get(metric), "{:.1f}")
        lines.append("| " + " | ".join(
            [row["name"], quality_lib.format_count(row["params"]["total"])]
            + [_value(row["cells"][metric][c]) for c in cells]
            + [_value(row["mean"][metric]), last]) + " |")
    return lines


def _grid_table(summary: Mapping[str, Any]) -> List[str]:
    grid = summary.get("grid") or []
    if not grid:
        return []
    rates = sorted({g["learning_rate"] for g in grid})
    lines = ["| row | " + " | ".join(f"lr {r:g}" for r in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    by_name: Dict[str, Dict[float, Mapping[str, Any]]] = {}
    for g in grid:
        by_name.setdefault(g["name"], {})[g["learning_rate"]] = g
    for name, per_rate in by_name.items():
        out = []
        for r in rates:
            g = per_rate.get(r)
            if g is None:
                out.append("")
                continue
            text = (f"{_num(g.get('val_logloss'), '{:.5f}')} ({g.get('epochs')} ep, "
                    f"{_num(g.get('train_seconds'), '{:.0f}')} s)")
            out.append(f"**{text}**" if g.get("selected") else text)
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    return lines


def _bootstrap_table(summary: Mapping[str, Any]) -> List[str]:
    cells = summary["cells"]
    lines = ["| comparison | " + " | ".join(_cell_heads(summary)) + " | mean delta |",
             "|---|" + "---:|" * (len(cells) + 1)]
    for b in summary["bootstrap"]:
        out = []
        for c in cells:
            cell = b["cells"][c]
            if cell["delta"] is None:
                out.append("n/a")
            elif cell["low"] is None:
                out.append(f"{_num(cell['delta'])} (no interval)")
            else:
                out.append(f"{_num(cell['delta'])} [{_num(cell['low'])}, "
                           f"{_num(cell['high'])}]")
        lines.append(f"| {b['a']} − {b['b']} | " + " | ".join(out) +
                     f" | {_num(b['mean_delta'])} |")
    return lines


def _gap_table(summary: Mapping[str, Any], metric: str) -> List[str]:
    cells = summary["cells"]
    lines = ["| model | " + " | ".join(_cell_heads(summary)) + " |",
             "|---|" + "---:|" * len(cells)]
    for row in summary["rows"]:
        lines.append(f"| {row['name']} | " + " | ".join(
            _value(row["gap_cells"][metric][c], "{:.1f}") for c in cells) + " |")
    return lines


def _steps(steps: Optional[int]) -> str:
    return "n/a" if steps is None else f"{steps:,}"


def _runs_table(summary: Mapping[str, Any]) -> List[str]:
    lines = ["| row | seed | lr | params (total / embedding / dense) | FLOPs/example | "
             "epochs (best) | steps | validation logloss | train s | config | model dir |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in summary["runs"]:
        c = r["counts"]
        secs = r.get("train_seconds")
        t = r.get("training") or {}
        best = (t.get("early_stopping") or {}).get("best_epoch")
        lr = r.get("learning_rate")
        lines.append(
            f"| {r['name']} | {r['seed']} | {'n/a' if lr is None else f'{lr:g}'} | "
            f"{c['total']:,} / {c['embedding']:,} / "
            f"{c['dense']:,} | {quality_lib.format_count(r.get('flops_per_example'))} | "
            f"{t.get('epochs', 'n/a')}{f' ({best})' if best else ''} | "
            f"{_steps(t.get('steps'))} | "
            f"{_num(t.get('val_logloss'), '{:.5f}')} | "
            f"{'n/a' if secs is None else f'{secs:.0f}'} | {r.get('config_source')} "
            f"{' '.join('--set ' + o for o in r.get('overrides') or [])} | {r['model_dir']} |")
    return lines


def table_markdown(summary: Mapping[str, Any], command: Optional[str] = None) -> str:
    """The markdown of a `quality` or `ablation` summary (module docstring)."""
    if summary["kind"] == "ablation":
        title = f"Ablation of {summary['model']}: {summary['preset']} preset"
    else:
        title = f"Quality benchmark: {summary['preset']} preset"
    lines = _header(summary, title, command)
    if summary["kind"] == "ablation":
        lines.append("- variants: " + "; ".join(
            f"{k} ({' '.join('--set ' + o for o in v) or 'as configured'})"
            for k, v in summary["variants"].items()))
    if summary.get("best_baseline"):
        lines.append(f"- best baseline (highest mean {summary['metrics'][0].upper()} outside "
                     f"{', '.join(quality_lib.FOCUS_MODELS)} and backbone rows): "
                     f"{summary['best_baseline']}")
    lines.append("- oracle: the true click probabilities of the synthetic generator "
                 "(Bayes-optimal); % of oracle gap closed = (mean - 0.5) / (oracle mean - 0.5)"
                 " x 100 over the cells both define (per cell in the gap tables below)")
    if summary.get("measurable") is not None:
        keep = summary["measurable"]
        lines.append(f"- measurable cells: {sum(keep)} of {len(keep)} have at least "
                     f"{summary['min_positives']} eval positives; means and gaps are over "
                     f"those; cells marked † are shown but left out")
    for metric in list(summary["metrics"]) + list(quality_lib.LOSS_METRICS):
        title = _METRIC_NAMES.get(metric, metric)
        lines += ["", f"## {title} per scenario / task", ""]
        lines += _row_table(summary, metric)
    if summary.get("grid") and len({g["learning_rate"] for g in summary["grid"]}) > 1:
        lines += ["", "## Learning-rate grid: validation logloss of the final weights", "",
                  "Mean over tasks, on the held-out training rows (first seed); bold: the "
                  "rate each row reports.", ""]
        lines += _grid_table(summary)
    if summary["bootstrap"]:
        b0 = summary["bootstrap"][0]
        level = int(round((1 - b0["alpha"]) * 100))
        lines += ["", f"## Paired bootstrap: AUC difference and {level}% interval", "",
                  f"{b0['n_boot']} replicates resampling {b0['resampled']} of the eval split, "
                  f"seed-{b0['seed']} runs; an interval that excludes 0 is a significant "
                  f"difference. Cells with few positives have wide intervals.", ""]
        lines += _bootstrap_table(summary)
    for metric in summary["metrics"]:
        lines += ["", f"## % of the oracle gap closed per cell ({metric.upper()})", ""]
        lines += _gap_table(summary, metric)
    lines += ["", "## Runs", ""] + _runs_table(summary)
    return "\n".join(lines) + "\n"


def scaling_markdown(summary: Mapping[str, Any], command: Optional[str] = None) -> str:
    """The markdown of a `scaling` summary."""
    lines = _header(summary, f"Scaling: {', '.join(summary['models'])} on the "
                             f"{summary['preset']} preset", command)
    lines.append(f"- budgets: {', '.join(quality_lib.format_count(b) for b in summary['budgets'])}"
                 f" {summary['match']} parameters (each model sized to each budget)")
    lines.append(f"- metric: {summary['metric']}"
                 + (f"; oracle {summary['oracle_mean_auc']:.4f}"
                    if summary.get("oracle_mean_auc") is not None else ""))
    lines.append("- FLOPs: forward matmul FLOPs per example (tfmdl.models.cost); training "
                 "costs about 3x")
    qauc = any("mean_qauc" in p for p in summary["points"])
    lines += ["", "| model | budget | params | embedding | dense | FLOPs/example | mean AUC | "
              + ("mean QAUC | " if qauc else "") + "% of oracle gap closed | mean NE | lr | "
              "epochs | train s |",
              "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if qauc else "")
              + "---:|---:|---:|---:|---:|"]
    for p in summary["points"]:
        secs = p.get("train_seconds")
        lines.append(
            f"| {p['model']} | {quality_lib.format_count(p['budget'])} | {p['params']:,} | "
            f"{p['embedding_params']:,} | {p['dense_params']:,} | "
            f"{quality_lib.format_count(p['flops_per_example'])} | "
            f"{_num(p['mean_auc'], '{:.4f}')} | "
            + (f"{_num(p.get('mean_qauc'), '{:.4f}')} | " if qauc else "")
            + f"{_num(p['gap_closed'], '{:.1f}')} | {_num(p.get('mean_ne'), '{:.4f}')} | "
            f"{_num(p.get('learning_rate'), '{:g}')} | {p.get('epochs', 'n/a')} | "
            f"{'n/a' if secs is None else f'{secs:.0f}'} |")
    return "\n".join(lines) + "\n"


def write_table_report(summary: Dict[str, Any], out_dir: str,
                       command: Optional[str] = None) -> Dict[str, str]:
    """Writes ``<kind>.md``, ``<kind>.json`` and ``<kind>.png`` into ``out_dir``;
    returns their paths."""
    return _write(summary, out_dir, table_markdown(summary, command), plots.quality_chart,
                  command)


def write_scaling_report(summary: Dict[str, Any], out_dir: str,
                         command: Optional[str] = None) -> Dict[str, str]:
    return _write(summary, out_dir, scaling_markdown(summary, command), plots.scaling_chart,
                  command)


def _write(summary, out_dir, markdown, chart, command) -> Dict[str, str]:
    kind = summary["kind"]
    paths = {ext: os.path.join(out_dir, f"{kind}.{ext}") for ext in ("md", "json", "png")}
    os.makedirs(out_dir, exist_ok=True)
    summary = dict(summary, command=command)
    quality_lib.write_json(paths["json"], summary)
    tfrecord.atomic_write_text(paths["md"], markdown)
    chart(summary, paths["png"])
    return paths
