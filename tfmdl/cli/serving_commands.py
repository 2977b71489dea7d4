"""``tfmdl export``, ``tfmdl predict`` and ``tfmdl benchmark serve``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List

from absl import flags

from tfmdl.cli.benchmark_commands import machine_line
from tfmdl.cli.command import Command

_TABLE_FORMATS = (".csv", ".csv.gz", ".csv.bz2", ".parquet", ".pq")


def _errors():
    """Reported as one line (exit code 2): ValueError subclasses (ExportError,
    ModelDirError, SpecError, DataError, ConvertError, RequestError), OS errors and
    TensorFlow op errors (a request the model rejects, naming the feature)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return (ValueError, OSError, tf.errors.OpError)


def _message(exc) -> str:
    text = getattr(exc, "message", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.strip()


class Export(Command):
    """Exports a trained model directory as a TF Serving SavedModel in
E/NAME/V (integer version, default the next free one). Signatures: serving_default
(input `examples`: serialized tf.train.Example) and predict_raw (raw feature
tensors); outputs one probability per task. assets.extra holds the TF Serving
warm-up requests (real examples of --data's eval split), the feature spec and
tfmdl_export.json. Written into E/NAME/.tmp-V-<pid> and renamed into place when
complete."""

    name = "export"
    summary = "export a trained model as a TF Serving SavedModel (E/NAME/V)"

    def flags(self, fv):
        flags.DEFINE_string("model_dir", None, "model directory written by tfmdl train",
                            flag_values=fv)
        flags.DEFINE_string("export_base", None, "export root E (the model goes to E/NAME/V)",
                            flag_values=fv)
        flags.DEFINE_string("model_name", None, "TF Serving model name NAME", flag_values=fv)
        flags.DEFINE_integer("version", None, "version V (default: largest existing + 1, "
                             "from 1); an existing version is an error", lower_bound=1,
                             flag_values=fv)
        flags.DEFINE_string("data", None, "data directory whose eval split gives the warm-up "
                            "requests (default: the one recorded by tfmdl evaluate in "
                            "M/eval.json)", flag_values=fv)
        flags.DEFINE_string("split", "eval", "split of --data for the warm-up requests",
                            flag_values=fv)
        flags.DEFINE_bool("warmup", True, "write assets.extra/tf_serving_warmup_requests",
                          flag_values=fv)
        for name in ("model_dir", "export_base", "model_name"):
            flags.mark_flag_as_required(name, flag_values=fv)

    def run(self, fv):
        from tfmdl.serving import export  # pylint: disable=g-import-not-at-top

        try:
            result = export.export(fv.model_dir, fv.export_base, fv.model_name,
                                   version=fv.version, data=fv.data, split=fv.split,
                                   warmup=fv.warmup)
        except _errors() as exc:
            sys.stderr.write(f"tfmdl export: {_message(exc)}\n")
            return 2
        print(f"exported {fv.model_dir} -> {result.path} (model {result.model_name}, "
              f"version {result.version})")
        print("signatures: serving_default (examples: serialized tf.train.Example), "
              "predict_raw (raw feature tensors)")
        print(f"warm-up requests: {result.warmup_requests}")
        return 0


def _read_records(files: List[str], limit) -> List[bytes]:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import tfrecord  # pylint: disable=g-import-not-at-top

    out: List[bytes] = []
    for path in files:
        ds = tf.data.TFRecordDataset(path, compression_type=tfrecord.compression_of(path) or "")
        if limit is not None:
            ds = ds.take(limit - len(out))
        with reader.naming_corrupt_files([path]):    # file and record index, not TF's text
            out.extend(bytes(r.numpy()) for r in ds)
        if limit is not None and len(out) >= limit:
            break
    return out


def _serve_batch(serve, records: List[bytes], start: int, source: str):
    """One serving_default call on ``records`` (rows ``start``...); a record that is
    not a serialized tf.train.Example is named by its row (TensorFlow's message
    quotes the raw bytes, which need not even be UTF-8)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top

    try:
        return serve(examples=tf.constant(records))
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as exc:
        text = _message(exc) if not isinstance(exc, UnicodeDecodeError) else ""
        if text and "Could not parse example input" not in text:
            raise
        for i, record in enumerate(records):   # find the first record that does not parse
            try:
                ex = tf.train.Example()
                ex.ParseFromString(record)
            except Exception:  # pylint: disable=broad-except
                raise reader.DataError(f"{source}: row {start + i} is not a serialized "
                                       f"tf.train.Example ({len(record)} bytes).") from None
        raise reader.DataError(f"{source}: rows {start}-{start + len(records) - 1}: a record "
                               f"is not a serialized tf.train.Example.") from None


def _table_records(spec, path: str, limit) -> List[bytes]:
    """Converts a CSV/Parquet table with `convert.convert` (same conventions as
    ``tfmdl data convert``) into a temporary TFRecord and reads it back. Labels and
    passthrough columns are not needed for scoring."""
    import dataclasses  # pylint: disable=g-import-not-at-top

    from tfmdl.pipelines import convert  # pylint: disable=g-import-not-at-top
    from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top

    inputs_only = dataclasses.replace(spec, passthrough=())
    work = tempfile.mkdtemp(prefix="tfmdl-predict-")
    try:
        convert.convert(inputs_only, path, work, split="predict")
        return _read_records(reader.resolve_files(work, "predict"), limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Predict(Command):
    """Scores examples with an exported SavedModel (its serving_default signature, as TF
Serving runs it) and prints one CSV line per example: row, then the probability of
each task. --input is a TFRecord file (or pattern) of tf.train.Example, or a CSV /
Parquet table read like `tfmdl data convert` reads it (`|`-separated lists, an empty
cell = missing; label and passthrough columns are not needed)."""

    name = "predict"
    summary = "score a TFRecord or CSV file with an exported SavedModel"

    def flags(self, fv):
        flags.DEFINE_string("export_dir", None, "an exported version directory E/NAME/V (or "
                            "E/NAME: its latest version)", flag_values=fv)
        flags.DEFINE_string("input", None, "file.tfrecord[.gz] (or a pattern), file.csv or "
                            "file.parquet", flag_values=fv)
        flags.DEFINE_integer("limit", None, "score only the first N examples", lower_bound=1,
                             flag_values=fv)
        flags.DEFINE_integer("batch_size", 1024, "examples per signature call", lower_bound=1,
                             flag_values=fv)
        flags.mark_flag_as_required("export_dir", flag_values=fv)
        flags.mark_flag_as_required("input", flag_values=fv)

    def run(self, fv):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.serving import export  # pylint: disable=g-import-not-at-top
        from tfmdl.serving import signatures as sig_lib  # pylint: disable=g-import-not-at-top

        try:
            export_dir = export.resolve_export_dir(fv.export_dir)
            spec = export.load_spec(export_dir)
            if fv.input.lower().endswith(_TABLE_FORMATS):
                records = _table_records(spec, fv.input, fv.limit)
            else:
                records = _read_records(reader.resolve_files(fv.input), fv.limit)
            serve = tf.saved_model.load(export_dir).signatures[sig_lib.SERVING_DEFAULT]
            tasks = spec.task_names
            print(",".join(["row"] + tasks))
            for start in range(0, len(records), fv.batch_size):
                out = _serve_batch(serve, records[start:start + fv.batch_size], start,
                                   fv.input)
                scores = [out[t].numpy() for t in tasks]
                for i in range(len(scores[0])):
                    print(",".join([str(start + i)] + [f"{s[i]:.6f}" for s in scores]))
        except _errors() as exc:
            sys.stderr.write(f"tfmdl predict: {_message(exc)}\n")
            return 2
        return 0


def _percentile(values: List[float], q: float) -> float:
    import numpy as np  # pylint: disable=g-import-not-at-top

    return float(np.percentile(np.asarray(values), q))


def _time_calls(fn, batches: List, calls: int) -> List[float]:
    """Seconds per call of ``fn(batch)``, cycling through ``batches``."""
    out = []
    for i in range(calls):
        start = time.perf_counter()
        fn(batches[i % len(batches)])
        out.append(time.perf_counter() - start)
    return out


class BenchmarkServe(Command):
    """Loads an exported SavedModel and times its serving_default signature (parsing of
serialized tf.train.Example included) on real examples of --data's eval split:
p50 / p99 latency per call and examples/s at each batch size. At the largest batch it
also times the Keras model (rebuilt from the export's source model directory, or
--model_dir) on pre-parsed tensors inside a tf.function, in alternating rounds, and
prints the throughput ratio signature / Keras (target >= 0.8)."""

    name = "benchmark serve"
    summary = "latency and throughput of an exported SavedModel's serving signature"

    def flags(self, fv):
        flags.DEFINE_string("export_dir", None, "an exported version directory E/NAME/V (or "
                            "E/NAME: its latest version)", flag_values=fv)
        flags.DEFINE_string("data", None, "data directory with the examples to send",
                            flag_values=fv)
        flags.DEFINE_string("split", "eval", "split of --data", flag_values=fv)
        flags.DEFINE_string("model_dir", None, "model directory for the Keras comparison "
                            "(default: the source recorded in the export)", flag_values=fv)
        flags.DEFINE_list("batch_sizes", ["1", "16", "256"], "batch sizes to time",
                          flag_values=fv)
        flags.DEFINE_integer("calls", 300, "timed calls per batch size", lower_bound=1,
                             flag_values=fv)
        flags.DEFINE_integer("warmup", 20, "untimed calls per batch size", lower_bound=0,
                             flag_values=fv)
        flags.DEFINE_integer("rounds", 5, "alternating signature / Keras rounds for the "
                             "throughput ratio", lower_bound=1, flag_values=fv)
        flags.mark_flag_as_required("export_dir", flag_values=fv)
        flags.mark_flag_as_required("data", flag_values=fv)

    def run(self, fv):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        from tfmdl.pipelines import reader  # pylint: disable=g-import-not-at-top
        from tfmdl.serving import export  # pylint: disable=g-import-not-at-top
        from tfmdl.serving import signatures as sig_lib  # pylint: disable=g-import-not-at-top
        from tfmdl.serving import warmup  # pylint: disable=g-import-not-at-top
        from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

        try:
            sizes = sorted({int(b) for b in fv.batch_sizes})
            if not sizes or sizes[0] < 1:
                raise ValueError(f"--batch_sizes must be positive integers, got "
                                 f"{fv.batch_sizes}.")
            export_dir = export.resolve_export_dir(fv.export_dir)
            info = export.read_info(export_dir)
            spec = export.load_spec(export_dir)
            model_dir = fv.model_dir or info["model_dir"]
            records = warmup.read_records(fv.data, fv.split, limit=4 * sizes[-1], spec=spec)
            serve = tf.saved_model.load(export_dir).signatures[sig_lib.SERVING_DEFAULT]
            built, _ = model_dir_lib.load_trained(model_dir)
        except (KeyError,) + _errors() as exc:
            sys.stderr.write(f"tfmdl benchmark serve: {_message(exc)}\n")
            return 2

        def batches_of(size: int) -> List:
            count = max(1, min(4, len(records) // size))
            out = []
            for k in range(count):
                rows = [records[(k * size + j) % len(records)] for j in range(size)]
                out.append(tf.constant(rows))
            return out

        def call_signature(batch):
            return serve(examples=batch)[spec.task_names[0]].numpy()

        model_flag = f" --model_dir={fv.model_dir}" if fv.model_dir else ""
        print(f"tfmdl benchmark serve --export_dir={fv.export_dir} --data={fv.data} "
              f"--split={fv.split} --batch_sizes={','.join(map(str, sizes))} --calls={fv.calls} "
              f"--warmup={fv.warmup} --rounds={fv.rounds}{model_flag}")
        print(f"{machine_line()}, load average {os.getloadavg()[0]:.1f} at start")
        print(f"export: {export_dir}, model: {info.get('model')} ({len(spec.task_names)} "
              f"tasks), source model dir: {model_dir}, distinct examples: {len(records)}")
        print("serving_default signature (parse_example + lookup + model), per call:")
        throughput: Dict[int, float] = {}
        for size in sizes:
            batches = batches_of(size)
            _time_calls(call_signature, batches, fv.warmup)
            seconds = _time_calls(call_signature, batches, fv.calls)
            throughput[size] = size * len(seconds) / sum(seconds)
            print(f"  batch {size:>4}: p50 {_percentile(seconds, 50) * 1e3:7.2f} ms, "
                  f"p99 {_percentile(seconds, 99) * 1e3:7.2f} ms, "
                  f"{throughput[size]:>9,.0f} examples/s")

        size = sizes[-1]
        batches = batches_of(size)
        parse = reader.make_parse_fn(spec, include_labels=False)
        parsed = [parse(b) for b in batches]
        model = built.model
        keras_fn = tf.function(lambda f: model(f, training=False))
        task = spec.task_names[0]

        def call_keras(features):
            return keras_fn(features)[task].numpy()

        _time_calls(call_keras, parsed, fv.warmup)
        _time_calls(call_signature, batches, fv.warmup)
        sig_seconds, keras_seconds = [], []
        per_round = max(1, fv.calls // fv.rounds)
        for _ in range(fv.rounds):  # alternate so machine load hits both alike
            sig_seconds += _time_calls(call_signature, batches, per_round)
            keras_seconds += _time_calls(call_keras, parsed, per_round)
        sig_eps = size * len(sig_seconds) / sum(sig_seconds)
        keras_eps = size * len(keras_seconds) / sum(keras_seconds)
        print(f"throughput at batch {size} ({fv.rounds} alternating rounds of {per_round} "
              f"calls):")
        print(f"  serving_default on serialized examples: {sig_eps:,.0f} examples/s "
              f"(p50 {_percentile(sig_seconds, 50) * 1e3:.2f} ms)")
        print(f"  Keras model on pre-parsed tensors (tf.function): {keras_eps:,.0f} examples/s "
              f"(p50 {_percentile(keras_seconds, 50) * 1e3:.2f} ms)")
        print(f"  ratio signature / Keras: {sig_eps / keras_eps:.2f} (target >= 0.8)")
        return 0


COMMANDS = [Export(), Predict(), BenchmarkServe()]
