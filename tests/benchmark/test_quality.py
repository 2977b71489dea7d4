"""tfmdl benchmark quality: reports, resume, seeds, and the shared machinery."""

import json
import os
import sys

import numpy as np
import pytest

from tests.benchmark.conftest import BUDGET, TOLERANCE, common_flags, run_cli
from tfmdl.benchmark import quality


def _read(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as fh:
        return fh.read()


@pytest.mark.slow  # shares the quality run (~30 s)
def test_quality_writes_table_with_oracle_gap_and_intervals(quality_run):
    out, _, code = quality_run
    assert code == 0
    md = _read(out, "quality.md")
    summary = json.loads(_read(out, "quality.json"))
    with open(os.path.join(out, "quality.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # the table: oracle row first, then one row per model, one column per cell
    table = [l for l in md.splitlines() if l.startswith("| ")]
    assert table[0].startswith("| model | params | featured/like |")
    assert "% of oracle gap closed" in table[0]
    assert table[1].startswith("| eval positives | | ")
    assert table[2].startswith("| train positives | | ")
    assert len(summary["train_positives"]) == 12
    rows = [l.split(" | ")[0][2:] for l in table[3:7]]
    assert rows == ["oracle", "dnn", "rankmixer", "mdl"]
    assert [r["name"] for r in summary["rows"]] == ["dnn", "rankmixer", "mdl"]
    assert len(summary["cells"]) == 12 and summary["metrics"] == ["auc"]
    # parameter matching: every model within the tolerance of the budget
    for row in summary["rows"]:
        assert abs(row["params"]["total"] / quality.parse_count(BUDGET) - 1) <= TOLERANCE
    # gap closed = (mean - 0.5) / (oracle mean - 0.5) x 100
    oracle_mean = summary["oracle"]["mean"]["auc"]["mean"]
    for row in summary["rows"]:
        mean = row["mean"]["auc"]["mean"]
        assert row["gap"]["auc"]["mean"] == pytest.approx((mean - 0.5) / (oracle_mean - 0.5) * 100,
                                                          rel=0.2, abs=5)
    # MDL against the best baseline (dnn or rankmixer, by mean AUC), with intervals
    best = max((r for r in summary["rows"] if r["model"] != "mdl"),
               key=lambda r: r["mean"]["auc"]["mean"])["name"]
    assert summary["best_baseline"] == best
    (boot,) = summary["bootstrap"]
    assert (boot["a"], boot["b"]) == ("mdl", best) and boot["n_boot"] == 50
    cell = boot["cells"]["featured/finish"]
    assert cell["low"] <= cell["delta"] <= cell["high"]
    assert f"| mdl − {best} | " in md and "Paired bootstrap" in md
    # measurable cells: positives per cell; means only over cells with >= 5
    assert summary["min_positives"] == 5
    keep = summary["measurable"]
    assert keep == [n >= 5 for n in summary["positives"]] and 0 < sum(keep) < 12
    row = summary["rows"][0]
    kept = [row["cells"]["auc"][c]["mean"] for c, k in zip(summary["cells"], keep) if k]
    assert row["mean"]["auc"]["mean"] == pytest.approx(np.mean(kept))
    assert "†" in table[0] and "## Normalized entropy" in md and "## Log loss" in md
    assert 0 < row["mean"]["ne"]["mean"] < 1.5
    # the learning-rate grid: every model at both rates; its row reports the rate
    # whose final weights have the lowest validation logloss
    grid = summary["grid"]
    assert sorted((g["name"], g["learning_rate"]) for g in grid) == sorted(
        (m, lr) for m in ("dnn", "rankmixer", "mdl") for lr in (1e-3, 3e-3))
    for r in summary["rows"]:
        mine = [g for g in grid if g["name"] == r["name"]]
        best_lr = min(mine, key=lambda g: g["val_logloss"])["learning_rate"]
        assert [g["learning_rate"] for g in mine if g["selected"]] == [best_lr]
        assert r["learning_rate"] == best_lr
    for run in summary["runs"]:
        t = run["training"]
        assert 1 <= t["epochs"] <= 3 and t["steps"] >= 1 and t["val_logloss"] > 0
        assert len(t["val_logloss_per_epoch"]) == t["epochs"]
    assert "## Learning-rate grid" in md


@pytest.mark.slow  # shares the quality run (~30 s)
def test_rerun_skips_finished_models_and_seeds_give_mean_std(quality_run, capsys):
    from tfmdl.cli import suite_commands

    out, argv, _ = quality_run
    chosen = {r["name"]: r["learning_rate"] for r in
              json.loads(_read(out, "quality.json"))["rows"]}
    assert run_cli(suite_commands.Quality(), argv) == 0
    text = capsys.readouterr().out
    assert text.count("trained earlier") == 6 and text.count("scored earlier") == 3
    assert "training |" not in text
    # seeds=2 on dnn: seed 0's grid is reused, seed 1 trains at seed 0's chosen rate
    argv2 = [a for a in argv if not a.startswith("--models")] + ["--models=dnn", "--seeds=2"]
    assert run_cli(suite_commands.Quality(), argv2) == 0
    text = capsys.readouterr().out
    lr = f"{chosen['dnn']:g}"
    assert "[1/5] dnn (seed 0, lr 0.001): trained earlier" in text
    assert f"[3/5] dnn (seed 0, lr {lr}): scored earlier" in text
    assert f"[4/5] dnn (seed 1, lr {lr}): training | elapsed" in text and "ETA" in text
    assert "(seed 1, lr" not in text.replace(f"(seed 1, lr {lr})", "")   # no grid for seed 1
    summary = json.loads(_read(out, "quality.json"))
    (row,) = summary["rows"]
    assert row["seeds"] == [0, 1]
    stat = row["mean"]["auc"]
    assert stat["n"] == 2 and stat["std"] is not None and stat["std"] > 0
    md = _read(out, "quality.md")
    assert "| dnn | " in md and " ± " in md and "seeds: 0, 1" in md
    # an output directory copied elsewhere is reused from there: the records' model
    # dirs are where the runs now live, not where they were trained
    import shutil
    moved = out + "-moved"
    shutil.copytree(out, moved)
    argv3 = [a for a in argv2 if not a.startswith("--out")] + [f"--out={moved}"]
    assert run_cli(suite_commands.Quality(), argv3) == 0
    text = capsys.readouterr().out
    assert "training |" not in text and "scoring the eval split" not in text
    runs = json.loads(_read(moved, "quality.json"))["runs"]
    assert runs and all(r["model_dir"].startswith(moved + os.sep) for r in runs)


def _fake(name, model, seed, aucs):
    tasks, scen = ["a", "b"], ["s1", "s2"]
    it = iter(aucs)
    table = {s: {t: {"auc": next(it), "positives": 500} for t in tasks} for s in scen}
    return {"name": name, "model": model, "seed": seed, "tasks": tasks, "scenarios": scen,
            "counts": {"total": 10, "embedding": 4, "dense": 6}, "metrics": table,
            "gap_closed": quality.gap_closed(table, ORACLE)}


ORACLE = {"s1": {"a": {"auc": 0.9}, "b": {"auc": 0.8}}, "s2": {"a": {"auc": 0.7},
                                                               "b": {"auc": None}}}


def test_summarize_mean_std_gap_and_best_baseline():
    runs = [_fake("x", "dnn", 0, [0.7, 0.6, 0.6, 0.5]), _fake("x", "dnn", 1, [0.8, 0.6, 0.6, 0.7])]
    row = quality.summarize_row(runs, ORACLE)
    cell = row["cells"]["auc"]["s1/a"]
    assert cell["mean"] == pytest.approx(0.75)
    assert cell["std"] == pytest.approx(np.std([.7, .8], ddof=1))
    assert row["mean"]["auc"]["mean"] == pytest.approx(np.mean([0.6, 0.675]))
    # gap over the cells the oracle defines (s2/b has no oracle): seed 0 -> (0.6333-.5)/(.8-.5)
    gaps = [(np.mean([.7, .6, .6]) - .5) / .3 * 100, (np.mean([.8, .6, .6]) - .5) / .3 * 100]
    assert row["gap"]["auc"]["mean"] == pytest.approx(np.mean(gaps))
    assert row["gap_cells"]["auc"]["s1/a"]["mean"] == pytest.approx(np.mean([50, 75]))
    rows = [row, quality.summarize_row([_fake("mdl", "mdl", 0, [0.9] * 4)], ORACLE),
            quality.summarize_row([_fake("y", "mmoe", 0, [0.5] * 4)], ORACLE)]
    assert quality.best_baseline(rows) == "x"      # mdl is excluded, x beats y


def test_only_measurable_cells_enter_the_means():
    runs = [_fake("x", "dnn", 0, [0.7, 0.6, 0.9, 0.5])]
    runs[0]["metrics"]["s2"]["a"]["positives"] = 40          # the 0.9 cell: too few
    for cell, ne in zip([c for s in runs[0]["metrics"].values() for c in s.values()],
                        [0.8, 0.9, 0.1, 1.0]):
        cell["ne"] = ne
    assert quality.measurable(runs[0], 100) == [True, True, False, True]
    row = quality.summarize_row(runs, ORACLE, min_positives=100)
    assert row["mean"]["auc"]["mean"] == pytest.approx(np.mean([0.7, 0.6, 0.5]))
    assert row["mean"]["ne"]["mean"] == pytest.approx(np.mean([0.8, 0.9, 1.0]))
    # gap over the measurable cells the oracle defines: s1/a, s1/b
    assert row["gap"]["auc"]["mean"] == pytest.approx((0.65 - 0.5) / (0.85 - 0.5) * 100)
    assert row["cells"]["auc"]["s2/a"]["mean"] == pytest.approx(0.9)   # still shown
    everything = quality.summarize_row(runs, ORACLE, min_positives=0)
    assert everything["mean"]["auc"]["mean"] == pytest.approx(np.mean([0.7, 0.6, 0.9, 0.5]))
    oracle = quality.with_ne({"s": {"a": {"logloss": 0.2, "pos_rate": 0.1}}})
    h = -(0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    assert oracle["s"]["a"]["ne"] == pytest.approx(0.2 / h)


def test_select_rate_and_profile_errors():
    recs = [{"learning_rate": 3e-4, "val_logloss": 0.31}, {"learning_rate": 1e-3,
                                                           "val_logloss": 0.30},
            {"learning_rate": 3e-3, "val_logloss": None}]
    assert quality.select_rate(recs) == 1e-3
    assert quality.select_rate([{"learning_rate": 3e-3, "val_logloss": float("nan")},
                                {"learning_rate": 1e-3, "val_logloss": 9.0}]) == 1e-3
    assert quality.parse_rates(["3e-4", " 1e-3"]) == (3e-4, 1e-3)
    for bad, match in ((["x"], "'x' is not a number"), (["-1"], "positive, finite"),
                       (["inf"], "positive, finite")):
        with pytest.raises(quality.BenchmarkError, match=match):
            quality.parse_rates(bad)
    with pytest.raises(quality.BenchmarkError, match="repeats a rate"):
        quality.Profile(lr_grid=(1e-3, 1e-3))
    with pytest.raises(quality.BenchmarkError, match="validation_fraction=0 leaves nothing"):
        quality.Profile(validation_fraction=0.0)
    one = quality.Profile(validation_fraction=0.0, max_epochs=1, lr_grid=(1e-3,))
    assert "early_stopping" not in one.training(0, 1e-3)
    t = quality.Profile().training(2, 3e-3)
    assert t["early_stopping"] == {"metric": "val_loss", "patience": 1, "mode": "min"}
    assert t["validation_fraction"] == 0.1 and t["epochs"] == 10 and t["seed"] == 2
    assert t["dense_optimizer"]["learning_rate"] == 3e-3


def test_parse_count_and_flag_errors(tiny_configs, bench_data, tmp_path, capsys):
    from tfmdl.cli import suite_commands

    assert quality.parse_count("2M") == 2_000_000 and quality.parse_count("500k") == 500_000
    assert quality.parse_count("1_500") == 1500
    with pytest.raises(quality.BenchmarkError, match="--params='lots'"):
        quality.parse_count("lots")
    code = run_cli(suite_commands.Quality(), ["--models=dnn,mdll"]
                   + common_flags(bench_data, tiny_configs, str(tmp_path)))
    assert code == 2 and "Did you mean 'mdl'" in capsys.readouterr().err
    code = run_cli(suite_commands.Quality(), ["--models=dnn", "--params=1k"]
                   + common_flags(bench_data, tiny_configs, str(tmp_path)))
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach 1,000" in err and "--match=dense" in err


def test_data_is_reused_when_the_config_matches(bench_data, capsys):
    root, name = os.path.split(bench_data)
    request = quality.DataRequest("feed", 2048, 1000, seed=3,
                                  synth=(("users", 2000), ("items", 1000),
                                         ("calibration_rows", 5000)))
    assert request.dirname() == name
    assert quality.prepare_data(request, root, log=print) == bench_data
    assert "reusing" in capsys.readouterr().out


def test_missing_matplotlib_names_the_extra(monkeypatch, tiny_configs, bench_data, tmp_path,
                                            capsys):
    from tfmdl import plots
    from tfmdl.cli import suite_commands

    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib fails
    with pytest.raises(plots.PlotsUnavailable, match=r"pip install 'tfmdl\[plots\]'"):
        plots.require()
    code = run_cli(suite_commands.Quality(), ["--models=dnn"]
                   + common_flags(bench_data, tiny_configs, str(tmp_path)))
    assert code == 2 and "tfmdl[plots]" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(str(tmp_path), "runs"))   # failed before training


def test_search_report_shows_qauc_then_auc_with_the_oracle_row():
    from tfmdl.benchmark import report

    def run(name, model, seed, vals):
        r = _fake(name, model, seed, vals)
        for s in r["metrics"].values():
            for cell in s.values():
                cell["qauc"] = cell["auc"] - 0.05
        return r

    oracle = {s: {t: {"auc": 0.8, "qauc": 0.75} for t in ("a", "b")} for s in ("s1", "s2")}
    rows = [quality.summarize_row([run("dnn", "dnn", 0, [0.6] * 4),
                                   run("dnn", "dnn", 1, [0.7] * 4)], oracle)]
    summary = {"kind": "quality", "preset": "search", "data": "D", "eval_rows": 10,
               "metrics": ["qauc", "auc"], "cells": ["s1/a", "s1/b", "s2/a", "s2/b"],
               "profile_text": "p", "match": "total", "tolerance": 0.05, "budget": 1000,
               "seeds": [0, 1], "best_baseline": None, "bootstrap": [], "runs": [],
               "oracle": quality.oracle_row(oracle, run("x", "x", 0, [0.5] * 4)), "rows": rows}
    md = report.table_markdown(summary, "tfmdl benchmark quality --preset=search")
    assert md.index("## QAUC") < md.index("## AUC")
    assert "| oracle |  | 0.7500 | 0.7500 |" in md
    # qauc 0.55 / 0.65 over two seeds: mean 0.6, gap (0.6-0.5)/(0.75-0.5) = 40%
    assert "| dnn | 10 | 0.6000 ± 0.0707 |" in md and "| 40.0 ± 28.3 |" in md


def test_train_positives_come_from_the_manifest_and_reach_the_table(bench_data, tmp_path):
    """A cell measurable on the eval split can still have a handful of training
    positives; the table says how many (from the data's manifest.json)."""
    from tfmdl.benchmark import report
    from tfmdl.pipelines import spec as spec_lib
    from tfmdl.pipelines import tfrecord

    spec = spec_lib.load_spec(bench_data)
    result = {"scenarios": list(spec.scenario.names), "tasks": list(spec.task_names)}
    got = quality.train_positives(bench_data, spec, result)
    body = tfrecord.read_manifest(bench_data)["label_counts"]["train"]["cells"]
    want = [body[s][t]["positives"] for s, t in quality.cells(result)]
    assert got == want and len(got) == 12 and sum(got) > 0
    # an unknown scenario, or a manifest without counts: no line rather than a wrong one
    assert quality.train_positives(bench_data, spec, dict(result, scenarios=["elsewhere"])) is None
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text("{}")
    assert quality.train_positives(str(bare), spec, result) is None
    lines = report._positives_line({"positives": [100, 2000], "train_positives": [7, 300]})
    assert lines == ["| eval positives | | 100 | 2,000 | | |",
                     "| train positives | | 7 | 300 | | |"]
    assert report._positives_line({"positives": [5]}) == ["| eval positives | | 5 | | |"]


@pytest.mark.slow
def test_pmta_rows_start_from_their_backbone_row(tmp_path, bench_data, tiny_configs):
    """The paper's parameter warm-up is the suite's protocol for PMTA: its backbone
    (rankmixer with PMTA's backbone settings) trains first as a row of its own, and
    PMTA starts from that run; the bootstrap compares PMTA(H) with H."""
    from tfmdl.cli import suite_commands
    from tfmdl.training import model_dir as model_dir_lib

    out = str(tmp_path / "q")
    argv = ["--models=pmta", "--n_boot=20", "--max_epochs=1"]
    argv += common_flags(bench_data, tiny_configs, out)
    assert run_cli(suite_commands.Quality(), argv) == 0
    summary = json.loads(_read(out, "quality.json"))
    backbone = "pmta backbone (rankmixer)"
    assert [r["name"] for r in summary["rows"]] == [backbone, "pmta"]
    rows = {r["name"]: r for r in summary["rows"]}
    assert rows[backbone]["model"] == "rankmixer" and rows[backbone]["backbone_row"]
    runs = {r["name"]: r for r in summary["runs"]}
    src = os.path.dirname(runs[backbone]["model_dir"])
    assert rows["pmta"]["warm_start"] == src
    with open(model_dir_lib.path(runs["pmta"]["model_dir"], model_dir_lib.SUMMARY)) as fh:
        warm = json.load(fh)["warm_start"]
    assert warm["source_model"] == "rankmixer" and warm["restored"] > 0
    # the warm-started run records its validation logloss before its first step
    trained = {n: json.loads(_read(os.path.dirname(runs[n]["model_dir"]), quality.TRAINED_JSON))
               for n in (backbone, "pmta")}
    assert "val_logloss_at_start" not in trained[backbone]
    start = trained["pmta"]["val_logloss_at_start"]
    assert np.isfinite(start) and start > 0 and start != trained["pmta"]["val_logloss"]
    assert [(b["a"], b["b"]) for b in summary["bootstrap"]] == [("pmta", backbone)]
    assert summary["best_baseline"] is None   # the backbone row is not a baseline
    # from scratch: one row, no backbone
    out2 = str(tmp_path / "q2")
    argv2 = ["--models=pmta", "--n_boot=0", "--max_epochs=1", "--nowarm_start"]
    assert run_cli(suite_commands.Quality(), argv2 + common_flags(bench_data, tiny_configs,
                                                                  out2)) == 0
    summary = json.loads(_read(out2, "quality.json"))
    assert [r["name"] for r in summary["rows"]] == ["pmta"]
    assert summary["rows"][0]["warm_start"] is None


def test_named_configs_dir_must_hold_every_models_config(tmp_path, bench_data, tiny_configs):
    """Issue 23 item 10: --configs=C without C/<model>_<preset>.yaml used to fall
    back to the registry's defaults silently; --preset beside --data was ignored."""
    suite = quality.Suite(str(tmp_path / "out"), bench_data, configs_dir=tiny_configs,
                          configs_required=True, log=lambda _: None)
    assert suite.config_path("dnn").endswith("dnn_feed.yaml")
    with pytest.raises(quality.BenchmarkError,
                       match=rf"--configs={tiny_configs}: no mmoe_feed\.yaml .* the preset of "
                             rf".* being 'feed'\); the directory holds dnn_feed\.yaml"):
        suite.base_config("mmoe")
    logged = []
    lenient = quality.Suite(str(tmp_path / "out2"), bench_data, configs_dir=tiny_configs,
                            log=logged.append)
    assert lenient.base_config("mmoe") == ({"model": "mmoe", "params": {}}, "registry defaults")
    lenient.base_config("mmoe")
    assert logged == [f"mmoe: no {tiny_configs}/mmoe_feed.yaml; using the registry's default "
                      f"params"]                                    # said once, not silently
    with pytest.raises(quality.BenchmarkError, match=r"--preset=search, but .* holds the "
                                                     r"'feed' data"):
        quality.Suite(str(tmp_path / "out3"), bench_data, requested_preset="search")
