"""``tfmdl data ...``: synthetic data, conversion to TFRecord, oracle tables."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from absl import flags

from tfmdl.cli.command import Command


def print_oracle(report: dict, out=sys.stdout) -> None:
    """Prints the oracle (true-probability) tables of an oracle.json report."""
    from tfmdl import metrics  # pylint: disable=g-import-not-at-top

    table = report.get("oracle")
    if not table:
        out.write("no eval split: no oracle table.\n")
        return
    rows = report.get("eval_rows_scored")
    for metric in ("auc", "gauc", "qauc"):
        first = next(iter(table.values()))
        if metric not in next(iter(first.values())):
            continue
        out.write(f"\nOracle {metric.upper()} (true probabilities, eval split, {rows} rows)\n\n")
        out.write(metrics.format_table_markdown(table, metric=metric) + "\n")
    out.write("\nTrain positive rates: target / observed\n\n")
    rates = report.get("train_positive_rates", {})
    tasks = list(next(iter(rates.values())).keys()) if rates else []
    out.write("| scenario | " + " | ".join(tasks) + " |\n")
    out.write("|---|" + "---|" * len(tasks) + "\n")
    for scen, per_task in rates.items():
        cells = [f"{v['target']:.4%} / {v['label_rate']:.4%}" for v in per_task.values()]
        out.write(f"| {scen} | " + " | ".join(cells) + " |\n")


def _swap_into_place(tmp: str, out: str) -> None:
    """Replaces ``out`` by the finished ``tmp`` directory with two renames."""
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


class Synth(Command):
    """Writes DIR/spec.yaml, DIR/train-*.tfrecord, DIR/eval-*.tfrecord, DIR/manifest.json
and DIR/oracle.json. The data set is built in a temporary directory beside DIR and
moved into place only when complete. Same flags + seed -> byte-identical files."""

    name = "data synth"
    summary = "generate the synthetic benchmark (feed or search preset) with its oracle"

    def flags(self, fv):
        flags.DEFINE_enum("preset", "feed", ["feed", "search"], "data preset", flag_values=fv)
        flags.DEFINE_integer("train", 100_000, "train examples", lower_bound=0, flag_values=fv)
        flags.DEFINE_integer("eval", 20_000, "eval examples", lower_bound=0, flag_values=fv)
        flags.DEFINE_integer("seed", 0, "random seed", flag_values=fv)
        flags.DEFINE_string("out", None, "output directory", flag_values=fv)
        flags.DEFINE_integer("users", None, "number of users (preset default)", flag_values=fv)
        flags.DEFINE_integer("items", None, "number of items (preset default)", flag_values=fv)
        flags.DEFINE_float("scenario_shift", 0.6, "strength of per-scenario latent offsets",
                           flag_values=fv)
        flags.DEFINE_float("user_overlap", None,
                           "fraction of users active in every scenario (preset default)",
                           flag_values=fv)
        flags.DEFINE_float("item_overlap", None,
                           "fraction of items exposed in every scenario (preset default)",
                           flag_values=fv)
        flags.DEFINE_float("multi_scenario_fraction", 0.0,
                           "fraction of instances in two scenarios (multi-hot scenario field)",
                           flag_values=fv)
        flags.DEFINE_integer("records_per_shard", 100_000, "records per TFRecord shard",
                             flag_values=fv)
        flags.DEFINE_enum("compression", "none", ["none", "gzip"], "shard compression",
                          flag_values=fv)
        flags.DEFINE_integer("workers", 0, "generator processes (0: automatic)", flag_values=fv)
        flags.DEFINE_enum("row_order", "shuffled", ["shuffled", "by_user", "by_time"],
                          "order of the train split's rows: shuffled (generation order, "
                          "random across users), by_user (sorted by user id within and "
                          "across shards, like a log exported by user) or by_time (sorted by "
                          "the hour feature); eval keeps generation order. The sorted orders "
                          "hold the train split in memory (at most 2,000,000 rows)",
                          flag_values=fv)
        flags.DEFINE_bool("overwrite", False, "replace an existing data set in --out",
                          flag_values=fv)
        flags.DEFINE_bool("reuse", False, "keep an existing complete data set made with the "
                          "same flags instead of regenerating it", flag_values=fv)
        flags.mark_flag_as_required("out", flag_values=fv)

    def run(self, fv):
        from tfmdl.pipelines import synthetic  # pylint: disable=g-import-not-at-top

        try:
            cfg = synthetic.SynthConfig(
                preset=fv.preset, train=fv.train, eval=fv.eval, seed=fv.seed, users=fv.users,
                items=fv.items, scenario_shift=fv.scenario_shift, user_overlap=fv.user_overlap,
                item_overlap=fv.item_overlap, multi_scenario_fraction=fv.multi_scenario_fraction,
                records_per_shard=fv.records_per_shard,
                compression=None if fv.compression == "none" else "GZIP", row_order=fv.row_order)
        except ValueError as exc:
            sys.stderr.write(f"tfmdl data synth: {exc}\n")
            return 2
        out = fv.out.rstrip("/")
        oracle_path = os.path.join(out, "oracle.json")
        if os.path.exists(out) and os.listdir(out):
            existing = _load_json(oracle_path)
            same = existing is not None and existing.get("config") == _jsonable(cfg)
            if fv.reuse and same and os.path.exists(os.path.join(out, "manifest.json")):
                print(f"reusing {out} (same flags and seed).")
                print_oracle(existing)
                return 0
            if not fv.overwrite:
                sys.stderr.write(f"tfmdl data synth: {out} exists and is not empty; pass "
                                 f"--overwrite to replace it or --reuse to keep it.\n")
                return 2
        parent = os.path.dirname(os.path.abspath(out))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-synth-{os.getpid()}-{os.path.basename(out)}")
        shutil.rmtree(tmp, ignore_errors=True)
        last = [0.0]

        def progress(split, done, total):
            now = time.perf_counter()
            if now - last[0] > 2 or done == total:
                last[0] = now
                print(f"  {split}: {done}/{total}", flush=True)

        try:
            result = synthetic.generate(cfg, tmp, workers=fv.workers, progress=progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_into_place(tmp, out)
        print(f"wrote {result.rows} examples to {out} in {result.seconds:.1f} s "
              f"({result.examples_per_second:,.0f} examples/s)")
        print_oracle(result.oracle)
        return 0


def _load_json(path):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _jsonable(cfg):
    import dataclasses  # pylint: disable=g-import-not-at-top

    return json.loads(json.dumps(dataclasses.asdict(cfg)))


class Oracle(Command):
    """Prints DIR/oracle.json as tables."""

    name = "data oracle"
    summary = "print the oracle tables of a synthetic data set"

    def flags(self, fv):
        flags.DEFINE_string("data", None, "data directory holding oracle.json", flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)

    def run(self, fv):
        path = os.path.join(fv.data, "oracle.json")
        report = _load_json(path)
        if report is None:
            sys.stderr.write(f"tfmdl data oracle: {path} is missing or not valid JSON.\n")
            return 2
        print_oracle(report)
        return 0


class Convert(Command):
    """Streams a CSV or Parquet file into TFRecord shards typed by the spec. A bad row
