"""``tfmdl benchmark ...``: throughput and memory figures for docs/benchmarks.md.

Each benchmark prints the machine (cores), the date and the exact figures, so
the numbers can be pasted with their command.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import time

from absl import flags

from tfmdl.cli.command import Command


def machine_line() -> str:
    return (f"machine: {os.cpu_count()} cores, date: "
            f"{datetime.date.today().isoformat()}")


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
        print(f"tfmdl benchmark synth --preset={fv.preset} --train={fv.train} --eval={fv.eval}")
        print(machine_line())
        print(f"examples: {result.rows}, seconds: {result.seconds:.1f}, "
              f"examples/s: {result.examples_per_second:,.0f}")
        workers = ("in-process" if result.peak_worker_rss_mb is None
                   else f"largest worker {result.peak_worker_rss_mb:.0f} MiB")
        print(f"peak RSS (VmHWM): main process {synthetic.peak_rss_mb():.0f} MiB, {workers}")
        return 0


COMMANDS = [Pipeline(), Synth()]


def _write_synthetic_table(path: str, fmt: str, rows: int, seed: int) -> str:
    """Writes ``rows`` feed-preset examples as CSV or Parquet (streaming); returns
    the spec YAML path. Runs in a child process so its memory is not counted."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
    import pyarrow.csv as pa_csv  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

    cfg = synthetic.SynthConfig(preset="feed", train=rows, eval=0, seed=seed)
    gen = synthetic.Generator(cfg)
    spec = spec_lib.FeatureSpec.from_dict(gen.spec_dict())
    spec_path = os.path.join(os.path.dirname(path), "spec.yaml")
    spec_lib.save_spec(spec, spec_path)
    writer = None
    try:
        for index in range(-(-rows // cfg.chunk_size)):
            n = min(cfg.chunk_size, rows - index * cfg.chunk_size)
            chunk = gen.chunk(1, index, n)
            arrays = {}
            for name, col in sorted(chunk.columns.items()):
                values = np.asarray(col.values)
                if col.lengths is None and values.ndim == 1:
                    arrays[name] = pa.array(values)
                    continue
                lengths = (np.full(n, values.shape[1]) if col.lengths is None
                           else np.asarray(col.lengths))
                keep = np.arange(values.shape[1])[None, :] < lengths[:, None]
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                flat = pa.array(values[keep]).cast(pa.string())
                arrays[name] = pc.binary_join(pa.ListArray.from_arrays(offsets, flat), "|")
            table = pa.table(arrays)
            if writer is None:
                writer = (pq.ParquetWriter(path, table.schema) if fmt == "parquet"
                          else pa_csv.CSVWriter(path, table.schema))
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return spec_path


class Convert(Command):
    """Writes a feed-preset table of --rows rows as CSV or Parquet (in a child process),
then times `tfmdl data convert` on it in this process and reports rows/s and this
process's peak RSS. Run at two sizes to see that memory does not grow with the input."""

    name = "benchmark convert"
    summary = "CSV/Parquet -> TFRecord conversion speed and peak memory"

    def flags(self, fv):
        flags.DEFINE_integer("rows", 1_000_000, "rows in the generated input", flag_values=fv)
        flags.DEFINE_enum("format", "csv", ["csv", "parquet"], "input format", flag_values=fv)
        flags.DEFINE_integer("seed", 0, "random seed", flag_values=fv)

    def run(self, fv):
        import multiprocessing  # pylint: disable=g-import-not-at-top

        work = tempfile.mkdtemp(prefix="tfmdl-bench-convert-")
        try:
            path = os.path.join(work, f"input.{fv.format}")
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                spec_path = pool.apply(_write_synthetic_table, (path, fv.format, fv.rows, fv.seed))
            size_mb = os.path.getsize(path) / 2**20
            from tfmdl.pipelines import convert  # pylint: disable=g-import-not-at-top
            from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top

            spec = spec_lib.load_spec(spec_path)
            start = time.perf_counter()
            result = convert.convert(spec, path, os.path.join(work, "out"))
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(work, ignore_errors=True)
        from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

        rss = synthetic.peak_rss_mb()
        print(f"tfmdl benchmark convert --rows={fv.rows} --format={fv.format}")
        print(machine_line())
        print(f"input: {size_mb:.0f} MiB {fv.format}; rows written: {result.rows_written}; "
              f"{seconds:.1f} s = {result.rows_written / seconds:,.0f} rows/s")
        print(f"peak RSS of the converting process: {rss:.0f} MiB")
        return 0


COMMANDS.append(Convert())


class Train(Command):
    """Trains the configured model's core on a few in-memory batches (cached after the
input lookup, so input parsing is not timed) and reports examples/s, peak RSS and
MFU: 3 x forward matmul FLOPs per example x examples/s, divided by TensorFlow's own
float32 matmul FLOP/s measured in the same run."""

    name = "benchmark train"
    summary = "training examples/s, peak RSS and MFU of a configured model"

    def flags(self, fv):
        from tfmdl.cli import model_commands  # pylint: disable=g-import-not-at-top

        model_commands.define_config_flags(fv)
        flags.DEFINE_integer("batch_size", 2048, "batch size", flag_values=fv)
        flags.DEFINE_integer("steps", 40, "timed steps", flag_values=fv)
        flags.DEFINE_integer("warmup", 10, "untimed warm-up steps", flag_values=fv)
        flags.DEFINE_enum("jit_compile", "off", ["on", "off", "both"],
                          "XLA: on, off, or both (ratio printed)", flag_values=fv)

    def run(self, fv):
        from tfmdl.benchmark import train_speed  # pylint: disable=g-import-not-at-top
        from tfmdl.cli import model_commands  # pylint: disable=g-import-not-at-top
        from tfmdl.models import cost  # pylint: disable=g-import-not-at-top
        from tfmdl.models import experiment  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

        try:
            spec, config = model_commands.load_spec_and_config(fv)
            ds = reader.make_dataset(spec, fv.data, fv.batch_size, split="train", seed=0,
                                     repeat=True, drop_remainder=True)
        except ValueError as exc:
            sys.stderr.write(f"tfmdl benchmark train: {exc}\n")
            return 2
        overrides = " ".join(f"--set {s}" for s in fv.set)
        print(f"tfmdl benchmark train --config={fv.config} --data={fv.data} "
              f"--batch_size={fv.batch_size} {overrides}".rstrip())
        print(machine_line())
        peak = train_speed.matmul_flops_per_second()
        print(f"TensorFlow float32 matmul peak (2048^3, same run): {peak / 1e9:.1f} GFLOP/s")
        modes = {"on": [True], "off": [False], "both": [False, True]}[fv.jit_compile]
        results = {}
        for jit in modes:
            built = experiment.from_config(config, spec)
            if jit is modes[0]:
                counts = cost.parameter_counts(built)
                print(f"params: {counts['total']:,} ({counts['embedding']:,} embedding, "
                      f"{counts['dense']:,} dense)")
            r = train_speed.measure(built, ds, fv.batch_size, steps=fv.steps, warmup=fv.warmup,
                                    jit_compile=jit, peak=peak)
            results[jit] = r
            print(f"jit_compile={'on' if jit else 'off'}: {r.examples_per_second:,.0f} "
                  f"examples/s, {r.step_seconds * 1000:.1f} ms/step, forward "
                  f"{cost.format_count(r.forward_flops_per_example)}FLOP/example, achieved "
                  f"{r.achieved_flops / 1e9:.1f} GFLOP/s, MFU {r.mfu:.1%}")
        if len(results) == 2:
            print(f"XLA on/off throughput ratio: "
                  f"{results[True].examples_per_second / results[False].examples_per_second:.2f}")
        print(f"peak RSS (VmHWM): {synthetic.peak_rss_mb():.0f} MiB")
        return 0


COMMANDS.append(Train())


class Peer(Command):
    """Races tfmdl against DeepCTR (the `bench` extra) on the same architecture and
in-memory data: builds DeepCTR's MMOE / PLE / SharedBottom and tfmdl's model of the
same name with the same embeddings, experts, gates and towers, trains both with Adam
in alternating timed rounds, and prints training examples/s, the ratio tfmdl /
DeepCTR and both models' AUC per task after the same number of steps."""

    name = "benchmark peer"
    summary = "tfmdl vs DeepCTR training speed and AUC on the same architecture"

    def flags(self, fv):
        flags.DEFINE_enum("model", "mmoe", ["mmoe", "ple", "shared_bottom"], "model to race",
                          flag_values=fv)
        flags.DEFINE_string("data", None, "data directory (spec.yaml, train/eval shards)",
                            flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)
        flags.DEFINE_integer("train", 100_000, "train examples held in memory", flag_values=fv)
        flags.DEFINE_integer("eval", 20_000, "eval examples for the AUC", flag_values=fv)
        flags.DEFINE_integer("batch_size", 1024, "batch size", flag_values=fv)
        flags.DEFINE_integer("warmup", 20, "untimed warm-up steps per model", flag_values=fv)
        flags.DEFINE_integer("steps", 40, "steps per timed round", flag_values=fv)
        flags.DEFINE_integer("rounds", 4, "alternating timed rounds", flag_values=fv)
        flags.DEFINE_enum("jit_compile", "on", ["on", "off"], "XLA for the tfmdl model",
                          flag_values=fv)
        flags.DEFINE_enum("table_optimizer", "adam", ["adam", "adagrad", "lazy_adam", "sgd"],
                          "embedding-table optimizer of both sides (dense weights: Adam); "
                          "adagrad = tfmdl's default split, lr 0.05; sgd lr 0.5",
                          flag_values=fv)
        flags.DEFINE_enum("deepctr_table_optimizer", None,
                          ["adam", "adagrad", "lazy_adam", "sgd"],
                          "DeepCTR's table optimizer when it differs from --table_optimizer "
                          "(adam: DeepCTR's out-of-the-box Adam on every weight, to race "
                          "each library's defaults)", flag_values=fv)
        flags.DEFINE_string("json", None, "also write the result as JSON here", flag_values=fv)

    def run(self, fv):
        from tfmdl import evaluation  # pylint: disable=g-import-not-at-top
        from tfmdl.benchmark import peer  # pylint: disable=g-import-not-at-top

        print(f"tfmdl benchmark peer --model={fv.model} --data={fv.data} --train={fv.train} "
              f"--eval={fv.eval} --batch_size={fv.batch_size} --warmup={fv.warmup} "
              f"--steps={fv.steps} --rounds={fv.rounds} --jit_compile={fv.jit_compile} "
              f"--table_optimizer={fv.table_optimizer}"
              + (f" --deepctr_table_optimizer={fv.deepctr_table_optimizer}"
                 if fv.deepctr_table_optimizer else ""))
        print(machine_line())
        try:
            result = peer.run(fv.model, fv.data, train=fv.train, eval_examples=fv.eval,
                              batch_size=fv.batch_size, warmup_steps=fv.warmup,
                              steps=fv.steps, rounds=fv.rounds,
                              jit_compile=fv.jit_compile == "on",
                              table_optimizer=fv.table_optimizer,
                              deepctr_table_optimizer=fv.deepctr_table_optimizer)
        except (ValueError, ImportError) as exc:
            sys.stderr.write(f"tfmdl benchmark peer: {exc}\n")
            return 2
        print(peer.format_result(result))
        if fv.json:
            evaluation.write_json(fv.json, result)
        return 0


COMMANDS.append(Peer())
