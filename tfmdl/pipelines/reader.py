"""`tf.data` TFRecord reader built from a `FeatureSpec`.

``make_dataset(spec, pattern, batch_size)`` yields ``(features, labels,
sample_weights)``:

* ``features``: ``{name: tensor}`` for the scenario field and every model
  feature. Scalars are ``[B]`` (int64, string or float32), sequences
  ``[B, max_len]`` padded with -1 / "" (``padding: post`` keeps the first
  ``max_len`` values, ``pre`` the last), a multi-valued scenario ``[B, S]``
  padded with -1. With ``include_passthrough=True`` the passthrough fields
  (true probabilities, query ids) are added.
* ``labels``: ``{task: float32 [B]}`` in {0, 1}; a missing label (absent or -1)
  reads as 0 with weight 0.
* ``sample_weights``: ``{task: float32 [B]}``, 1 where the label is present.

The pipeline is: list files (seeded shuffle) -> parallel interleave of
``TFRecordDataset`` -> [cache] -> seeded shuffle (of small blocks of records,
see ``shuffle_block``) -> [repeat] -> batch ->
vectorised ``parse_example`` -> prefetch(AUTOTUNE). Batching before parsing
lets one ``parse_example`` call handle a whole batch.

Under tf.distribute, pass the `tf.distribute.InputContext` from
``distribute_datasets_from_function``: files are sharded per input pipeline and
the batch size becomes the per-replica one. Datasets distributed with
``experimental_distribute_dataset`` auto-shard by file (by record when there
are fewer files than workers).

Corrupt data: TensorFlow's DataLossError does not say which file failed;
`diagnose_data_loss` (used by `iterate` and the CLI) re-reads the files to name
the file and record. With ``ignore_errors=True`` the rest of a corrupt file is
skipped; `count_skipped` compares the examples read with the shard manifest.
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord

_TF_DTYPES = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}


class DataError(ValueError):
    """Input data is missing or unreadable; the message names the path."""


def resolve_files(pattern: Union[str, Sequence[str]], split: Optional[str] = None) -> List[str]:
    """Expands a file pattern, a directory (+ split name) or a list of files.

    ``resolve_files("DIR", "train")`` matches ``DIR/train-*.tfrecord*``.
    Raises `DataError` naming the path when nothing matches.
    """
    if isinstance(pattern, (list, tuple)):
        files = [str(p) for p in pattern]
        missing = [p for p in files if not tf.io.gfile.exists(p)]
        if missing:
            raise DataError(f"data file {missing[0]} does not exist.")
        if not files:
            raise DataError("no data files given.")
        return files
    pattern = str(pattern)
    if tf.io.gfile.isdir(pattern):
        if split is None:
            raise DataError(f"{pattern} is a directory; name a split (train/eval) or a "
                            f"file pattern such as {pattern}/train-*.tfrecord.")
        pattern = os.path.join(pattern, f"{split}-*.tfrecord*")
    elif not any(ch in pattern for ch in "*?[") and not tf.io.gfile.exists(pattern):
        parent = os.path.dirname(pattern) or "."
        if not tf.io.gfile.exists(parent):
            raise DataError(f"data directory {parent} does not exist.")
        raise DataError(f"data file {pattern} does not exist.")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        parent = os.path.dirname(pattern) or "."
        if not tf.io.gfile.exists(parent):
            raise DataError(f"data directory {parent} does not exist.")
        raise DataError(f"no files match {pattern}.")
    return files


def parsing_spec(spec: spec_lib.FeatureSpec, include_labels: bool = True,
                 include_passthrough: bool = False) -> Dict[str, object]:
    """The `tf.io.parse_example` feature description for ``spec``.

    A feature without a ``default`` is required: an example that lacks it fails
    to parse with an error naming the feature. Sequences may be empty.
    """
    out: Dict[str, object] = {}
    scen = spec.scenario
    if scen.multi_valued:
        out[scen.feature] = tf.io.RaggedFeature(tf.int64)
    else:
        out[scen.feature] = tf.io.FixedLenFeature([], tf.int64)
    for f in spec.features:
        dtype = _TF_DTYPES[f.dtype]
        if f.type == spec_lib.SEQUENCE:
            out[f.name] = tf.io.RaggedFeature(dtype)
        elif f.default is None:
            out[f.name] = tf.io.FixedLenFeature([], dtype)
        else:
            out[f.name] = tf.io.FixedLenFeature([], dtype, default_value=f.default)
    if include_labels:
        for t in spec.tasks:
            out[t.label] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    if include_passthrough:
        for p in spec.passthrough:
            default = p.default
            if default is None:
                default = {"int64": -1, "float32": float("nan"), "string": ""}[p.dtype]
            out[p.name] = tf.io.FixedLenFeature([], _TF_DTYPES[p.dtype], default_value=default)
    return out


def _pad_sequence(ragged: tf.RaggedTensor, feature: spec_lib.Feature) -> tf.Tensor:
    pad = feature.pad_value
    if feature.padding == "post":
        return ragged.to_tensor(default_value=pad, shape=[None, feature.max_len])
    # pre-padding keeps the last max_len values, aligned to the right
    lengths = ragged.row_lengths()
    dense = ragged.to_tensor(default_value=pad)
    reversed_rows = tf.reverse_sequence(dense, lengths, seq_axis=1, batch_axis=0)
    width = tf.shape(reversed_rows)[1]
    kept = reversed_rows[:, :feature.max_len]
    kept = tf.pad(kept, [[0, 0], [0, tf.maximum(feature.max_len - width, 0)]],
                  constant_values=pad)
    return tf.reverse(kept, axis=[1])


def make_parse_fn(spec: spec_lib.FeatureSpec, include_labels: bool = True,
                  include_passthrough: bool = False):
    """Returns ``fn(serialized [B]) -> (features, labels, weights)`` (or features
    only when ``include_labels`` is False)."""
    description = parsing_spec(spec, include_labels, include_passthrough)
    scen = spec.scenario

    def parse(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, description)
        features = {}
        if scen.multi_valued:
            features[scen.feature] = parsed[scen.feature].to_tensor(
                default_value=-1, shape=[None, scen.count])
        else:
            features[scen.feature] = parsed[scen.feature]
        for f in spec.features:
            value = parsed[f.name]
            features[f.name] = _pad_sequence(value, f) if f.type == spec_lib.SEQUENCE else value
        if include_passthrough:
            for p in spec.passthrough:
                features[p.name] = parsed[p.name]
        if not include_labels:
            return features
        labels, weights = {}, {}
        for t in spec.tasks:
            raw = parsed[t.label]
            valid = (raw == 0) | (raw == 1) | (raw == -1)
            check = tf.debugging.Assert(
                tf.reduce_all(valid),
                [f"label {t.label} of task {t.name} must be 0, 1 or -1 (missing); got",
                 tf.boolean_mask(raw, ~valid)[:5]])
            with tf.control_dependencies([check]):
                present = tf.cast(raw >= 0, tf.float32)
            labels[t.name] = tf.cast(tf.maximum(raw, 0), tf.float32)
            weights[t.name] = present
        return features, labels, weights

    return parse


def make_dataset(spec: spec_lib.FeatureSpec,
                 pattern: Union[str, Sequence[str]],
                 batch_size: int,
                 *,
                 split: Optional[str] = None,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 shuffle_buffer: int = 10_000,
                 shuffle_block: int = 32,
                 repeat: Union[bool, int] = False,
                 cache: bool = False,
                 drop_remainder: bool = False,
                 include_labels: bool = True,
                 include_passthrough: bool = False,
                 ignore_errors: bool = False,
                 cycle_length: Optional[int] = None,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 compression: Optional[str] = "auto",
                 num_workers: Optional[int] = None) -> tf.data.Dataset:
    """Builds the `tf.data` pipeline described in the module docstring.

    Args:
      spec: the feature spec.
      pattern: file pattern, list of files, or a data directory with ``split``.
      batch_size: global batch size (per-replica when ``input_context`` is given,
        computed by the context).
      split: "train" or "eval" when ``pattern`` is a directory.
      shuffle: shuffle files and records (seeded when ``seed`` is set; a seed
        also makes interleaving deterministic).
      seed: shuffle seed.
      shuffle_buffer: records held by the shuffle buffer.
      shuffle_block: records shuffled as one unit. The per-element cost of
        ``Dataset.shuffle`` dominated the pipeline (about 190k vs 250k+
        examples/s on 2 cores, docs/benchmarks.md), so runs of this many
        consecutive records of one file move together; 1 gives exact
        record-level shuffling.
      repeat: True for forever, an int for that many epochs, False for once.
      cache: cache the raw records in memory after the first epoch.
      drop_remainder: drop the last partial batch (static shapes for XLA).
      include_labels: yield (features, labels, weights); False yields features.
      include_passthrough: add the spec's passthrough fields to the features.
      ignore_errors: skip the rest of a corrupt file instead of failing.
      cycle_length: files read in parallel (default: min(#files, 8)).
      input_context: tf.distribute input context for per-pipeline sharding.
      compression: "auto" (GZIP for ``*.gz``), None or "GZIP".
      num_workers: workers of a multi-worker strategy; with fewer files than
        workers, auto-sharding splits records instead of files.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    files = resolve_files(pattern, split)
    if compression == "auto":
        kinds = {tfrecord.compression_of(f) for f in files}
        if len(kinds) > 1:
            raise DataError(f"{pattern}: mixes GZIP and uncompressed shards; keep one kind.")
        compression = kinds.pop()
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if input_context.num_input_pipelines > 1:
            if len(files) < input_context.num_input_pipelines:
                raise DataError(
                    f"{pattern}: {len(files)} file(s) cannot be sharded over "
                    f"{input_context.num_input_pipelines} input pipelines; write at least "
                    f"one shard per worker.")
            files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    deterministic = seed is not None or not shuffle
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(files), 8)

    if shuffle_block <= 0:
        raise ValueError(f"shuffle_block must be positive, got {shuffle_block}.")
    block = shuffle_block if shuffle else 1

    def read_file(path):
        records = tf.data.TFRecordDataset(path, compression_type=compression or "",
                                          buffer_size=1 << 20)
        if ignore_errors:
            records = records.apply(tf.data.experimental.ignore_errors(log_warning=True))
        return records.batch(block) if block > 1 else records

    ds = ds.interleave(read_file, cycle_length=cycle, block_length=1 if block > 1 else 16,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(max(shuffle_buffer // block, 1), seed=seed, reshuffle_each_iteration=True)
    if block > 1:
        ds = ds.unbatch()
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(make_parse_fn(spec, include_labels, include_passthrough),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if len(files) >= (num_workers or 1)
        else tf.data.experimental.AutoShardPolicy.DATA)
    options.deterministic = deterministic
    return ds.with_options(options)


def find_corrupt_record(files: Sequence[str], compression: Optional[str] = "auto"
                        ) -> Optional[Tuple[str, int, str]]:
    """Reads ``files`` one by one; returns (file, record index, TF message) of
    the first unreadable record, or None when every file reads cleanly."""
    for path in files:
        comp = tfrecord.compression_of(path) if compression == "auto" else compression
        count = 0
        try:
            for batch in tf.data.TFRecordDataset(path, compression_type=comp or "").batch(4096):
                count += int(batch.shape[0])
        except tf.errors.DataLossError as exc:
            # batches are all-or-nothing, so re-count the failing one record by record
            count = 0
            try:
                for _ in tf.data.TFRecordDataset(path, compression_type=comp or ""):
                    count += 1
            except tf.errors.DataLossError:
                pass
            return path, count, exc.message
    return None


def diagnose_data_loss(files: Sequence[str], error: Exception) -> DataError:
    """Turns a DataLossError raised while reading ``files`` into an error that
    names the corrupt file and record."""
    found = find_corrupt_record(files)
    if found is None:
        return DataError(f"reading {len(files)} file(s) failed with data loss ({error}), but "
                         f"every file reads cleanly now; was a file being written?")
    path, index, message = found
    return DataError(f"{path}: corrupt record at index {index} ({message}). Re-create the file, "
                     f"or pass ignore_errors=True (--ignore_errors) to skip the rest of it.")


@contextlib.contextmanager
def naming_corrupt_files(files: Sequence[str]):
    """Context manager re-raising DataLossError as a `DataError` naming the file."""
    try:
        yield
    except tf.errors.DataLossError as exc:
        raise diagnose_data_loss(files, exc) from None


def iterate(ds: tf.data.Dataset, files: Sequence[str]) -> Iterator:
    """Iterates ``ds`` and names the corrupt file if reading fails."""
    with naming_corrupt_files(files):
        for element in ds:
            yield element


def count_skipped(files: Sequence[str], examples_read: int) -> Optional[int]:
    """Records skipped by ``ignore_errors`` (manifest count - read), or None when
    the files have no manifest."""
    expected = tfrecord.expected_records(list(files))
    return None if expected is None else max(expected - examples_read, 0)
