"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays the `PredictionLog` records of this TFRecord file when it
loads a model version, before the version takes traffic, so the first real
requests do not pay for graph optimisation and memory allocation. tfmdl builds
them from real examples of a data split (default batches of 1, 8 and 32 on
``serving_default``, and one batch of 8 on ``predict_raw``), so they exercise
the same parsing and lookups live traffic does.

A warm-up request that fails makes TF Serving refuse the whole version, so
`tfmdl.serving.export` runs every request through the module before writing.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord
from tfmdl.serving import client
from tfmdl.serving import signatures as sig_lib

try:
    from tensorflow_serving.apis import prediction_log_pb2
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("tfmdl.serving.warmup needs tensorflow-serving-api: "
                      "pip install -e '.[serving]'") from _exc

WARMUP_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"
# (signature, batch size) of the default warm-up requests
DEFAULT_REQUESTS: Tuple[Tuple[str, int], ...] = (
    (sig_lib.SERVING_DEFAULT, 1), (sig_lib.SERVING_DEFAULT, 8), (sig_lib.SERVING_DEFAULT, 32),
    (sig_lib.PREDICT_RAW, 8))


def read_records(data: str, split: str = "eval", limit: int = 32,
                 spec: Optional[spec_lib.FeatureSpec] = None) -> List[bytes]:
    """The first ``limit`` serialized records of a data split (a directory + split,
    a file pattern or a file), read in file order. Parquet data (which needs
    ``spec``) is encoded into `tf.train.Example`s (`parquet.read_examples`)."""
    files = reader.resolve_files(data, split)
    if reader.source_of(files) == reader.PARQUET:
        from tfmdl.pipelines import parquet  # pylint: disable=g-import-not-at-top

        if spec is None:
            raise ValueError(f"{data}: warm-up requests from Parquet data need the spec.")
        examples = parquet.read_examples(spec, files, limit)
        if not examples:
            raise reader.DataError(f"{data}: the {split} split holds no rows for warm-up "
                                   f"requests.")
        return examples
    out: List[bytes] = []
    for path in files:
        ds = tf.data.TFRecordDataset(path, compression_type=tfrecord.compression_of(path) or "")
        for record in ds.take(limit - len(out)):
            out.append(bytes(record.numpy()))
        if len(out) >= limit:
            break
    if not out:
        raise reader.DataError(f"{data}: the {split} split holds no records for warm-up "
                               f"requests.")
    return out


def build_requests(spec: spec_lib.FeatureSpec, model_name: str, records: Sequence[bytes],
                   requests: Sequence[Tuple[str, int]] = DEFAULT_REQUESTS) -> List[object]:
    """`PredictionLog` records for ``(signature, batch)`` pairs, each batch the first
    ``batch`` of ``records`` (fewer when fewer records are given)."""
    logs = []
    for signature, batch in requests:
        request = client.predict_request(spec, model_name, list(records[:batch]), signature)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_requests(path: str, logs: Sequence[object]) -> None:
    """Writes ``PredictionLog`` records to ``path`` (a TFRecord file)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read_requests(path: str) -> List[object]:
    """Reads a warm-up file back as a list of ``PredictionLog`` messages."""
    out = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        out.append(log)
    return out


def warmup_path(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILE)


def replay(signatures, logs: Sequence[object], model_name: Optional[str] = None) -> List[dict]:
    """Runs each logged request through ``signatures[signature_name]`` (a loaded
    SavedModel's ``.signatures`` or an equivalent mapping); returns the outputs.
    With ``model_name``, checks every request names that model."""
    outputs = []
    for i, log in enumerate(logs):
        request = log.predict_log.request
        if model_name is not None and request.model_spec.name != model_name:
            raise ValueError(f"warm-up request {i} names model {request.model_spec.name!r}, "
                             f"expected {model_name!r}.")
        fn = signatures[request.model_spec.signature_name or sig_lib.SERVING_DEFAULT]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs.append(fn(**inputs))
    return outputs
