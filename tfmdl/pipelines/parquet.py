"""Streams Parquet files through tensorflow-io into the reader's batches.

    ds = reader.make_dataset(spec, "s3://bucket/logs", 1024, split="train", source="parquet")

yields the same ``(features, labels, sample_weights)`` batches as the TFRecord
reader does on the TFRecord shards that ``tfmdl data convert`` writes from the
same file: same shapes, dtypes, padding and defaults, missing labels with
weight 0, and (one file per shard, same options and seed) the same order. The
Parquet files are read as they are, nothing is converted. Needs the ``io``
extra (``pip install 'tfmdl[io]'``: TensorFlow 2.17 with tensorflow-io 0.37.1);
tensorflow-io is imported only when this source is used.

Column layout: one column per scenario field, feature, label and passthrough
field, named as in the spec (the layout ``tfmdl data convert`` reads; other
columns are ignored), each of a flat Parquet type:

* int64 fields (the scenario, int64 categorical features, labels, int64
  passthrough fields): an integer column (8 to 64 bit, or unsigned 8/16 bit).
  Labels may also be a float column (1.0 / 0.0; NaN is a missing label).
* numeric features and float32 passthrough fields: an integer or float column;
  a numeric value must be finite.
* string features and passthrough fields: a string or binary column. An empty
  string takes the field's ``default``; without one it is an error.
* sequence features and a multi-valued scenario: a ``|``-separated string
  column ("3|17|42"; an empty string is an empty sequence), or an integer column
  holding one value per row.
* a column may be missing where the converter allows it: labels (every label
  missing), and features and passthrough fields that declare a ``default``.

What tensorflow-io 0.37.1 cannot read, and what tfmdl does about it (checked in
the files' footers before anything is read, with an error naming the file and
column):

* List columns: its Parquet kernel returns the flat list values without the
  row boundaries, so sequences must be ``|``-separated strings. A list column
  is rejected (the converter reads both forms).
* Null cells: the kernel ignores Parquet's null markers, so the values after a
  null would shift into the wrong rows. A column whose footer statistics count
  nulls (or that has no statistics to prove it holds none) is rejected; write
  -1 for a missing label and a value for other cells, or convert the file with
  ``tfmdl data convert``, which reads nulls.

A third limit is a bug: the kernel garbles the strings of a read that spans two
data pages of a string column. Reads are therefore cut where such a page starts
(found from the page headers, `tfmdl.pipelines.parquet_pages`).

Reading: ``IODataset.from_parquet`` yields one element per row and column
(about 17k rows/s on this 2-core machine for 21 columns), so each file is read
instead in chunks of up to `READ_ROWS` rows per column with the kernel that
``from_parquet`` wraps (``io_parquet_readable_read``; tensorflow-io is pinned to
0.37.1, its last release). The columns of one dtype travel as one matrix
(`_packing`), chunks are cut into shuffle units of ``shuffle_block`` rows (16
rows without shuffling, as the TFRecord reader interleaves files 16 records at a
time), and batches are assembled with ``Dataset.rebatch``, so no per-row
elements are made. The kernel re-reads a column from the start of its row group
for every read, hence chunks as large as `READ_ROWS` (docs/io.md, Throughput).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from tfmdl.pipelines import convert
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import parquet_pages
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib

READ_ROWS = 65536
_MAGIC = b"PAR1"
_UNSHUFFLED_UNIT = 16   # the TFRecord reader's interleave block without shuffling
_SEPARATOR = convert.LIST_SEPARATOR
_TF_TARGET = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
_NO_NULLS_HINT = ("tensorflow-io reads Parquet values without their null markers, so a null "
                  "would shift the values after it into the wrong rows. Write -1 for a missing "
                  "label and a value for every other cell, or convert the file with `tfmdl data "
                  "convert`, which reads nulls.")


class ParquetError(reader.DataError):
    """A Parquet file cannot be read by this source; the message names the file and column."""


@dataclasses.dataclass(frozen=True)
class Column:
    """How one spec field is read from the Parquet files.

    Attributes:
      name: the column (= field) name.
      dtype: what the field needs: "int64", "float32" or "string".
      is_list: a sequence or multi-valued scenario.
      read_dtype: the dtype tensorflow-io returns for the file's column; None
        when the column is absent from the files and filled with ``fill``.
      fill: the value of an absent column or an empty string cell; None when
        such a cell is an error.
      label: a task label (float columns allowed, NaN = missing).
      finite: values must be finite (numeric features).
      non_empty: a list must hold at least one value (multi-valued scenario).
      max_values: the longest list allowed (scenarios: their count).
    """
    name: str
    dtype: str
    is_list: bool
    read_dtype: Optional[tf.DType]
    fill: Any
    label: bool = False
    finite: bool = False
    non_empty: bool = False
    max_values: Optional[int] = None


def _tensorflow_io_ops():
    """tensorflow-io's kernels, imported on first use of this source."""
    try:
        from tensorflow_io.python.ops import core_ops  # pylint: disable=g-import-not-at-top
    except (ImportError, NotImplementedError, OSError) as exc:
        raise filesystems.MissingExtraError(
            f"the parquet data source needs tensorflow-io, which cannot be imported here "
            f"({type(exc).__name__}: {exc}). Install the `io` extra ({filesystems.IO_EXTRA}: "
            f"TensorFlow 2.17 with tensorflow-io 0.37.1) in its own environment, or convert "
            f"the files with `tfmdl data convert`.") from None
    return core_ops


