"""tfmdl benchmark ablation: one row per variant of MDL's Table 2."""

import json
import os

import pytest

from tests.benchmark.conftest import BUDGET, TOLERANCE, common_flags, run_cli
from tfmdl.benchmark import quality


def test_variant_lists_are_data():
    assert list(quality.ABLATIONS["mdl"]) == [
        "full", "no_task_tokens", "task_interaction=mixing", "no_scenario_tokens",
        "no_global_token", "scenario_interaction=mixing"]
    assert list(quality.ABLATIONS["pmta"]) == ["full", "no_tpe", "fusion=mlp", "no_dar",
                                               "layers=1", "width=64", "frozen_tables",
                                               "paper_head"]
    assert quality.ablation_variants("mdl") == quality.ABLATIONS["mdl"]   # default: all
    assert quality.ablation_variants("pmta", ["no_dar"]) == {"no_dar": ("params.no_dar=true",)}
    with pytest.raises(quality.BenchmarkError, match="no ablation list.*mdl, pmta"):
        quality.ablation_variants("dnn")
    with pytest.raises(quality.BenchmarkError, match="not ablations of mdl"):
        quality.ablation_variants("mdl", ["no_tpe"])


def test_every_variant_switch_reaches_the_config_it_trains(tmp_path, bench_data, tiny_configs):
    """What `quality.ablation` hands the trainer per variant (`Suite.experiment_config`):
    the full model's config sized to the budget once, with only that variant's
    switch applied on top (``{feature_tokens}`` resolved to the spec's group count),
    and the shared training profile. The slow test below trains three of them."""
    import yaml

    suite = quality.Suite(str(tmp_path / "out"), bench_data, configs_dir=tiny_configs,
                          tolerance=TOLERANCE, log=lambda _: None)
    groups = len(suite.spec.semantic_groups)
    budget = quality.parse_count(BUDGET)
    for model, variants in quality.ABLATIONS.items():
        job_budget = budget if model == "mdl" else None   # pmta: registry defaults
        full, info = suite.experiment_config(quality.Job("full", model, 0, job_budget))
        if model == "mdl":
            assert info["budget"] == budget and abs(info["count"] / budget - 1) <= TOLERANCE
            assert full["params"]["width"] != 24      # the tiny config's width was scaled
        assert full["training"] == suite.profile.training(0, suite.profile.lr_grid[0])
        for name, overrides in variants.items():
            job = quality.Job(name, model, 0, job_budget, overrides)
            cfg, _ = suite.experiment_config(job)
            want = json.loads(json.dumps({"params": full["params"],
                                          "training": full["training"]}))
            for o in overrides:
                key, value = o.split("=", 1)
                *path, leaf = key.split(".")
                assert path[0] in want, o
                node = want
                for part in path:
                    node = node[part]
                assert leaf in node, o       # a switch names an existing field
                node[leaf] = yaml.safe_load(value.replace(quality.FEATURE_TOKENS, str(groups)))
            assert cfg["params"] == want["params"], name
            assert cfg["training"] == want["training"], name
            assert cfg["model"] == model, name
            if name != "full":
                assert (cfg["params"], cfg["training"]) != (full["params"], full["training"]), name
    assert groups == 6
    # a bad training override fails when the config is built (before any run starts)
    bad = quality.Job("bad", "pmta", 0, None, ("training.embedding_optimizer.learning_rate=fast",))
    with pytest.raises(quality.BenchmarkError,
                       match=r"bad: training\.embedding_optimizer\.learning_rate: expected a number"):
        suite.experiment_config(bad)


@pytest.mark.slow
def test_mdl_ablation_gives_one_row_per_variant(tmp_path, bench_data, tiny_configs):
    """Trains three of the six variants: the suite's plumbing (rows, parameter
    counts, intervals, report), not model quality; the switches of all six are
    checked above without training."""
    from tfmdl.cli import suite_commands

    out = str(tmp_path / "ablation")
    variants = ["full", "no_task_tokens", "no_global_token"]
    argv = ["--model=mdl", f"--variants={','.join(variants)}", "--n_boot=20"]
    argv += common_flags(bench_data, tiny_configs, out)
    assert run_cli(suite_commands.Ablation(), argv) == 0
    summary = json.loads(open(os.path.join(out, "ablation.json")).read())
    names = [r["name"] for r in summary["rows"]]
    assert names == variants
    rows = {r["name"]: r for r in summary["rows"]}
    # the switches reached the trained configs
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs["no_task_tokens"]["overrides"] == ["params.no_task_tokens=true"]
    assert runs["no_global_token"]["overrides"] == ["params.no_global_token=true"]
    assert rows["no_global_token"]["params"]["total"] == rows["full"]["params"]["total"]
    assert rows["no_task_tokens"]["params"]["total"] < rows["full"]["params"]["total"]
    # intervals: the full model against every variant
    assert [(b["a"], b["b"]) for b in summary["bootstrap"]] == [
        ("full", v) for v in names[1:]]
    md = open(os.path.join(out, "ablation.md")).read()
    assert "Ablation of mdl" in md and "| no_task_tokens | " in md
    assert "| full − no_global_token | " in md
    assert os.path.getsize(os.path.join(out, "ablation.png")) > 1000
