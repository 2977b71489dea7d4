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

How much this mixes: the file shuffle and interleave only choose which shards'
records alternate (``cycle_length``, default min(#files, 8), files at a time,
one block of each in turn); the shuffle buffer then draws at random among the
records that have been read but not yet used. A batch therefore mixes rows that
lie within about ``buffer / cycle`` records of each other in their files. That is
enough when every shard is itself a random sample, as `tfmdl data convert`
writes the train split (each shard a permutation of a random sample of the
input) and as the synthetic generator's rows are: then any records of any
shards, in any order, are a random sample, and the interleave width matters only
for throughput. It is not enough for shards written by other tools in the order
of an exported log, sorted by user or time: with a 10,000-record buffer, one
80,000-row shard sorted by user is read as a sliding window over 1/8 of its
users, which cost a real data set 0.04 AUC (issue 21). So unless the shards'
manifest records them as written in random order (`tfrecord.in_random_order`:
``tfmdl data convert``'s train split, ``tfmdl data synth``'s shuffled splits),
the buffer holds at least ``shuffle_floor`` records (`SHUFFLE_FLOOR`, 200,000,
by default): a split of up to that many records is shuffled as a whole (at the
granularity of ``shuffle_block``), a larger sorted one over windows of 200,000
records. The cost is memory: the buffer keeps the serialized records, about
0.8 KB each for the synthetic ``feed`` preset, so about 160 MB at 200,000
records (never more than the data read: a smaller split is held whole), and
time: the buffer is filled before the first batch of every epoch and reading
does not overlap parsing meanwhile (one epoch of 200,000 records took 20-40%
longer through the pipeline alone). Shards known to be in random order skip
that cost, since a bigger buffer would not mix them any better. Pass
``shuffle_floor=0`` to use exactly ``shuffle_buffer``. Blocks of
``shuffle_block`` consecutive records still move together: on a split sorted by
user, a 1,024-row batch holds about 240 distinct users instead of 1,000 (32
blocks of a few users each); ``shuffle_block=1`` removes that at the cost of
throughput. Measurements: docs/benchmarks.md, "Row order (issue 21)".

Held-out validation rows: ``holdout=("keep" | "take", fraction)`` splits every
file's records by a fingerprint of the serialized record
(``tf.strings.to_hash_bucket_fast`` into `HOLDOUT_BUCKETS` buckets): "take" yields
the records whose bucket is below ``fraction x HOLDOUT_BUCKETS``, "keep" the rest.
The split depends on the record's bytes only, not on file order, shuffling,
sharding or the epoch, so a validation set carved from the training files
(``training.validation_fraction``, docs/training.md) never meets the rows trained
on. TFRecord only.

Sources: ``source="parquet"`` (or ``"auto"`` on Parquet files) streams Parquet
files through tensorflow-io into the same batches instead (`tfmdl.pipelines.parquet`,
the ``io`` extra); the file shuffle, interleave, block shuffle and batching are
shared, so the same rows, options and seed give the same batches. Paths may be
``s3://``, ``hdfs://`` or ``az://`` URLs with the ``io`` extra
(`tfmdl.pipelines.filesystems`).

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
import dataclasses
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfmdl.pipelines import filesystems
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord

_TF_DTYPES = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}
# Records the shuffle buffer holds at least when shuffling (module docstring,
# "How much this mixes").
SHUFFLE_FLOOR = 200_000
TFRECORD = "tfrecord"
PARQUET = "parquet"
SOURCES = ("auto", TFRECORD, PARQUET)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# Parquet files of a split inside a data directory: DIR/train-*.parquet, or a
# directory of part files as Spark and Hive write them (DIR/train/*.parquet).
_PARQUET_SPLIT_PATTERNS = ("{split}-*.parquet", "{split}/*.parquet")


class DataError(ValueError):
    """Input data is missing or unreadable; the message names the path."""


def resolve_files(pattern: Union[str, Sequence[str]], split: Optional[str] = None,
                  source: str = "auto") -> List[str]:
    """Expands a file pattern, a directory (+ split name) or a list of files.

    ``resolve_files("DIR", "train")`` matches ``DIR/train-*.tfrecord*``; when there
    are none (and ``source`` is "auto" or "parquet"), ``DIR/train-*.parquet`` or
    ``DIR/train/*.parquet``. Remote paths load their file system first
    (`filesystems.require`). Raises `DataError` naming the path when nothing
    matches.
    """
    _check_source(source)
    filesystems.require(pattern)
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
        return _split_files(pattern, split, source)
    if not any(ch in pattern for ch in "*?[") and not tf.io.gfile.exists(pattern):
        parent = os.path.dirname(pattern) or "."
        if not tf.io.gfile.exists(parent):
            raise DataError(f"data directory {parent} does not exist.")
        raise DataError(f"data file {pattern} does not exist.")
    return _glob(pattern)