# -- the files' footers -------------------------------------------------------------


@dataclasses.dataclass
class _Footer:
    path: str
    metadata: pq.FileMetaData
    schema: pa.Schema

    def leaf_index(self, name: str) -> int:
        for j in range(self.metadata.num_columns):
            if self.metadata.schema.column(j).path == name:
                return j
        raise ParquetError(f"{self.path}: column {name!r} has no flat Parquet leaf.")


def _footer_bytes(path: str) -> bytes:
    """The file's footer (metadata, its length and the magic), read with two range
    reads through `tf.io.gfile`, so remote files are not downloaded."""
    with tf.io.gfile.GFile(path, "rb") as fh:
        size = fh.size()
        if size < 12:
            raise ValueError(f"{size} bytes is too short")
        fh.seek(size - 8)
        tail = fh.read(8)
        length = struct.unpack("<I", tail[:4])[0]
        if tail[4:] != _MAGIC or length > size - 12:
            raise ValueError("no Parquet footer at the end of the file")
        fh.seek(size - 8 - length)
        return fh.read(length + 8)


def _read_footer(path: str) -> _Footer:
    try:
        # pyarrow parses a footer behind the leading magic as if it were the file
        parquet_file = pq.ParquetFile(pa.BufferReader(_MAGIC + _footer_bytes(path)))
        return _Footer(path, parquet_file.metadata, parquet_file.schema_arrow)
    except (ValueError, OSError, pa.ArrowException, tf.errors.OpError) as exc:
        raise ParquetError(f"{path}: not a readable Parquet file ({exc}).") from None


