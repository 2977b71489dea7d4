"""PNG charts (matplotlib, the ``plots`` extra): benchmark tables, scaling curves
and attention heatmaps.

matplotlib is imported lazily with the non-interactive Agg backend, so tfmdl
imports without it; `require` raises `PlotsUnavailable` (an ImportError naming
``pip install 'tfmdl[plots]'``) and commands call it before any long work. Every
PNG is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

INSTALL_HINT = "pip install 'tfmdl[plots]'"


class PlotsUnavailable(ImportError):
    """matplotlib is missing; the message says how to install it."""


def require():
    """matplotlib's pyplot on the Agg backend; `PlotsUnavailable` when missing."""
    try:
        import matplotlib  # pylint: disable=g-import-not-at-top
    except ImportError as exc:
        raise PlotsUnavailable(f"PNG charts need matplotlib, which is not installed ({exc}); "
                               f"install the plots extra: {INSTALL_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    return plt


def _save(fig, path: str) -> None:
    plt = require()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def _stat(stat: Optional[Mapping[str, Any]]):
    if not stat or stat.get("mean") is None:
        return math.nan, 0.0
    return stat["mean"], stat.get("std") or 0.0


def quality_chart(summary: Mapping[str, Any], path: str) -> None:
    """Grouped bars per scenario x task cell (one bar per row, std error bars,
    the oracle as a black tick) for each table metric, and the mean "% of the
    oracle gap closed" per row."""
    plt = require()
    cells, rows = summary["cells"], summary["rows"]
    metrics = summary["metrics"]
    oracle = summary.get("oracle")
    width_in = min(20.0, max(8.0, 0.14 * len(cells) * max(len(rows), 2) + 3))
    fig, axes = plt.subplots(len(metrics) + 1, 1, figsize=(width_in, 3.6 * (len(metrics) + 1)),
                             squeeze=False)
    x = np.arange(len(cells))
    bar = 0.8 / max(len(rows), 1)
    colors = plt.get_cmap("tab10")
    for ax, metric in zip(axes[:-1, 0], metrics):
        lo, hi = [], []
        for i, row in enumerate(rows):
            vals = [_stat(row["cells"][metric][c]) for c in cells]
            means = np.array([v[0] for v in vals], dtype=float)
            stds = np.array([v[1] for v in vals], dtype=float)
            ax.bar(x - 0.4 + bar * (i + 0.5), np.nan_to_num(means, nan=0.0), bar, yerr=stds,
                   color=colors(i % 10), label=row["name"], capsize=2)
            lo.extend(means[~np.isnan(means)])
            hi.extend(means[~np.isnan(means)])
        if oracle:
            ref = np.array([_stat(oracle["cells"][metric][c])[0] for c in cells], dtype=float)
            ax.hlines(ref, x - 0.45, x + 0.45, colors="black", linewidth=2, label="oracle")
            hi.extend(ref[~np.isnan(ref)])
        if lo:
            ax.set_ylim(max(0.0, min(lo) - 0.02), min(1.02, max(hi) + 0.02))
        ax.set_xticks(x)
        ax.set_xticklabels(cells, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()} per scenario / task ({summary['preset']})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax = axes[-1, 0]
    metric = metrics[0]
    names = [r["name"] for r in rows]
    gaps = [_stat(r["gap"].get(metric)) for r in rows]
    ax.barh(np.arange(len(rows)), [0.0 if math.isnan(g[0]) else g[0] for g in gaps],
            xerr=[g[1] for g in gaps], color=[colors(i % 10) for i in range(len(rows))])
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel(f"% of the oracle gap closed ({metric.upper()}, over the cells)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def scaling_chart(summary: Mapping[str, Any], path: str) -> None:
    """Mean AUC against parameters and against forward FLOPs per example, one
    line per model (log x axes), the oracle as a dashed line."""
    plt = require()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("tab10")
    for i, model in enumerate(summary["models"]):
        pts = sorted((p for p in summary["points"] if p["model"] == model),
                     key=lambda p: p["params"])
        y = [np.nan if p["mean_auc"] is None else p["mean_auc"] for p in pts]
        for ax, key in zip(axes, ("params", "flops_per_example")):
            ax.plot([p[key] for p in pts], y, marker="o", color=colors(i % 10), label=model)
    for ax, label in zip(axes, ("parameters", "forward FLOPs per example")):
        if summary.get("oracle_mean_auc") is not None:
            ax.axhline(summary["oracle_mean_auc"], color="black", linestyle="--",
                       linewidth=1, label="oracle")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("mean AUC over scenario x task cells")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling on the {summary['preset']} preset")
    fig.tight_layout()
    _save(fig, path)


def attention_heatmaps(maps: Mapping[str, Any], kind: str, path: str) -> None:
    """One panel per (layer, example slice): ``kind`` tokens (rows) x feature
    tokens (columns), the attention averaged over heads and the slice's examples.

    ``maps`` is `tfmdl.attention_maps.average_attention`'s result; ``kind`` is
    "scenario" or "task".
    """
    plt = require()
    layers = [layer for layer in maps["layers"] if kind in maps["maps"][str(layer)]]
    slices = maps["slices"]
    rows_label = maps["token_names"][kind]
    cols_label = maps["feature_tokens"]
    fig, axes = plt.subplots(len(layers), len(slices),
                             figsize=(1.0 + 0.75 * len(cols_label) * len(slices),
                                      0.8 + 0.5 * len(rows_label) * len(layers) + 0.6),
                             squeeze=False, layout="constrained")
    # colour range from the data: attention near 1/T everywhere is the common case,
    # and the differences between tokens are what the picture is for
    values_all = np.concatenate([np.asarray(maps["maps"][str(layer)][kind], dtype=float).ravel()
                                 for layer in layers])
    vmin, vmax = float(np.nanmin(values_all)), float(np.nanmax(values_all))
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 1e-3, vmax + 1e-3
    image = None
    for i, layer in enumerate(layers):
        values = np.asarray(maps["maps"][str(layer)][kind], dtype=float)   # [slices, Q, T]
        for j, name in enumerate(slices):
            ax = axes[i, j]
            image = ax.imshow(values[j], vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
            for (q, t), v in np.ndenumerate(values[j]):
                if not math.isnan(v):
                    ax.text(t, q, f"{v:.3f}", ha="center", va="center", fontsize=6,
                            color="white" if v < vmin + 0.6 * (vmax - vmin) else "black")
            ax.set_xticks(range(len(cols_label)))
            ax.set_xticklabels(cols_label, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(rows_label)))
            ax.set_yticklabels(rows_label if j == 0 else [], fontsize=7)
            count = maps["counts"][j]
            ax.set_title(f"layer {layer}, examples: {name} (n={count:,})", fontsize=8)
    fig.suptitle(f"Domain-aware attention of the {kind} tokens over the feature tokens "
                 f"(mean over heads and examples) — {maps['model']}")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    _save(fig, path)


__all__: Sequence[str] = ("INSTALL_HINT", "PlotsUnavailable", "attention_heatmaps",
                          "quality_chart", "require", "scaling_chart")