def _glob(pattern: str) -> List[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        parent = os.path.dirname(pattern) or "."
        if not tf.io.gfile.exists(parent):
            raise DataError(f"data directory {parent} does not exist.")
        raise DataError(f"no files match {pattern}.")
    return files


def _split_files(directory: str, split: str, source: str) -> List[str]:
    """The files of ``split`` in a data directory: TFRecord shards, else Parquet."""
    tfrecords = os.path.join(directory, f"{split}-*.tfrecord*")
    if source == TFRECORD:
        return _glob(tfrecords)
    if source == "auto":
        files = sorted(tf.io.gfile.glob(tfrecords))
        if files:
            return files
    patterns = [os.path.join(directory, p.format(split=split)) for p in _PARQUET_SPLIT_PATTERNS]
    for parquet_pattern in patterns:
        files = sorted(tf.io.gfile.glob(parquet_pattern))
        if files:
            return files
    tried = ([tfrecords] if source == "auto" else []) + patterns
    raise DataError(f"no files match {' nor '.join(tried)}.")


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")


def source_of(files: Sequence[str], source: str = "auto") -> str:
    """"parquet" when every file ends in a Parquet suffix, "tfrecord" when none
    does (``source`` other than "auto" is returned as is). Raises `DataError`
    for a mix."""
    _check_source(source)
    if source != "auto":
        return source
    parquet = [f.lower().endswith(PARQUET_SUFFIXES) for f in files]
    if all(parquet):
        return PARQUET
    if any(parquet):
        raise DataError(f"{files[parquet.index(True)]} is Parquet but {files[parquet.index(False)]} "
                        f"is not; read one kind of file at a time.")
    return TFRECORD


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


def pad_sequence(ragged: tf.RaggedTensor, feature: spec_lib.Feature) -> tf.Tensor:
    """``[B, None]`` -> ``[B, max_len]`` padded with the feature's pad value (the
    ``padding`` side; ``pre`` keeps the last ``max_len`` values)."""
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
            features[f.name] = pad_sequence(value, f) if f.type == spec_lib.SEQUENCE else value
        features = check_finite(spec, features)
        if include_passthrough:
            for p in spec.passthrough:
                features[p.name] = parsed[p.name]
        if not include_labels:
            return features
        return (features,) + labels_and_weights(spec, parsed)

    return parse


def check_finite(spec: spec_lib.FeatureSpec, features: Dict[str, tf.Tensor]
                 ) -> Dict[str, tf.Tensor]:
    """``features`` with an assertion that every numeric feature is finite.

    The one missing-value rule of every path (docs/design.md 1, "Missing and
    invalid values"): a NaN or ±inf numeric value is an error naming the feature —
    in `tfmdl.pipelines.convert` (the row and column), in the reader (training,
    evaluation) and in both serving signatures. An absent value takes the feature's
    ``default``; a feature without one is required.
    """
    out = dict(features)
    for f in spec.features:
        if f.type != spec_lib.NUMERIC or f.name not in out:
            continue
        value = out[f.name]
        bad = ~tf.math.is_finite(value)
        check = tf.debugging.Assert(
            ~tf.reduce_any(bad),
            [f"numeric feature {f.name} must be a finite number (NaN and +-inf are "
             f"rejected; leave the value out to use the spec's default); got",
             tf.boolean_mask(value, bad)[:5]])
        with tf.control_dependencies([check]):
            out[f.name] = tf.identity(value)
    return out


def labels_and_weights(spec: spec_lib.FeatureSpec, raw: Dict[str, tf.Tensor]
                       ) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    """``({task: label}, {task: weight})`` from the int64 label columns ``raw``
    (keyed by label column): -1 is a missing label (label 0, weight 0); any value
    other than 0, 1 and -1 fails with an error naming the label."""
    labels, weights = {}, {}
    for t in spec.tasks:
        values = raw[t.label]
        valid = (values == 0) | (values == 1) | (values == -1)
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [f"label {t.label} of task {t.name} must be 0, 1 or -1 (missing); got",
             tf.boolean_mask(values, ~valid)[:5]])
        with tf.control_dependencies([check]):
            present = tf.cast(values >= 0, tf.float32)
        labels[t.name] = tf.cast(tf.maximum(values, 0), tf.float32)
        weights[t.name] = present
    return labels, weights


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """The pipeline options `make_dataset` shares between its sources."""
    batch_size: int
    holdout: Optional[Tuple[str, float]] = None
    shuffle: bool = True
    seed: Optional[int] = None
    shuffle_buffer: int = 10_000
    shuffle_block: int = 32
    repeat: Union[bool, int] = False
    cache: bool = False
    drop_remainder: bool = False
    ignore_errors: bool = False
    cycle_length: Optional[int] = None
    num_workers: Optional[int] = None

    @property
    def deterministic(self) -> bool:
        return self.seed is not None or not self.shuffle

    @property
    def block(self) -> int:
        """Records moved as one shuffle unit (1 without shuffling)."""
        return self.shuffle_block if self.shuffle else 1

    def cycle(self, num_files: int) -> int:
        return self.cycle_length or min(num_files, 8)


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
                 num_workers: Optional[int] = None,
                 source: str = "auto",
                 shuffle_floor: int = SHUFFLE_FLOOR,
                 holdout: Optional[Tuple[str, float]] = None) -> tf.data.Dataset:
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
      shuffle_buffer: records held by the shuffle buffer (raised to
        ``shuffle_floor`` for shards not known to be in random order).
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
      compression: "auto" (GZIP for ``*.gz``), None or "GZIP" (TFRecord only).
      num_workers: workers of a multi-worker strategy; with fewer files than
        workers, auto-sharding splits records instead of files.
      source: "auto" (Parquet when the files end in ``.parquet``), "tfrecord" or
        "parquet" (`tfmdl.pipelines.parquet`, needs the ``io`` extra).
      shuffle_floor: unless the shards' manifest records a random row order,
        the shuffle buffer holds at least this many records, so shards sorted
        by user or time are still mixed (module docstring, "How much this
        mixes"); 0 uses ``shuffle_buffer`` as given.
      holdout: ``("take" | "keep", fraction)``: only the held-out fraction of
        the records, or only the others (module docstring, "Held-out
        validation rows"); None reads every record.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if shuffle_block <= 0:
        raise ValueError(f"shuffle_block must be positive, got {shuffle_block}.")
    if shuffle_buffer <= 0:
        raise ValueError(f"shuffle_buffer must be positive, got {shuffle_buffer}.")
    if shuffle_floor < 0:
        raise ValueError(f"shuffle_floor must be >= 0, got {shuffle_floor}.")
    check_holdout(holdout)
    files = resolve_files(pattern, split, source)
    kind = source_of(files, source)
    if holdout is not None and kind != TFRECORD:
        raise DataError(f"{pattern}: a held-out validation fraction needs TFRecord shards "
                        f"(these are {kind}); convert them with `tfmdl data convert`, or "
                        f"validate on the eval split (training.validation_fraction: 0).")
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        files = _shard_files(files, input_context, pattern)
    if shuffle and shuffle_floor > shuffle_buffer and not (
            kind == TFRECORD and tfrecord.in_random_order(files)):
        shuffle_buffer = shuffle_floor
    options = PipelineOptions(
        batch_size=batch_size, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer,
        shuffle_block=shuffle_block, repeat=repeat, cache=cache, drop_remainder=drop_remainder,
        ignore_errors=ignore_errors, holdout=holdout, cycle_length=cycle_length, num_workers=num_workers)
    if kind == PARQUET:
        from tfmdl.pipelines import parquet  # pylint: disable=g-import-not-at-top

        return parquet.make_dataset(spec, files, options, include_labels=include_labels,
                                    include_passthrough=include_passthrough)
    if compression == "auto":
        kinds = {tfrecord.compression_of(f) for f in files}
        if len(kinds) > 1:
            raise DataError(f"{pattern}: mixes GZIP and uncompressed shards; keep one kind.")
        compression = kinds.pop()
    units = _tfrecord_units(files, options, compression)
    parse = make_parse_fn(spec, include_labels, include_passthrough)
    return finish_pipeline(units, parse, options, num_files=len(files),
                           unbatch=options.block > 1)


def _shard_files(files: List[str], ctx: tf.distribute.InputContext, pattern) -> List[str]:
    if ctx.num_input_pipelines <= 1:
        return files
    if len(files) < ctx.num_input_pipelines:
        raise DataError(
            f"{pattern}: {len(files)} file(s) cannot be sharded over "
            f"{ctx.num_input_pipelines} input pipelines; write at least "
            f"one shard per worker.")
    return files[ctx.input_pipeline_id::ctx.num_input_pipelines]


HOLDOUT_BUCKETS = 10_000
HOLDOUT_SIDES = ("take", "keep")


def check_holdout(holdout: Optional[Tuple[str, float]]) -> None:
    """Raises ValueError unless ``holdout`` is None or ``(side, fraction)`` with
    side in `HOLDOUT_SIDES` and 0 < fraction < 1."""
    if holdout is None:
        return
    side, fraction = holdout
    if side not in HOLDOUT_SIDES or not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"holdout must be ('take' or 'keep', a fraction in (0, 1)), got "
                         f"{holdout!r}.")


def holdout_predicate(side: str, fraction: float) -> Callable[[tf.Tensor], tf.Tensor]:
    """``record -> bool``: whether a serialized record is on ``side`` of the
    held-out ``fraction`` (module docstring, "Held-out validation rows")."""
    check_holdout((side, fraction))
    cut = int(round(float(fraction) * HOLDOUT_BUCKETS))
    take = side == "take"

    def predicate(record):
        held_out = tf.strings.to_hash_bucket_fast(record, HOLDOUT_BUCKETS) < cut
        return held_out if take else tf.logical_not(held_out)

    return predicate


def _tfrecord_units(files: List[str], options: PipelineOptions,
                    compression: Optional[str]) -> tf.data.Dataset:
    """Interleaved shuffle units: blocks of ``options.block`` records of one file
    (single records without shuffling)."""
    block = options.block

    def read_file(path):
        records = tf.data.TFRecordDataset(path, compression_type=compression or "",
                                          buffer_size=1 << 20)
        if options.ignore_errors:
            records = records.apply(tf.data.experimental.ignore_errors(log_warning=True))
        if options.holdout is not None:
            records = records.filter(holdout_predicate(*options.holdout))
        return records.batch(block) if block > 1 else records

    return interleave_files(tf.data.Dataset.from_tensor_slices(files), read_file, options,
                            len(files), block_length=1 if block > 1 else 16)


def interleave_files(items: tf.data.Dataset, read_file: Callable, options: PipelineOptions,
                     num_files: int, block_length: int) -> tf.data.Dataset:
    """Shuffles the per-file ``items`` (seeded) and interleaves ``read_file(item)``."""
    if options.shuffle:
        items = items.shuffle(num_files, seed=options.seed, reshuffle_each_iteration=True)
    return items.interleave(read_file, cycle_length=options.cycle(num_files),
                            block_length=block_length, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=options.deterministic)


def finish_pipeline(units: tf.data.Dataset, parse: Callable, options: PipelineOptions, *,
                    num_files: int, unbatch: bool = False, rebatch: bool = False,
                    auto_shard: Optional[tf.data.experimental.AutoShardPolicy] = None
                    ) -> tf.data.Dataset:
    """[cache] -> shuffle units -> [unbatch] -> [repeat] -> batch (or rebatch
    batched units) -> parse -> prefetch, with the distribution options."""
    ds = units.cache() if options.cache else units
    if options.shuffle:
        ds = ds.shuffle(max(options.shuffle_buffer // options.block, 1), seed=options.seed,
                        reshuffle_each_iteration=True)
    if unbatch:
        ds = ds.unbatch()
    if options.repeat is True:
        ds = ds.repeat()
    elif options.repeat:
        ds = ds.repeat(int(options.repeat))
    if rebatch:
        ds = ds.rebatch(options.batch_size, drop_remainder=options.drop_remainder)
    else:
        ds = ds.batch(options.batch_size, drop_remainder=options.drop_remainder)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=options.deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    tf_options = tf.data.Options()
    if auto_shard is None:
        auto_shard = (tf.data.experimental.AutoShardPolicy.FILE
                      if num_files >= (options.num_workers or 1)
                      else tf.data.experimental.AutoShardPolicy.DATA)
    tf_options.experimental_distribute.auto_shard_policy = auto_shard
    tf_options.deterministic = options.deterministic
    return ds.with_options(tf_options)


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
    return DataError(f"{path}: corrupt record at index {index} ({message}). Re-create the file "
                     f"(tfmdl data synth / data convert), or read around it from Python with "
                     f"reader.make_dataset(..., ignore_errors=True), which skips the rest of "
                     f"the file and counts what it skipped.")


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


def check_row_count(files: Sequence[str], rows_read: int) -> None:
    """Raises `DataError` when ``files`` are listed in their manifest with another
    record count than the ``rows_read`` a full pass produced: a shard cut at a
    record boundary reads without a corrupt-record error, and its metrics would
    otherwise sit next to an oracle computed on every row. No-op without a manifest."""
    expected = tfrecord.expected_records(list(files))
    if expected is None or expected == rows_read:
        return
    where = sorted({os.path.dirname(f) for f in files})
    raise DataError(
        f"read {rows_read} rows from the {len(files)} shard(s) in {', '.join(where)}, but "
        f"{tfrecord.MANIFEST} lists {expected}: a shard was truncated or replaced after it "
        f"was written. Write the split again (tfmdl data synth / data convert).")


def count_skipped(files: Sequence[str], examples_read: int) -> Optional[int]:
    """Records skipped by ``ignore_errors`` (manifest count - read), or None when
    the files have no manifest."""
    expected = tfrecord.expected_records(list(files))
    return None if expected is None else max(expected - examples_read, 0)
