"""tfmdl benchmark ablation: one row per variant of MDL's Table 2."""

import json
import os

import pytest

from tests.benchmark.conftest import common_flags, run_cli
from tfmdl.benchmark import quality


def test_variant_lists_are_data():
    assert list(quality.ABLATIONS["mdl"]) == [
        "full", "no_task_tokens", "task_interaction=mixing", "no_scenario_tokens",
        "no_global_token", "scenario_interaction=mixing"]
    assert list(quality.ABLATIONS["pmta"]) == ["full", "no_tpe", "fusion=mlp", "no_dar"]
    assert quality.ablation_variants("pmta", ["no_dar"]) == {"no_dar": ("params.no_dar=true",)}
    with pytest.raises(quality.BenchmarkError, match="no ablation list.*mdl, pmta"):
        quality.ablation_variants("dnn")
    with pytest.raises(quality.BenchmarkError, match="not ablations of mdl"):
        quality.ablation_variants("mdl", ["no_tpe"])


@pytest.mark.slow
def test_mdl_ablation_gives_one_row_per_variant(tmp_path, bench_data, tiny_configs):
    from tfmdl.cli import suite_commands

    out = str(tmp_path / "ablation")
    argv = ["--model=mdl", "--n_boot=20"] + common_flags(bench_data, tiny_configs, out)
    assert run_cli(suite_commands.Ablation(), argv) == 0
    summary = json.loads(open(os.path.join(out, "ablation.json")).read())
    names = [r["name"] for r in summary["rows"]]
    assert names == list(quality.ABLATIONS["mdl"])
    rows = {r["name"]: r for r in summary["rows"]}
    # the switches reached the trained configs
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs["no_task_tokens"]["overrides"] == ["params.no_task_tokens=true"]
    assert rows["no_global_token"]["params"]["total"] == rows["full"]["params"]["total"]
    assert rows["no_task_tokens"]["params"]["total"] < rows["full"]["params"]["total"]
    # intervals: the full model against every variant
    assert [(b["a"], b["b"]) for b in summary["bootstrap"]] == [
        ("full", v) for v in names[1:]]
    md = open(os.path.join(out, "ablation.md")).read()
    assert "Ablation of mdl" in md and "| scenario_interaction=mixing | " in md
    assert "| full − no_global_token | " in md
    assert os.path.getsize(os.path.join(out, "ablation.png")) > 1000
