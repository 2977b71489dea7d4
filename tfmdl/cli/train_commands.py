"""``tfmdl train``: fit a configured model on a data directory."""

from __future__ import annotations

import sys

from absl import flags

from tfmdl.cli.command import Command


class Train(Command):
    """Trains the model of --config on --data/train-*.tfrecord (validating on eval-*)
with Keras model.fit under the chosen tf.distribute strategy, writing checkpoints,
BackupAndRestore state (re-running the same command resumes a killed run),
TensorBoard logs, the resolved config and the final weights into --model_dir.
--warm_start_from=<model_dir> first restores the same-named weights of a trained model
(PMTA's backbone warm-up, docs/pmta.md). Cluster strategies read TF_CONFIG (README,
'Distributed training'). --data may hold Parquet files instead of TFRecord shards
(--source), and --data, --model_dir and --warm_start_from may be s3://, hdfs:// or
az:// URLs (both need the io extra, docs/io.md)."""

    name = "train"
    summary = "train a configured model (model.fit, tf.distribute, XLA, checkpoints)"

    def flags(self, fv):
        from tfmdl.cli import model_commands  # pylint: disable=g-import-not-at-top

        model_commands.define_config_flags(fv)
        flags.DEFINE_string("model_dir", None, "output model directory", flag_values=fv)
        flags.DEFINE_integer("epochs", None, "epochs (overrides training.epochs)",
                             flag_values=fv)
        flags.DEFINE_integer("steps", None, "total steps (overrides training.steps)",
                             flag_values=fv)
        flags.DEFINE_enum("strategy", "default",
                          ["default", "mirrored", "multi_worker", "parameter_server"],
                          "tf.distribute strategy", flag_values=fv)
        flags.DEFINE_enum("jit_compile", None, ["auto", "on", "off"],
                          "XLA (overrides training.jit_compile)", flag_values=fv)
        flags.DEFINE_integer("cpu_devices", 0, "split the CPU into this many logical "
                             "devices (MirroredStrategy on a CPU-only machine)", flag_values=fv)
        flags.DEFINE_string("warm_start_from", None,
                            "a trained model dir (e.g. a dnn/rankmixer backbone) whose weights "
                            "of the same layer and variable names initialise this model "
                            "(PMTA's parameter warm-up); restored/unmatched variables are "
                            "logged", flag_values=fv)
        define_source_flag(fv)
        flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"],
                          "Keras verbosity (1: progress bar, 2: a line per epoch)",
                          flag_values=fv)
        flags.mark_flag_as_required("model_dir", flag_values=fv)

    def run(self, fv):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.training import trainer  # pylint: disable=g-import-not-at-top

        overrides = list(fv.set)
        if fv.epochs is not None:
            overrides.append(f"training.epochs={fv.epochs}")
        if fv.steps is not None:
            overrides.append(f"training.steps={fv.steps}")
        if fv.jit_compile is not None:
            overrides.append(f"training.jit_compile={fv.jit_compile}")
        try:
            trainer.configure_cpu_devices(fv.cpu_devices)
            strategy = trainer.make_strategy(fv.strategy)
            run = trainer.prepare(fv.config, fv.data, fv.model_dir, strategy=strategy,
                                  overrides=overrides, warm_start_from=fv.warm_start_from,
                                  source=fv.source)
            if run.warm_start is not None:
                print(run.warm_start.summary(), flush=True)
            bias = run.output_bias or {}
            if bias.get("init") == "prior":
                rates = ", ".join(f"{t} {r:.3%}" for t, r in bias["rates"].items()
                                  if r is not None)
                print(f"output bias: each task's base rate ({rates})", flush=True)
            print(f"training {run.config.model} on {fv.data} -> {fv.model_dir} "
                  f"(strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} "
                  f"replica(s), XLA {'on' if run.jit_compile else 'off'})", flush=True)
            files = reader.resolve_files(fv.data, "train", fv.source)
            with reader.naming_corrupt_files(files):
                history = run.fit(verbose=fv.verbose if fv.verbose == "auto" else int(fv.verbose))
            summary = run.finish(history)
        except (ValueError, trainer.TrainingError) as exc:
            sys.stderr.write(f"tfmdl train: {exc}\n")
            return 2
        except tf.errors.InvalidArgumentError as exc:
            # data errors raised inside the input pipeline (bad labels, missing features)
            sys.stderr.write(f"tfmdl train: invalid input data: {_first_line(exc.message)}\n")
            return 2
        last = {k: v[-1] for k, v in summary["history"].items() if v}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(last.items())
                          if k == "loss" or k.endswith("_auc"))
        print(f"done in {summary['seconds']} s; final {shown}")
        print(f"weights: {fv.model_dir}/weights/final; evaluate with: tfmdl evaluate "
              f"--model_dir={fv.model_dir} --data={fv.data}")
        return 0


def define_source_flag(fv) -> None:
    """--source: the data's format (`reader.make_dataset`'s ``source``)."""
    flags.DEFINE_enum("source", "auto", ["auto", "tfrecord", "parquet"],
                      "data format: auto (TFRecord shards DIR/<split>-*.tfrecord*, else Parquet "
                      "DIR/<split>-*.parquet or DIR/<split>/*.parquet), tfrecord, or parquet "
                      "(read through tensorflow-io: the io extra, docs/io.md)", flag_values=fv)


def _first_line(message: str) -> str:
    """The useful part of a TensorFlow error: the assertion text, not the op trace."""
    for marker in ("assertion failed: ", "Feature: "):
        if marker in message:
            return message[message.index(marker):].split("\n")[0]
    lines = [l.strip() for l in message.strip().split("\n")
             if l.strip() and not l.strip().startswith(("[[", "File ", "Graph execution"))
             and "Traceback" not in l]
    return lines[-1] if lines else message.strip()


COMMANDS = [Train()]
