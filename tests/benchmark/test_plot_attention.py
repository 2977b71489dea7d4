"""tfmdl plot attention: MDL's domain-aware attention heatmaps."""

import json
import os

import numpy as np
import pytest

from tests.benchmark.conftest import run_cli


def _model_dir(out_dir, name):
    """The model dir of row ``name``'s reported run (its chosen learning rate)."""
    summary = json.loads(open(os.path.join(out_dir, "quality.json")).read())
    (run,) = [r for r in summary["runs"] if r["name"] == name]
    return run["model_dir"]


@pytest.mark.slow  # shares the quality run (~30 s)
def test_attention_heatmaps_of_a_trained_mdl(quality_run, bench_data, tmp_path):
    from tfmdl.cli import plot_commands

    out_dir, _, _ = quality_run
    model_dir = _model_dir(out_dir, "mdl")
    out = str(tmp_path / "attention")
    argv = [f"--model_dir={model_dir}", f"--data={bench_data}", f"--out={out}"]
    assert run_cli(plot_commands.Attention(), argv) == 0
    for name in ("attention_scenario.png", "attention_task.png"):
        with open(os.path.join(out, name), "rb") as fh:
            assert fh.read(4) == b"\x89PNG"
    maps = json.loads(open(os.path.join(out, "attention.json")).read())
    assert maps["slices"] == ["featured", "nearby", "all"]
    assert maps["token_names"]["scenario"] == ["featured", "nearby", "global"]
    assert maps["token_names"]["task"][0] == "like"
    assert maps["counts"][-1] == 1000 and sum(maps["counts"][:2]) == 1000
    assert len(maps["feature_tokens"]) == 6 and "user" in maps["feature_tokens"]
    scen = np.asarray(maps["maps"]["0"]["scenario"])       # [slices, S+1, T]
    task = np.asarray(maps["maps"]["0"]["task"])           # [slices, K, T]
    assert scen.shape == (3, 3, 6) and task.shape == (3, 6, 6)
    # attention rows are distributions over the feature tokens
    np.testing.assert_allclose(scen.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(task.sum(-1), 1.0, atol=1e-4)
    # "all" is the count-weighted mean of the scenario slices (single-scenario data)
    c = np.asarray(maps["counts"][:2], dtype=float)
    np.testing.assert_allclose((scen[:2] * c[:, None, None]).sum(0) / c.sum(), scen[2],
                               atol=1e-5)


@pytest.mark.slow  # shares the quality run (~30 s)
def test_model_without_attention_gets_a_clear_error(quality_run, bench_data, tmp_path, capsys):
    from tfmdl.cli import plot_commands

    out_dir, _, _ = quality_run
    model_dir = _model_dir(out_dir, "dnn")
    argv = [f"--model_dir={model_dir}", f"--data={bench_data}", f"--out={tmp_path}"]
    assert run_cli(plot_commands.Attention(), argv) == 2
    err = capsys.readouterr().err
    assert "model 'dnn'" in err and "no attention read-out" in err and "mdl" in err
