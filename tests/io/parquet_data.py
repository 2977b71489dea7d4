"""Small Parquet data sets in the layout `tfmdl.pipelines.parquet` reads."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

SPEC = spec_lib.FeatureSpec.from_dict({
    "scenario": {"feature": "scen", "names": ["a", "b", "c"]},
    "tasks": [{"name": "click"}, {"name": "like"}, {"name": "share"}],
    "features": [
        {"name": "uid", "type": "categorical", "num_buckets": 100},
        {"name": "city", "type": "categorical", "dtype": "string", "hash_buckets": 10,
         "default": "unknown"},
        {"name": "ctr", "type": "numeric", "default": 0.25},
        {"name": "age", "type": "categorical", "num_buckets": 5, "default": -1},
        {"name": "seq", "type": "sequence", "max_len": 3, "shared_table": "uid"},
        {"name": "seq_pre", "type": "sequence", "max_len": 3, "shared_table": "uid",
         "padding": "pre"},
        {"name": "tags", "type": "sequence", "dtype": "string", "hash_buckets": 20,
         "max_len": 2},
    ],
    "passthrough": [{"name": "true_click", "dtype": "float32"},
                    {"name": "query_id", "dtype": "int64"}],
})

MULTI_SPEC = spec_lib.FeatureSpec.from_dict({
    "scenario": {"feature": "scen", "names": ["a", "b", "c"], "multi_valued": True},
    "tasks": [{"name": "click"}],
    "features": [{"name": "uid", "type": "categorical", "num_buckets": 100}],
})


def _cell(values) -> str:
    return "|".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _joined(rows):
    return pa.array([_cell(row) for row in rows], pa.string())


def table(n: int, start: int = 0) -> pa.Table:
    """``n`` rows for `SPEC`: an int32 id column, empty strings for the default, a
    float64 numeric, ``|``-separated sequences (empty, short and longer than
    ``max_len``), an int64 label with -1, a float label with NaN, no ``share``
    label and no ``age`` column (both filled)."""
    r = np.arange(start, start + n)
    seqs = [list(range(i % 7, i % 7 + i % 6)) for i in r]
    return pa.table({
        "scen": pa.array(r % 3, pa.int64()),
        "uid": pa.array(r % 100, pa.int32()),
        "city": pa.array(["" if i % 4 == 0 else f"c{i % 9}" for i in r], pa.string()),
        "ctr": pa.array(r / 7.0, pa.float64()),
        "seq": _joined(seqs),
        "seq_pre": _joined(seqs),
        "tags": _joined([[f"t{i % 5}", f"u{i % 3}", "v"][: i % 4] for i in r]),
        "label_click": pa.array(np.where(r % 5 == 4, -1, r % 2), pa.int64()),
        "label_like": pa.array(np.where(r % 3 == 0, np.nan, (r // 2) % 2), pa.float64()),
        "true_click": pa.array(r / 1000.0, pa.float32()),
        "query_id": pa.array(r // 4, pa.int64()),
        "unused": pa.array(r, pa.int64()),
    })


def multi_table(n: int) -> pa.Table:
    r = np.arange(n)
    scen = [[0], [1, 2], [2, 0, 1], [1]]
    return pa.table({"scen": _joined([scen[i % 4] for i in r]),
                     "uid": pa.array(r % 100, pa.int64()),
                     "label_click": pa.array(r % 2, pa.int64())})


def write(directory: str, tables, spec=SPEC, split: str = "train",
          row_group_size: int = 64) -> list:
    """Writes ``directory/{split}-NNNNN.parquet`` (one file per table) and
    ``spec.yaml``; returns the paths."""
    tf.io.gfile.makedirs(directory)
    paths = []
    for i, t in enumerate(tables):
        path = os.path.join(directory, f"{split}-{i:05d}.parquet")
        buffer = pa.BufferOutputStream()
        pq.write_table(t, buffer, row_group_size=row_group_size)
        with tf.io.gfile.GFile(path, "wb") as fh:
            fh.write(buffer.getvalue().to_pybytes())
        paths.append(path)
    spec_lib.save_spec(spec, os.path.join(directory, "spec.yaml"))
    return paths


def tfrecord_to_table(spec: spec_lib.FeatureSpec, files) -> pa.Table:
    """The rows of TFRecord shards as a Parquet-layout table (full sequences,
    ``|``-separated), to publish TFRecord data sets as Parquet."""
    description = reader.parsing_spec(spec, include_labels=True, include_passthrough=True)
    columns = {}
    for batch in tf.data.TFRecordDataset(list(files)).batch(4096):
        parsed = tf.io.parse_example(batch, description)
        for name, value in parsed.items():
            if isinstance(value, tf.RaggedTensor):
                cells = [_cell(row) for row in value.to_list()]
            else:
                cells = value.numpy().tolist()
            columns.setdefault(name, []).extend(cells)
    return pa.table(columns)
