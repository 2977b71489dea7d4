"""Fixtures of the benchmark-suite tests: one tiny data set, tiny configs, and one
quality run (dnn, rankmixer, mdl) shared by the report, resume and plot tests."""

import pytest
from absl import flags

# Small widths keep model builds (parameter matching builds ~10 per model) and
# graph tracing quick; the budget below is reachable by all three.
TINY_CONFIGS = {
    "dnn": "model: dnn\nparams: {hidden: [64, 32], tower_hidden: [16]}\n",
    "rankmixer": "model: rankmixer\nparams: {layers: 1, width: 24, tower_hidden: [16]}\n",
    "mdl": "model: mdl\nparams: {layers: 1, width: 24, heads: 4}\n",
    "pmta": ("model: pmta\nparams: {backbone: rankmixer, backbone_layers: 1, "
             "backbone_width: 24, classifier_width: 16, width: 32, heads: 2, layers: 2, "
             "tpe_hidden: 16, tpe_dim: 16, prompt_dim: 8, backbone_logit: true}\n"),
}
BUDGET = "200k"
TOLERANCE = 0.1                   # coarse: fewer sizing builds
TRAIN, EVAL = 2048, 1000          # 2 full batches of 1024: one traced train step


def run_cli(command, argv):
    """Runs a tfmdl Command in-process with its own flag values; returns the exit code."""
    fv = flags.FlagValues()
    command.define_flags(fv)
    fv(["tfmdl"] + list(argv))
    return command.run(fv)


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory):
    from tfmdl.benchmark import quality

    root = str(tmp_path_factory.mktemp("bench_data"))
    request = quality.DataRequest("feed", TRAIN, EVAL, seed=3,
                                  synth=(("users", 2000), ("items", 1000),
                                         ("calibration_rows", 5000)))
    return quality.prepare_data(request, root)


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory):
    out = tmp_path_factory.mktemp("configs")
    for model, text in TINY_CONFIGS.items():
        (out / f"{model}_feed.yaml").write_text(text)
    return str(out)


def common_flags(data, configs, out):
    """A quick protocol: one learning rate, at most 2 epochs, and cells with 5 eval
    positives counted (the tiny eval split has few)."""
    return [f"--data={data}", f"--configs={configs}", f"--out={out}", "--jit_compile=off",
            "--batch_size=1024", "--seed=0", "--lr_grid=1e-3", "--max_epochs=2",
            "--min_positives=5"]


@pytest.fixture(scope="session")
def quality_run(tmp_path_factory, bench_data, tiny_configs):
    """``tfmdl benchmark quality`` on dnn, rankmixer, mdl with a 2-rate grid;
    returns (out dir, argv, exit code)."""
    from tfmdl.cli import suite_commands

    out = str(tmp_path_factory.mktemp("quality"))
    argv = ["--models=dnn,rankmixer,mdl", f"--params={BUDGET}", f"--tolerance={TOLERANCE}",
            "--n_boot=50"]
    argv += common_flags(bench_data, tiny_configs, out) + ["--lr_grid=1e-3,3e-3"]
    return out, argv, run_cli(suite_commands.Quality(), argv)
