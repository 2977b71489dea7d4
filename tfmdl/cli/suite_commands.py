"""``tfmdl benchmark quality | ablation | scaling``: the model-quality suite
(`tfmdl.benchmark.quality`, docs/benchmark_suite.md)."""

from __future__ import annotations

import abc
import os
import sys

from absl import flags

from tfmdl.cli.command import Command

DEFAULT_MODELS = ["mdl", "pmta", "rankmixer", "shared_bottom", "mmoe", "ple", "star", "hmoe",
                  "pepnet"]


def _define_common(fv, seeds: bool) -> None:
    flags.DEFINE_enum("preset", "feed", ["feed", "search"], "synthetic data preset",
                      flag_values=fv)
    flags.DEFINE_integer("train", None, "train examples (default: the preset's suite size, "
                         "tfmdl.benchmark.quality.SUITE_SIZES)", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("eval", None, "eval examples (default: the preset's suite size)",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "data seed, and the first training seed", flag_values=fv)
    flags.DEFINE_integer("users", None, "synthetic users (preset default)", flag_values=fv)
    flags.DEFINE_integer("items", None, "synthetic items (preset default)", flag_values=fv)
    flags.DEFINE_string("data", None, "use this data directory instead of generating one "
                        "(the --preset/--train/--eval/--users/--items flags are then unused)",
                        flag_values=fv)
    flags.DEFINE_string("data_root", os.path.join("bench_out", "data"),
                        "where generated data sets are kept (one per preset/size/seed, reused)",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "output directory (default bench_out/<command>_<preset>)",
                        flag_values=fv)
    flags.DEFINE_string("configs", None, "directory of <model>_<preset>.yaml configs "
                        "(default: ./configs, else the repository's)", flag_values=fv)
    flags.DEFINE_enum("match", "total", ["total", "dense"], "what a parameter budget counts: "
                      "all trainable parameters or the non-embedding ones", flag_values=fv)
    flags.DEFINE_float("tolerance", 0.05, "accepted relative error of a parameter budget",
                       flag_values=fv)
    flags.DEFINE_integer("max_epochs", 10, "most epochs of a run (every model); early "
                         "stopping on the validation logloss ends most runs sooner",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("patience", 1, "epochs without a better validation logloss before "
                         "a run stops (its best weights are restored and annealed)",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("validation_fraction", 0.1, "fraction of the training rows held out "
                       "(fixed, seeded) to stop early on and to pick the learning rate by; "
                       "the eval split is never used for either", flag_values=fv)
    flags.DEFINE_list("lr_grid", ["3e-4", "1e-3", "3e-3"], "Adam learning rates of the dense "
                      "weights: every model trains at each, and its row reports the one with "
                      "the best validation logloss", flag_values=fv)
    flags.DEFINE_integer("min_positives", 100, "cells with fewer eval positives are shown but "
                         "left out of the means and the oracle-gap figure", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 1024, "batch size (every model)", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_boolean("warm_start", True, "PMTA rows start from a trained run of their "
                         "backbone (the paper's parameter warm-up), which becomes a row of its "
                         "own; --nowarm_start trains them from scratch", flag_values=fv)
    flags.DEFINE_float("embedding_learning_rate", 0.05, "Adagrad learning rate of the "
                       "embedding tables", flag_values=fv)
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "on", "off"], "XLA", flag_values=fv)
    flags.DEFINE_enum("verbose", "0", ["0", "1", "2"], "Keras verbosity inside each run "
                      "(the suite prints a line per run either way)", flag_values=fv)
    if seeds:
        flags.DEFINE_integer("seeds", 1, "train every row this many times (seeds seed.."
                             "seed+N-1) and report mean ± std", lower_bound=1, flag_values=fv)
        flags.DEFINE_integer("n_boot", 1000, "paired-bootstrap replicates (0: no intervals)",
                             lower_bound=0, flag_values=fv)


class _SuiteCommand(Command, abc.ABC):
    """Shared set-up of the three suite commands."""

    kind = ""

    def command_line(self, fv) -> str:
        parts = [f"tfmdl {self.name}"]
        for name in self._flag_names:
            flag = fv[name]
            if flag.present:
                value = ",".join(map(str, flag.value)) if isinstance(flag.value, list) \
                    else flag.value
                parts.append(f"--{name}={value}")
        return " ".join(parts)

    def out_dir(self, fv, suffix: str) -> str:
        return fv.out or os.path.join("bench_out", f"{self.kind}_{suffix}")

    def suite(self, fv, out_dir: str):
        from tfmdl.benchmark import quality  # pylint: disable=g-import-not-at-top

        if fv.data:
            data_dir = fv.data
        else:
            synth = tuple((k, v) for k, v in (("users", fv.users), ("items", fv.items))
                          if v is not None)
            train, evals = quality.SUITE_SIZES[fv.preset]
            request = quality.DataRequest(fv.preset, fv.train or train, fv.eval or evals,
                                          fv.seed, synth)
            data_dir = quality.prepare_data(request, fv.data_root, log=_log)
        profile = quality.Profile(batch_size=fv.batch_size, max_epochs=fv.max_epochs,
                                  patience=fv.patience,
                                  validation_fraction=fv.validation_fraction,
                                  lr_grid=quality.parse_rates(fv.lr_grid),
                                  embedding_learning_rate=fv.embedding_learning_rate,
                                  jit_compile=fv.jit_compile)
        return quality.Suite(out_dir=out_dir, data_dir=data_dir, profile=profile,
                             configs_dir=fv.configs or quality.default_configs_dir(),
                             match=fv.match, tolerance=fv.tolerance, verbose=int(fv.verbose),
                             log=_log, min_positives=fv.min_positives,
                             warm_start=fv.warm_start, configs_required=bool(fv.configs),
                             requested_preset=fv.preset if fv.data and fv["preset"].present
                             else None)

    def run(self, fv):
        from tfmdl import config as config_lib  # pylint: disable=g-import-not-at-top
        from tfmdl import plots  # pylint: disable=g-import-not-at-top
        from tfmdl.benchmark import quality  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

        try:
            plots.require()          # fail now, not after hours of training
            command = self.command_line(fv)
            print(command, flush=True)
            paths = self.execute(fv, command)
        except (quality.BenchmarkError, plots.PlotsUnavailable, config_lib.ConfigError,
                reader.DataError, trainer.TrainingError) as exc:
            sys.stderr.write(f"tfmdl {self.name}: {exc}\n")
            return 2
        with open(paths["md"], encoding="utf-8") as fh:
            print(fh.read())
        print("wrote " + ", ".join(paths[k] for k in ("md", "json", "png")), flush=True)
        return 0

    @abc.abstractmethod
    def execute(self, fv, command: str):
        """Runs the benchmark; returns ``{"md", "json", "png"}`` output paths."""


def _log(line: str) -> None:
    print(line, flush=True)


class Quality(_SuiteCommand):
    """Trains every model of --models on the same synthetic data (generated once per
preset/size/seed under --data_root, then reused), each sized to --params parameters
(tfmdl.models.sizing scales the widths of configs/<model>_<preset>.yaml; the model's
defaults when there is no such file) and trained to convergence with one shared
protocol: up to --max_epochs with early stopping on the validation logloss of a
held-out --validation_fraction of the training rows, at every --lr_grid rate (the row
reports the best by validation logloss); PMTA starts from a trained run of its backbone,
a row of its own. Only each row's chosen run is scored on the eval split. Writes
OUT/quality.md, quality.json and quality.png: AUC per scenario x task (QAUC and AUC for
search), log loss and normalized entropy, with the oracle row and the % of the oracle
gap each model closes over the cells with >= --min_positives eval positives, and
paired-bootstrap 95% intervals of MDL and PMTA against the best other model (and of
PMTA against its backbone). Each finished run is kept under OUT/runs/; re-running the
same command skips them (docs/benchmark_suite.md)."""

    name = "benchmark quality"
    summary = "train and score every model on the same data at a matched budget (Table 1)"
    kind = "quality"

    def flags(self, fv):
        flags.DEFINE_list("models", DEFAULT_MODELS, "registered models to compare",
                          flag_values=fv)
        flags.DEFINE_string("params", None, "parameter budget per model, e.g. 2M or 500k "
                            "(default: configs as written)", flag_values=fv)
        _define_common(fv, seeds=True)

    def execute(self, fv, command):
        from tfmdl.benchmark import quality  # pylint: disable=g-import-not-at-top
        from tfmdl.benchmark import report  # pylint: disable=g-import-not-at-top

        budget = quality.parse_count(fv.params) if fv.params else None
        models = quality.check_models(fv.models)
        out = self.out_dir(fv, fv.preset)
        suite = self.suite(fv, out)
        summary = quality.quality(suite, models, budget=budget, seed=fv.seed, seeds=fv.seeds,
                                  n_boot=fv.n_boot)
        return report.write_table_report(summary, out, command)


class Ablation(_SuiteCommand):
    """Trains the ablation variants of MDL's or PMTA's Table 2 (the variant list is
tfmdl.benchmark.quality.ABLATIONS: each a --set override of the model's config) with the
quality benchmark's data, sizing and training profile. With --params the full model is
sized to the budget and each variant applies its switch to that config. Writes
OUT/ablation.md, ablation.json and ablation.png, with paired-bootstrap intervals of the
full model against every variant."""

    name = "benchmark ablation"
    summary = "the ablation variants of MDL / PMTA (Table 2)"
    kind = "ablation"

    def flags(self, fv):
        flags.DEFINE_string("model", "mdl", "model whose ablations to run (mdl, pmta)",
                            flag_values=fv)
        flags.DEFINE_list("variants", [], "variants to run (default: all)", flag_values=fv)
        flags.DEFINE_string("params", None, "parameter budget of the full model",
                            flag_values=fv)
        _define_common(fv, seeds=True)

    def execute(self, fv, command):
        from tfmdl.benchmark import quality  # pylint: disable=g-import-not-at-top
        from tfmdl.benchmark import report  # pylint: disable=g-import-not-at-top

        quality.ablation_variants(fv.model, fv.variants)     # flag errors before data
        budget = quality.parse_count(fv.params) if fv.params else None
        out = self.out_dir(fv, f"{fv.model}_{fv.preset}")
        suite = self.suite(fv, out)
        summary = quality.ablation(suite, fv.model, fv.variants or None, budget=budget,
                                   seed=fv.seed, seeds=fv.seeds, n_boot=fv.n_boot)
        return report.write_table_report(summary, out, command)


class Scaling(_SuiteCommand):
    """Trains every model of --models at every budget of --budgets (parameter-matched)
and plots the mean AUC over scenario x task cells against parameters and against forward
FLOPs per example (the MDL paper's Figure 2). Writes OUT/scaling.md, scaling.json and
scaling.png; finished runs are skipped on a re-run."""

    name = "benchmark scaling"
    summary = "quality against parameters and FLOPs for several model sizes (Figure 2)"
    kind = "scaling"

    def flags(self, fv):
        flags.DEFINE_list("models", ["mdl", "mmoe"], "registered models", flag_values=fv)
        flags.DEFINE_list("budgets", ["4M", "8M", "16M", "32M"], "parameter budgets (at least "
                          "4 for a curve)", flag_values=fv)
        _define_common(fv, seeds=False)

    def execute(self, fv, command):
        from tfmdl.benchmark import quality  # pylint: disable=g-import-not-at-top
        from tfmdl.benchmark import report  # pylint: disable=g-import-not-at-top

        budgets = [quality.parse_count(b, "--budgets") for b in fv.budgets]
        models = quality.check_models(fv.models)
        out = self.out_dir(fv, fv.preset)
        suite = self.suite(fv, out)
        summary = quality.scaling(suite, models, budgets, seed=fv.seed)
        return report.write_scaling_report(summary, out, command)


COMMANDS = [Quality(), Ablation(), Scaling()]