stops the conversion with an error naming the file, row and column (nothing is
written); --skip_bad_rows skips such rows and prints their count. The train split's
rows are written in a seeded random order (--shuffle_rows); manifest.json records
each split's shards and label counts."""

    name = "data convert"
    summary = "convert CSV or Parquet to TFRecord shards using a feature spec"

    def flags(self, fv):
        flags.DEFINE_string("spec", None, "feature spec YAML", flag_values=fv)
        flags.DEFINE_string("input", None, "input .csv or .parquet file", flag_values=fv)
        flags.DEFINE_string("out", None, "output directory", flag_values=fv)
        flags.DEFINE_string("split", "train", "split name: shards are <split>-NNNNN.tfrecord",
                            flag_values=fv)
        flags.DEFINE_bool("skip_bad_rows", False, "skip (and count) rows that fail to parse",
                          flag_values=fv)
        flags.DEFINE_float("min_rows", 0.5, "with --skip_bad_rows: the least fraction of the "
                           "input's rows to keep; a conversion keeping fewer (or none) fails "
                           "and leaves the existing split in --out untouched", lower_bound=0,
                           upper_bound=1, flag_values=fv)
        flags.DEFINE_enum("compression", "none", ["none", "gzip"], "shard compression",
                          flag_values=fv)
        flags.DEFINE_integer("records_per_shard", 250_000, "records per shard", flag_values=fv)
        flags.DEFINE_integer("chunk_rows", 65_536, "rows read per chunk", flag_values=fv)
        flags.DEFINE_bool("shuffle_rows", None,
                          "write the rows in a seeded random order spread over the shards, so "
                          "a log sorted by user or time trains like a shuffled one (an "
                          "external shuffle: one extra write and read of the split on disk, "
                          "one shard's records in memory). Default: on for --split=train, off "
                          "for other splits (they keep the input order)", flag_values=fv)
        flags.DEFINE_integer("shuffle_seed", 0, "seed of the --shuffle_rows order",
                             flag_values=fv)
        for name in ("spec", "input", "out"):
            flags.mark_flag_as_required(name, flag_values=fv)

    def run(self, fv):
        from tfmdl.pipelines import convert  # pylint: disable=g-import-not-at-top
        from tfmdl.pipelines import spec as spec_lib  # pylint: disable=g-import-not-at-top

        try:
            spec = spec_lib.load_spec(fv.spec)
            result = convert.convert(
                spec, fv.input, fv.out, split=fv.split, records_per_shard=fv.records_per_shard,
                compression=None if fv.compression == "none" else "GZIP",
                skip_bad_rows=fv.skip_bad_rows, chunk_rows=fv.chunk_rows,
                shuffle_rows=fv.shuffle_rows, shuffle_seed=fv.shuffle_seed,
                min_rows=fv.min_rows)
        except (ValueError, OSError) as exc:
            sys.stderr.write(f"tfmdl data convert: {exc}\n")
            return 2
        print(f"wrote {result.rows_written} rows to {len(result.shards)} shard(s) in {fv.out}")
        if result.rows_skipped:
            print(f"skipped {result.rows_skipped} bad row(s); first errors:")
            for err in result.first_errors:
                print(f"  {err}")
        return 0


COMMANDS = [Synth(), Oracle(), Convert()]
