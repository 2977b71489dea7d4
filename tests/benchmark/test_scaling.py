"""tfmdl benchmark scaling: a model at several parameter budgets."""

import json
import os

import pytest

from tests.benchmark.conftest import common_flags, run_cli


@pytest.mark.slow
def test_scaling_curve_on_dnn(tmp_path, bench_data, tiny_configs):
    from tfmdl.cli import suite_commands

    out = str(tmp_path / "scaling")
    argv = ["--models=dnn", "--budgets=100k,180k,320k", "--tolerance=0.1"]
    argv += common_flags(bench_data, tiny_configs, out)
    assert run_cli(suite_commands.Scaling(), argv) == 0
    summary = json.loads(open(os.path.join(out, "scaling.json")).read())
    points = summary["points"]
    assert [p["budget"] for p in points] == [100_000, 180_000, 320_000]
    params = [p["params"] for p in points]
    flops = [p["flops_per_example"] for p in points]
    assert params == sorted(params) and len(set(params)) == 3      # monotone
    assert flops == sorted(flops) and len(set(flops)) == 3
    for p in points:
        assert abs(p["params"] / p["budget"] - 1) <= 0.1
        assert 0.0 < p["mean_auc"] < 1.0
    md = open(os.path.join(out, "scaling.md")).read()
    assert "| dnn | 100.00k |" in md and "FLOPs/example" in md
    with open(os.path.join(out, "scaling.png"), "rb") as fh:
        assert fh.read(4) == b"\x89PNG"


def test_scaling_needs_two_budgets(tmp_path, bench_data, tiny_configs, capsys):
    from tfmdl.cli import suite_commands

    argv = ["--models=dnn", "--budgets=100k"] + common_flags(bench_data, tiny_configs,
                                                           str(tmp_path))
    assert run_cli(suite_commands.Scaling(), argv) == 2
    assert "at least 2 distinct budgets" in capsys.readouterr().err
