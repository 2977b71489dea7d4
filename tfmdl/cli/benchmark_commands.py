"""``tfmdl benchmark ...``: throughput and memory figures for docs/benchmarks.md.

Each benchmark prints the machine (cores), the date and the exact figures, so
the numbers can be pasted with their command.
"""

from __future__ import annotations

import datetime
import os
import resource
import shutil
import sys
import tempfile
import time

from absl import flags

from tfmdl.cli.command import Command


def machine_line() -> str:
    return (f"machine: {os.cpu_count()} cores, date: "
            f"{datetime.date.today().isoformat()}")


def peak_rss_mb() -> dict:
    """Peak resident set size of this process and of its largest child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": own, "largest_child": child}


class Pipeline(Command):
    """Reads the TFRecord shards of a data directory through the tf.data reader
(interleave, shuffle, batch, vectorised parse_example, prefetch) and counts parsed
examples inside a graph (Dataset.reduce), as model.fit consumes them. Reports the
streaming (no shuffle, the eval path) and the shuffled (training) configurations."""

    name = "benchmark pipeline"
    summary = "parsed examples/s of the tf.data reader"

    def flags(self, fv):
        flags.DEFINE_string("data", None, "data directory (spec.yaml + shards)", flag_values=fv)
        flags.DEFINE_string("split", "train", "split to read", flag_values=fv)
        flags.DEFINE_integer("batch_size", 1024, "batch size", flag_values=fv)
        flags.DEFINE_integer("epochs", 1, "passes over the data per configuration",
                             lower_bound=1, flag_values=fv)
        flags.DEFINE_list("modes", ["streaming", "shuffled"],
                          "configurations to time: streaming, shuffled", flag_values=fv)
        flags.DEFINE_bool("ignore_errors", False, "skip corrupt records and report the count",
                          flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)

    def run(self, fv):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top

        try:
            spec = spec_lib.load_spec(fv.data)
            files = reader.resolve_files(fv.data, fv.split)
        except ValueError as exc:
            sys.stderr.write(f"tfmdl benchmark pipeline: {exc}\n")
            return 2
        bad = [m for m in fv.modes if m not in ("streaming", "shuffled")]
        if bad:
            sys.stderr.write(f"tfmdl benchmark pipeline: --modes takes streaming, shuffled; "
                             f"got {bad}.\n")
            return 2
        scenario = spec.scenario.feature

        @tf.autograph.experimental.do_not_convert
        def count(total, batch):
            return total + tf.shape(batch[0][scenario], out_type=tf.int64)[0]

        print(f"tfmdl benchmark pipeline --data={fv.data} --split={fv.split} "
              f"--batch_size={fv.batch_size}")
        print(machine_line())
        print(f"files: {len(files)}")
        for mode in fv.modes:
            ds = reader.make_dataset(spec, files, fv.batch_size, shuffle=mode == "shuffled",
                                     seed=0, repeat=fv.epochs if fv.epochs > 1 else False,
                                     ignore_errors=fv.ignore_errors)
            start = time.perf_counter()
            try:
                with reader.naming_corrupt_files(files):
                    n = int(ds.reduce(tf.constant(0, tf.int64), count))
            except reader.DataError as exc:
                sys.stderr.write(f"tfmdl benchmark pipeline: {exc}\n")
                return 2
            seconds = time.perf_counter() - start
            print(f"{mode:>9}: {n} examples in {seconds:.2f} s = {n / seconds:,.0f} examples/s")
            if fv.ignore_errors:
                skipped = reader.count_skipped(files, n // fv.epochs)
                print(f"skipped records: {'unknown (no manifest)' if skipped is None else skipped}")
        return 0


class Synth(Command):
    """Generates a data set into a temporary directory (or --out), then reports
examples/s written and the peak RSS of the process and its generator workers.
Run it at two sizes to see that memory does not grow with the number of examples."""

    name = "benchmark synth"
    summary = "synthetic generator speed (examples/s) and peak memory"

    def flags(self, fv):
        flags.DEFINE_enum("preset", "feed", ["feed", "search"], "data preset", flag_values=fv)
        flags.DEFINE_integer("train", 1_000_000, "train examples", flag_values=fv)
        flags.DEFINE_integer("eval", 0, "eval examples", flag_values=fv)
        flags.DEFINE_integer("seed", 0, "random seed", flag_values=fv)
        flags.DEFINE_integer("workers", 0, "generator processes (0: automatic)", flag_values=fv)
        flags.DEFINE_string("out", None, "keep the data here (default: a temporary directory "
                            "that is deleted)", flag_values=fv)

    def run(self, fv):
        from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

        out = fv.out or tempfile.mkdtemp(prefix="tfmdl-bench-synth-")
        cfg = synthetic.SynthConfig(preset=fv.preset, train=fv.train, eval=fv.eval, seed=fv.seed)
        try:
            result = synthetic.generate(cfg, out, workers=fv.workers)
        finally:
            if not fv.out:
                shutil.rmtree(out, ignore_errors=True)
        rss = peak_rss_mb()
        print(f"tfmdl benchmark synth --preset={fv.preset} --train={fv.train} --eval={fv.eval}")
        print(machine_line())
        print(f"examples: {result.rows}, seconds: {result.seconds:.1f}, "
              f"examples/s: {result.examples_per_second:,.0f}")
        print(f"peak RSS: main process {rss['self']:.0f} MiB, largest worker "
              f"{rss['largest_child']:.0f} MiB")
        return 0


COMMANDS = [Pipeline(), Synth()]