def _read_dtype(footer: _Footer, field: "convert._Field") -> tf.DType:
    """tensorflow-io's dtype for ``field``'s column; raises when the column's type
    cannot hold the field or the source cannot read it."""
    t = footer.schema.field(field.column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    where = f"{footer.path}: column {field.column!r}"
    if pa.types.is_nested(t):
        raise ParquetError(
            f"{where} is a Parquet {t}; tensorflow-io reads only flat columns, so write it as "
            f"a {_SEPARATOR!r}-separated string column (\"3{_SEPARATOR}17{_SEPARATOR}42\"), or "
            f"convert the file with `tfmdl data convert`, which reads list columns.")
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
        or pa.types.is_large_binary(t)
    integer = pa.types.is_signed_integer(t) or pa.types.is_uint8(t) or pa.types.is_uint16(t)
    floating = pa.types.is_float32(t) or pa.types.is_float64(t)
    if field.is_list:
        ok = text or (integer and field.dtype == "int64")
    elif field.dtype == "string":
        ok = text
    elif field.dtype == "float32":
        ok = integer or floating
    else:
        ok = integer or (floating and field.label)
    if not ok:
        raise ParquetError(
            f"{where} has type {t}, which the parquet source cannot read as {field.expected} "
            f"(see tfmdl.pipelines.parquet for the column types it reads); `tfmdl data convert` "
            f"also parses numbers written as text.")
    if text:
        return tf.string
    if floating:
        return tf.float32 if pa.types.is_float32(t) else tf.float64
    return tf.int64 if pa.types.is_int64(t) else tf.int32


def _check_no_nulls(footer: _Footer, name: str) -> None:
    index = footer.leaf_index(name)
    if footer.metadata.schema.column(index).max_definition_level == 0:
        return  # a required (non-nullable) column
    for group in range(footer.metadata.num_row_groups):
        stats = footer.metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count:
            raise ParquetError(
                f"{footer.path}: column {name!r} is nullable and row group {group} has no "
                f"statistics proving it holds no nulls (write the file with statistics, as "
                f"pyarrow and Spark do by default). {_NO_NULLS_HINT}")
        if stats.null_count:
            raise ParquetError(f"{footer.path}: column {name!r} has {stats.null_count} null "
                               f"cell(s) in row group {group}. {_NO_NULLS_HINT}")


def _spec_fields(spec: spec_lib.FeatureSpec, include_labels: bool,
                 include_passthrough: bool) -> List["convert._Field"]:
    # the converter's rules for each column, so both paths accept the same layout
    passthrough = {p.name for p in spec.passthrough}
    fields = convert._fields(spec)  # pylint: disable=protected-access
    return [f for f in fields
            if (include_labels or not f.label)
            and (include_passthrough or f.column not in passthrough or f.label)]


def _column(field: "convert._Field", read_dtype: Optional[tf.DType],
            scenario: spec_lib.Scenario) -> Column:
    is_scenario = field.column == scenario.feature
    return Column(name=field.column, dtype=field.dtype, is_list=field.is_list,
                  read_dtype=read_dtype, fill=field.fill, label=field.label,
                  finite=field.finite, non_empty=field.non_empty,
                  max_values=scenario.count if is_scenario and field.is_list else None)


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """One file to read: its rows and the row ranges read at once (`READ_ROWS`
    at most, cut where a string column's data page starts, see `parquet_pages`)."""
    path: str
    num_rows: int
    chunks: Tuple[Tuple[int, int], ...]


def plan(spec: spec_lib.FeatureSpec, files: Sequence[str], include_labels: bool = True,
         include_passthrough: bool = False) -> Tuple[List[Column], List[FilePlan]]:
    """Checks every file's footer against ``spec``; returns the columns to read and
    how to read each file.

    Raises `ParquetError` naming the file and column for a missing required
    column, a type the source cannot read, null cells, or a column whose type
    differs between files.
    """
    fields = _spec_fields(spec, include_labels, include_passthrough)
    chosen: Dict[str, Tuple[Optional[tf.DType], str]] = {}
    plans = []
    for path in files:
        footer = _read_footer(path)
        for field in fields:
            dtype = _file_column(footer, field)
            first = chosen.setdefault(field.column, (dtype, path))
            if first[0] != dtype:
                raise ParquetError(
                    f"column {field.column!r} is read as {_describe(first[0])} from {first[1]} "
                    f"but as {_describe(dtype)} from {path}; write it with one type in every "
                    f"file.")
        strings = [f.column for f in fields if chosen[f.column][0] == tf.string]
        plans.append(FilePlan(path, footer.metadata.num_rows, _chunk_ranges(footer, strings)))
    columns = [_column(f, chosen[f.column][0], spec.scenario) for f in fields]
    return columns, plans


def _chunk_ranges(footer: _Footer, strings: Sequence[str]) -> Tuple[Tuple[int, int], ...]:
    """Row ranges of at most `READ_ROWS` rows that never span two data pages of a
    string column (tensorflow-io garbles strings read across pages)."""
    metadata = footer.metadata
    cuts = set(range(0, metadata.num_rows, READ_ROWS))
    if strings:
        with tf.io.gfile.GFile(footer.path, "rb") as fh:
            offset = 0
            for group in range(metadata.num_row_groups):
                row_group = metadata.row_group(group)
                for name in strings:
                    cuts.update(offset + row for row in _page_starts(fh, footer, group, name))
                offset += row_group.num_rows
    edges = sorted(cut for cut in cuts if cut < metadata.num_rows) + [metadata.num_rows]
    return tuple(zip(edges[:-1], edges[1:]))


def _page_starts(fh, footer: _Footer, group: int, name: str) -> List[int]:
    chunk = footer.metadata.row_group(group).column(footer.leaf_index(name))
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    try:
        return parquet_pages.page_starts(fh, start, chunk.total_compressed_size)
    except (ValueError, KeyError, tf.errors.OpError) as exc:
        raise ParquetError(f"{footer.path}: cannot read the page headers of column {name!r} in "
                           f"row group {group} ({exc}).") from None


def _describe(dtype: Optional[tf.DType]) -> str:
    return "an absent column" if dtype is None else dtype.name


def _file_column(footer: _Footer, field: "convert._Field") -> Optional[tf.DType]:
    if field.column not in footer.schema.names:
        if field.absent_ok:
            return None
        raise ParquetError(
            f"{footer.path}: required column {field.column!r} is missing (the file has "
            f"{', '.join(footer.schema.names) or 'no columns'}). Add it, or declare a "
            f"default for it in the spec.")
    dtype = _read_dtype(footer, field)
    _check_no_nulls(footer, field.column)
    return dtype


def total_rows(files: Sequence[str]) -> int:
    """Rows in ``files``, from their footers."""
    return sum(_read_footer(path).metadata.num_rows for path in files)


# -- reading ----------------------------------------------------------------------------


def _packing(columns: Sequence[Column]) -> Dict[str, Tuple[str, int]]:
    """Where each column read from the files travels: ``{column: (dtype, index)}``.

    The columns of one dtype move through the pipeline as one ``[n, k]`` tensor:
    shuffling and rebatching cost per tensor, and a few matrices are much cheaper
    than dozens of columns (tables of 20-30 columns are common)."""
    groups: Dict[str, List[str]] = {}
    for c in columns:
        if c.read_dtype is not None:
            groups.setdefault(c.read_dtype.name, []).append(c.name)
    return {name: (group, i) for group, names in groups.items() for i, name in enumerate(names)}


def _chunk_reader(plans: Sequence[FilePlan], columns: Sequence[Column], ops) -> Callable:
    """``read(path, num_rows, first, count)``: a dataset of ``{dtype: [n, k]}`` (see
    `_packing`) for the file's chunks ``first .. first + count - 1`` (indices into
    all files' chunks)."""
    bounds = [chunk for p in plans for chunk in p.chunks]
    starts = tf.constant([a for a, _ in bounds], tf.int64, shape=[len(bounds)])
    stops = tf.constant([b for _, b in bounds], tf.int64, shape=[len(bounds)])
    dtypes = {c.name: c.read_dtype for c in columns}
    packing = _packing(columns)

    def read_file(path, num_rows, first, count):
        shape = tf.reshape(num_rows, [1])

        def chunk(i):
            groups: Dict[str, List[tf.Tensor]] = {}
            for name, (group, _) in packing.items():
                groups.setdefault(group, []).append(ops.io_parquet_readable_read(
                    input=path, shared=path, component=name, shape=shape, start=starts[i],
                    stop=stops[i], dtype=dtypes[name], container="TfmdlParquet"))
            return {group: tf.stack(values, axis=1) for group, values in groups.items()}

        return tf.data.Dataset.range(first, first + count).map(chunk)

    return read_file


def _unpack(packed: Dict[str, tf.Tensor], packing: Dict[str, Tuple[str, int]]
            ) -> Dict[str, tf.Tensor]:
    return {name: packed[group][:, i] for name, (group, i) in packing.items()}


def make_dataset(spec: spec_lib.FeatureSpec, files: Sequence[str],
                 options: reader.PipelineOptions, *, include_labels: bool = True,
                 include_passthrough: bool = False) -> tf.data.Dataset:
    """The Parquet counterpart of `reader.make_dataset` (call that one with
    ``source="parquet"``; it resolves and shards the files)."""
    filesystems.require(list(files))
    ops = _tensorflow_io_ops()
    columns, plans = plan(spec, files, include_labels, include_passthrough)
    read_chunks = _chunk_reader(plans, columns, ops)
    unit = options.block if options.shuffle else _UNSHUFFLED_UNIT if len(files) > 1 else None

    def read_file(path, num_rows, first, count):
        chunks = read_chunks(path, num_rows, first, count)
        if options.ignore_errors:
            chunks = chunks.apply(tf.data.experimental.ignore_errors(log_warning=True))
        return chunks if unit is None else chunks.rebatch(unit)

    counts = [len(p.chunks) for p in plans]
    items = tf.data.Dataset.from_tensor_slices((
        [p.path for p in plans], tf.constant([p.num_rows for p in plans], tf.int64),
        tf.constant(np.cumsum([0] + counts[:-1]), tf.int64), tf.constant(counts, tf.int64)))
    units = reader.interleave_files(items, read_file, options, len(files), block_length=1)
    parse_columns = make_parse_fn(spec, columns, include_labels, include_passthrough)
    packing = _packing(columns)

    def parse(packed):
        return parse_columns(_unpack(packed, packing))

    # tf.data's FILE auto-sharding knows only its own file readers
    return reader.finish_pipeline(units, parse, options, num_files=len(files), rebatch=True,
                                  auto_shard=tf.data.experimental.AutoShardPolicy.DATA)


# -- parsing a batch of columns -----------------------------------------------------------


def _checked(value, ok: tf.Tensor, message: str, bad: tf.Tensor):
    """``value`` once ``ok`` holds everywhere; otherwise an error with ``message``
    and up to five offending values."""
    check = tf.debugging.Assert(tf.reduce_all(ok), [message, bad[:5]])
    with tf.control_dependencies([check]):
        return tf.nest.map_structure(tf.identity, value, expand_composites=True)


def _scalar(column: Column, raw: Optional[tf.Tensor], size: tf.Tensor) -> tf.Tensor:
    target = _TF_TARGET[column.dtype]
    if raw is None:
        return tf.fill([size], tf.constant(column.fill, target))
    if column.dtype == "string":
        empty = raw == ""
        if column.fill is not None:
            return tf.where(empty, tf.constant(column.fill.encode("utf-8")), raw)
        return _checked(raw, ~empty, f"column {column.name}: an empty string needs a default "
                                     f"for the field in the spec; rows", tf.where(empty)[:, 0])
    if column.label and raw.dtype.is_floating:
        raw = tf.where(tf.math.is_nan(raw), tf.constant(-1, raw.dtype), raw)
        raw = _checked(raw, raw == tf.round(raw),
                       f"label column {column.name} must hold 0, 1 or -1; got",
                       tf.boolean_mask(raw, raw != tf.round(raw)))
    value = tf.cast(raw, target)
    if column.finite:
        finite = tf.math.is_finite(value)
        value = _checked(value, finite, f"column {column.name}: expected finite numbers; got",
                         tf.boolean_mask(value, ~finite))
    return value


def _split(column: Column, raw: tf.Tensor) -> tf.RaggedTensor:
    """``|``-separated strings -> ragged values; "" is an empty list and an empty
    element ("1||2") is an error, as in the converter."""
    empty_row = raw == ""
    parts = tf.strings.split(raw, _SEPARATOR)
    lengths = parts.row_lengths()
    keep = tf.repeat(~empty_row, lengths)
    values = tf.boolean_mask(parts.flat_values, keep)
    rows = tf.boolean_mask(parts.value_rowids(), keep)
    values = _checked(values, values != "", f"column {column.name}: empty element in a "
                                            f"{_SEPARATOR!r}-separated list; got",
                      tf.gather(raw, tf.boolean_mask(rows, values == "")))
    if column.dtype == "int64":
        number = tf.strings.regex_full_match(values, r"\s*-?[0-9]+\s*")
        values = _checked(values, number, f"column {column.name}: expected int64 ids; got",
                          tf.boolean_mask(values, ~number))
        values = tf.strings.to_number(values, tf.int64)
    return tf.RaggedTensor.from_row_lengths(values, tf.where(empty_row, tf.zeros_like(lengths),
                                                             lengths))


def _ragged(column: Column, raw: Optional[tf.Tensor], size: tf.Tensor) -> tf.RaggedTensor:
    target = _TF_TARGET[column.dtype]
    if raw is None:  # an absent sequence column: every sequence is empty
        return tf.RaggedTensor.from_row_lengths(tf.zeros([0], target),
                                                tf.zeros([size], tf.int64))
    if raw.dtype == tf.string:
        ragged = _split(column, raw)
    else:
        ragged = tf.RaggedTensor.from_tensor(tf.cast(raw, target)[:, None])
    lengths = ragged.row_lengths()
    if column.non_empty:
        ragged = _checked(ragged, lengths > 0, f"column {column.name}: expected at least one "
                                               f"value; rows", tf.where(lengths == 0)[:, 0])
    if column.max_values is not None:
        ragged = _checked(ragged, lengths <= column.max_values,
                          f"column {column.name}: at most {column.max_values} values; rows",
                          tf.where(lengths > column.max_values)[:, 0])
    return ragged


def make_parse_fn(spec: spec_lib.FeatureSpec, columns: Sequence[Column],
                  include_labels: bool = True, include_passthrough: bool = False) -> Callable:
    """Returns ``fn({column: [B]}) -> (features, labels, weights)`` (features only
    without labels), shaped like `reader.make_parse_fn`'s output."""
    by_name = {c.name: c for c in columns}
    scen = spec.scenario

    def parse(batch: Dict[str, tf.Tensor]):
        size = tf.shape(batch[scen.feature])[0]

        def scalar(name):
            return _scalar(by_name[name], batch.get(name), size)

        def ragged(name):
            return _ragged(by_name[name], batch.get(name), size)

        features = {}
        if scen.multi_valued:
            features[scen.feature] = ragged(scen.feature).to_tensor(
                default_value=-1, shape=[None, scen.count])
        else:
            features[scen.feature] = scalar(scen.feature)
        for f in spec.features:
            features[f.name] = (reader.pad_sequence(ragged(f.name), f)
                                if f.type == spec_lib.SEQUENCE else scalar(f.name))
        features = reader.check_finite(spec, features)
        if include_passthrough:
            for p in spec.passthrough:
                features[p.name] = scalar(p.name)
        if not include_labels:
            return features
        raw = {t.label: scalar(t.label) for t in spec.tasks}
        return (features,) + reader.labels_and_weights(spec, raw)

    return parse


# -- warm-up examples -----------------------------------------------------------------------


def read_examples(spec: spec_lib.FeatureSpec, files: Sequence[str], limit: int) -> List[bytes]:
    """The first ``limit`` rows of ``files`` as serialized `tf.train.Example`s of
    the model's features (TF Serving warm-up requests from Parquet data).
    Sequences longer than ``max_len`` come back truncated as the reader reads them."""
    options = reader.PipelineOptions(batch_size=limit, shuffle=False)
    ds = make_dataset(spec, files, options, include_labels=False)
    for features in ds.take(1):
        values = {name: tensor.numpy() for name, tensor in features.items()}
        return [_example(spec, values, i).SerializeToString()
                for i in range(len(values[spec.scenario.feature]))]
    return []


def _example(spec: spec_lib.FeatureSpec, values: Dict[str, Any], row: int) -> tf.train.Example:
    def feature(value, dtype: str, pad=None) -> tf.train.Feature:
        items = np.atleast_1d(value).tolist()
        if pad is not None:
            items = [v for v in items if v != pad]
        if dtype == "string":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=items))
        if dtype == "float32":
            return tf.train.Feature(float_list=tf.train.FloatList(value=items))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=items))

    scen = spec.scenario
    out = {scen.feature: feature(values[scen.feature][row], "int64",
                                 -1 if scen.multi_valued else None)}
    for f in spec.features:
        dtype = "float32" if f.type == spec_lib.NUMERIC else f.dtype
        pad = f.pad_value if f.type == spec_lib.SEQUENCE else None
        out[f.name] = feature(values[f.name][row], dtype, pad)
    return tf.train.Example(features=tf.train.Features(feature=out))
