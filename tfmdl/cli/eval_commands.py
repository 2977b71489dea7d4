"""``tfmdl evaluate`` and ``tfmdl compare``."""

from __future__ import annotations

import sys

from absl import flags

from tfmdl.cli import train_commands
from tfmdl.cli.command import Command


def _errors():
    """Exceptions reported as one line naming the path (exit code 2): ValueError
    subclasses (DataError, ModelDirError, SpecError, ConfigError, EvaluationError),
    OS errors and TensorFlow op errors (e.g. data that does not match the spec)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return (ValueError, OSError, tf.errors.OpError)


def _message(exc) -> str:
    return getattr(exc, "message", None) or str(exc)


class Evaluate(Command):
    """Scores a trained model on a data split: AUC, GAUC (with a user key), QAUC (with a
query key), log loss, calibration, positive rate and row count per scenario x task,
plus "overall". With DIR/oracle.json (synthetic data) the oracle's values and the % of
the oracle gap closed are shown. Writes M/eval.json and M/eval.md and prints eval.md."""

    name = "evaluate"
    summary = "evaluate a trained model per scenario x task (writes eval.json / eval.md)"

    def flags(self, fv):
        flags.DEFINE_string("model_dir", None, "model directory written by tfmdl train",
                            flag_values=fv)
        flags.DEFINE_string("data", None, "data directory (or file pattern)", flag_values=fv)
        flags.DEFINE_string("split", "eval", "split to score: DIR/<split>-*.tfrecord",
                            flag_values=fv)
        flags.DEFINE_integer("batch_size", 4096, "examples per model call", lower_bound=1,
                             flag_values=fv)
        train_commands.define_source_flag(fv)
        flags.mark_flag_as_required("model_dir", flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)

    def run(self, fv):
        from tfmdl import evaluation  # pylint: disable=g-import-not-at-top

        try:
            report = evaluation.evaluate(fv.model_dir, fv.data, split=fv.split,
                                         batch_size=fv.batch_size, source=fv.source)
        except _errors() as exc:
            sys.stderr.write(f"tfmdl evaluate: {_message(exc)}\n")
            return 2
        print(evaluation.format_report_markdown(report), end="")
        return 0


class Compare(Command):
    """Compares the AUC of two trained models on the same rows: per scenario x task (and
overall) AUC of a and b, delta = a - b, a paired-bootstrap interval of delta (resampling
queries when the spec has a query key, else users) and a two-sided p-value."""

    name = "compare"
    summary = "AUC deltas of two trained models with paired-bootstrap intervals"

    def flags(self, fv):
        flags.DEFINE_string("a", None, "model directory a", flag_values=fv)
        flags.DEFINE_string("b", None, "model directory b", flag_values=fv)
        flags.DEFINE_string("data", None, "data directory (or file pattern)", flag_values=fv)
        flags.DEFINE_string("split", "eval", "split to score", flag_values=fv)
        flags.DEFINE_integer("n_boot", 1000, "bootstrap replicates", lower_bound=1,
                             flag_values=fv)
        flags.DEFINE_integer("seed", 0, "bootstrap seed", flag_values=fv)
        flags.DEFINE_integer("batch_size", 4096, "examples per model call", lower_bound=1,
                             flag_values=fv)
        flags.DEFINE_string("out", None, "also write the result as JSON to this file",
                            flag_values=fv)
        for name in ("a", "b", "data"):
            flags.mark_flag_as_required(name, flag_values=fv)

    def run(self, fv):
        from tfmdl import evaluation  # pylint: disable=g-import-not-at-top

        try:
            result = evaluation.compare(fv.a, fv.b, fv.data, split=fv.split, n_boot=fv.n_boot,
                                        seed=fv.seed, batch_size=fv.batch_size)
            if fv.out:
                evaluation.write_json(fv.out, result)
        except _errors() as exc:
            sys.stderr.write(f"tfmdl compare: {_message(exc)}\n")
            return 2
        print(evaluation.format_compare_markdown(result), end="")
        return 0


COMMANDS = [Evaluate(), Compare()]
