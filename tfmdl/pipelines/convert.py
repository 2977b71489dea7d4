"""Streams a CSV or Parquet file into TFRecord shards of `tf.train.Example`.

``convert(spec, "clicks.csv", "DIR", split="train")`` writes
``DIR/train-NNNNN.tfrecord[.gz]``, records the shards in ``DIR/manifest.json``
(other splits already listed there are kept) and copies the spec to
``DIR/spec.yaml``, so ``reader.make_dataset(spec, "DIR", ..., split="train")``
reads the result.

Columns are interpreted through the spec; input columns it does not mention are
ignored.

* The scenario field: an int64 id in ``[0, count)``. A multi-valued scenario
  takes one or more distinct ids: a Parquet list column, or a ``|``-separated
  string such as ``0|2``.
* Categorical features: int64 ids or strings. Numeric features: finite floats.
* Sequence features: a Parquet list column or a ``|``-separated string; an
  empty cell is an empty sequence. Sequences longer than ``max_len`` are
  written whole (the reader truncates them).
* Task labels: 0, 1, or -1 / empty / null for a missing label (written as -1).
  ``1.0`` and ``0.0`` are accepted for labels because pandas writes integer
  columns that contain NaN as floats.
* Passthrough fields: their declared dtype. An empty cell takes the declared
  ``default``, or the reader's own stand-in (-1, NaN, "") when there is none.

An empty cell (empty string or null) of a categorical or numeric feature takes
the feature's ``default``; without one the cell is an error. A column missing
from the file is allowed for labels (all -1) and for features and passthrough
fields that declare a default (filled with it); any other missing column is an
error naming the column and the file, raised before anything is written.

A bad cell (an unparsable number, a label outside {0, 1, -1}, a scenario id
out of range, a required cell left empty), and a CSV line with the wrong number
of fields, raises `ConvertError` naming the file, the 1-based data row (header
excluded), the column, the value and what was expected. With
``skip_bad_rows=True`` such rows are dropped instead; `ConvertResult` counts
them and keeps the first few messages.

Atomicity: shards are written into a hidden temporary directory inside
``out_dir`` and moved into place only once the whole input has been read, so a
failed conversion leaves no new shards behind, not even ones completed before
the error. Once the new shards are in place, shards from an earlier
conversion of the same split that were not overwritten are deleted. A process
that is killed may leave a ``.tmp-convert-*`` directory; readers never look
there, and it is safe to delete.

Memory: the input is read in chunks of at most ``chunk_rows`` rows (CSV blocks
of a few MiB, cut to ``chunk_rows``; Parquet batches), which are parsed with
pyarrow compute and encoded with `example_codec`. Peak memory therefore depends
on the chunk size (and, for Parquet, the row-group size), not on the input size.

Row order: exported logs often come sorted by user or by time, and the reader's
file shuffle, interleave and shuffle buffer only mix rows that lie close
together, so the train split (``shuffle_rows``, on by default for ``split="train"``
only) is written in a seeded random order, with an external shuffle that keeps
memory bounded:

1. the encoded rows go, in input order, to temporary run files;
2. once the row count ``N`` is known, every row is dealt at random to one of
   ``M = ceil(N / records_per_shard)`` temporary buckets (exact, balanced sizes:
   each batch of rows is split by a multivariate hypergeometric draw over the
   buckets' remaining room, and the batch's rows are assigned in a random order),
   so each bucket is a uniform random sample of the whole input;
3. each bucket is read into memory, permuted and written as one shard.

Every shard is thus a random permutation of a random sample of the input, so
any run of records the reader takes from any shards, in any order, is a random
sample of the whole file; ``manifest.json`` records the split's ``row_order`` as
``"random"`` (``"input"`` when not shuffled), so the reader knows it need not
raise its shuffle buffer for it. The cost is one more write and read of the split's
records on local disk (inside ``out_dir``'s temporary directory) and, in step 3,
one shard's records in memory (``records_per_shard`` x record size: about
250 MB for 250,000 records of 1 KB). The result depends only on the input rows,
``records_per_shard`` and ``shuffle_seed``, not on ``chunk_rows``. Other splits
keep the input order, which evaluation by request or time may rely on.

Label counts: ``manifest.json`` records the split's label counts
(`label_stats.LabelCounts` of the rows written, under ``"label_counts"``),
keeping those of other splits; converting a split again replaces its counts.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
import re
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import tensorflow as tf

from tfmdl.pipelines import example_codec as codec
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord

# Sequence and multi-valued scenario separator in CSV (and string Parquet) cells.
LIST_SEPARATOR = "|"
SPEC_FILE = "spec.yaml"
FORMATS = ("auto", "csv", "parquet")
_MAX_ERRORS = 5
_CSV_BLOCK_BYTES = 8 << 20
# The codec materialises each batch as [rows, widest row] byte matrices (up to
# 10 bytes per int64 once varint-encoded), so a batch holding one very long
# sequence costs as if every row were that long. Batches are cut so that rows x
# widest row stays near this many bytes.
_ENCODE_BYTES = 1 << 25
_INT_PATTERN = r"^-?[0-9]+$"
_SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
# Records read from the run files per dealing step of the shuffle.
_DEAL_BATCH = 8192


class ConvertError(ValueError):
    """The input cannot be converted; the message names the file (and row, column)."""


@dataclasses.dataclass
class ConvertResult:
    """What `convert` wrote.

    Attributes:
      rows_written: examples written to the shards.
      rows_skipped: bad rows dropped (only with ``skip_bad_rows=True``).
      shards: ``[{"file": name, "records": n}, ...]`` as in the manifest.
      first_errors: messages for the first few skipped rows.
    """
    rows_written: int
    rows_skipped: int
    shards: List[Dict[str, object]]
    first_errors: List[str]


# -- what each column means -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    """How one spec field is read from its input column and written to the Example."""
    column: str
    dtype: str                      # "int64", "float32" or "string"
    is_list: bool
    fill: Any                       # stands in for an empty cell; None: the cell is required
    absent_ok: bool                 # the column may be missing from the file
    expected: str                   # what a valid cell looks like, for messages
    missing_hint: str = ""
    # Returns a mask of values that parse but are not allowed (e.g. out of range).
    invalid: Optional[Callable[[np.ndarray], np.ndarray]] = None
    finite: bool = False
    label: bool = False             # parsed as a float so "1.0" is accepted
    distinct: bool = False          # list values must not repeat within a row
    non_empty: bool = False         # a list needs at least one value


_READER_PASSTHROUGH_DEFAULTS = {"int64": -1, "float32": float("nan"), "string": ""}


def _fields(spec: spec_lib.FeatureSpec) -> List[_Field]:
    """The fields of ``spec`` in reporting order (scenario, features, labels,
    passthrough); a column named twice (two tasks sharing a label) appears once."""
    scen = spec.scenario
    count = scen.count

    def out_of_range(v: np.ndarray) -> np.ndarray:
        return (v < 0) | (v >= count)

    if scen.multi_valued:
        scenario = _Field(scen.feature, "int64", True, fill=None, absent_ok=False,
                          expected=f"one or more distinct scenario ids in [0, {count}) "
                                   f"(a list or {LIST_SEPARATOR!r}-separated)",
                          invalid=out_of_range, distinct=True, non_empty=True)
    else:
        scenario = _Field(scen.feature, "int64", False, fill=None, absent_ok=False,
                          expected=f"an integer scenario id in [0, {count})",
                          invalid=out_of_range)
    out = [scenario]
    hint = " (declare a default for the feature in the spec to fill empty cells)"
    for f in spec.features:
        has_default = f.default is not None
        if f.type == spec_lib.SEQUENCE:
            what = "int64 ids" if f.dtype == "int64" else "non-empty strings"
            out.append(_Field(f.name, f.dtype, True, fill=None, absent_ok=has_default,
                              expected=f"{what} (a list or {LIST_SEPARATOR!r}-separated)"))
        elif f.type == spec_lib.NUMERIC:
            out.append(_Field(f.name, "float32", False, fill=f.default, absent_ok=has_default,
                              expected="a finite number", missing_hint=hint, finite=True))
        else:
            what = "an int64 id" if f.dtype == "int64" else "a non-empty string"
            out.append(_Field(f.name, f.dtype, False, fill=f.default, absent_ok=has_default,
                              expected=what, missing_hint=hint))
    for t in spec.tasks:
        out.append(_Field(t.label, "int64", False, fill=-1, absent_ok=True,
                          expected="a label 0 or 1 (-1 or empty: missing)",
                          invalid=lambda v: (v != 0) & (v != 1) & (v != -1), label=True))
    for p in spec.passthrough:
        fill = p.default if p.default is not None else _READER_PASSTHROUGH_DEFAULTS[p.dtype]
        what = {"int64": "an integer", "float32": "a number", "string": "a string"}[p.dtype]
        out.append(_Field(p.name, p.dtype, False, fill=fill, absent_ok=p.default is not None,
                          expected=what))
    seen, unique = set(), []
    for field in out:
        if field.column not in seen:
            seen.add(field.column)
            unique.append(field)
    return unique


# -- parsing one chunk of one column ---------------------------------------------

# A problem is (row mask, describe(row) -> message tail after "column X: ").
_Problem = Tuple[np.ndarray, Callable[[int], str]]


@dataclasses.dataclass
class _Parsed:
    """One field's values for a chunk, ready to become `codec.Column`s.

    int64 lists stay flat (values + per-row starts and lengths) until a batch
    of rows is encoded, so the padded matrix is only as wide as that batch's
    longest list.
    """
    kind: str                        # codec kind: int64, float32, bytes
    values: Any                      # [n] scalars, flat list values, or per-row lists of bytes
    row_bytes: np.ndarray            # [n] encoded size estimate, for sizing encode batches
    problems: List[_Problem]
    lengths: Optional[np.ndarray] = None   # int64 lists: [n] lengths
    starts: Optional[np.ndarray] = None    # int64 lists: [n] offsets into values

    def column(self, rows: np.ndarray) -> codec.Column:
        if self.kind == "bytes":
            return codec.Column("bytes", [self.values[i] for i in rows])
        if self.lengths is None:
            return codec.Column(self.kind, self.values[rows])
        lengths = self.lengths[rows]
        width = max(int(lengths.max()) if len(rows) else 0, 1)
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        mat = np.zeros((len(rows), width), self.values.dtype)
        mat[np.repeat(np.arange(len(rows)), lengths), pos] = \
            self.values[np.repeat(self.starts[rows], lengths) + pos]
        return codec.Column(self.kind, mat, lengths)


def _is_text(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _mask(arr: pa.Array) -> np.ndarray:
    """Boolean array -> numpy, null as False."""
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), bool)


def _blank(arr: pa.Array) -> np.ndarray:
    """Rows that are null or, for text, empty."""
    if _is_text(arr.type):
        return _mask(pc.equal(pc.binary_length(arr), 0)) | _mask(arr.is_null())
    return _mask(arr.is_null())


def _null_where(arr: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return arr
    return pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)


def _cast_locating(arr: pa.Array, target: pa.DataType) -> Tuple[pa.Array, np.ndarray]:
    """Casts ``arr`` to ``target``; values that do not cast become null and are
    flagged in the returned mask.

    The whole-array cast is the fast path; when it fails, bisection finds the
    failing values with O(bad * log n) casts of slices.
    """
    bad = np.zeros(len(arr), bool)
    try:
        return arr.cast(target), bad
    except pa.ArrowInvalid:
        pass
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            arr.slice(lo, hi - lo).cast(target)
            continue
        except pa.ArrowInvalid:
            pass
        if hi - lo == 1:
            bad[lo] = True
        else:
            mid = (lo + hi) // 2
            stack.extend([(lo, mid), (mid, hi)])
    return _null_where(arr, bad).cast(target), bad


class _ColumnTypeError(Exception):
    """An input column's Arrow type cannot hold the field (reported per file)."""


def _as_utf8(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    try:
        return arr.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _ColumnTypeError() from None


def _check_typed_column(t: pa.DataType, field: _Field) -> None:
    """A typed (Parquet) column must hold the field's kind of number; nothing is
    cast across kinds: a bool or float column is never read as an id (every
    ``True`` would become id 1), a bool never as a numeric feature. Labels also
    take bool (``True`` = 1) and whole floats."""
    if field.label:
        ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    elif field.dtype == "int64":
        ok = pa.types.is_integer(t)
    else:
        ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if not ok:
        raise _ColumnTypeError()


def _parse_values(arr: pa.Array, field: _Field) -> Tuple[np.ndarray, np.ndarray]:
    """Parses the non-null values of ``arr`` into numpy.

    Text holding numbers must already be trimmed (`_number_text`). Returns
    ``(values, bad)``; for strings ``values`` is an object array of bytes. Null
    cells hold an arbitrary value and are never flagged.
    """
    n = len(arr)
    if field.dtype == "string":
        if not _is_text(arr.type):
            arr = _as_utf8(arr)
        return np.asarray(arr.cast(pa.binary()).to_pylist(), dtype=object), np.zeros(n, bool)
    as_label = field.label
    if not _is_text(arr.type) and not pa.types.is_null(arr.type):
        _check_typed_column(arr.type, field)
    bad = np.zeros(n, bool)
    if _is_text(arr.type) and field.dtype == "int64" and not as_label:
        # Arrow's cast also takes hex ("0x10"); ids must be plain decimal
        bad = ~_mask(pc.match_substring_regex(arr, _INT_PATTERN)) & _mask(arr.is_valid())
        arr = _null_where(arr, bad)
    target = pa.int64() if field.dtype == "int64" and not as_label else pa.float64()
    try:
        cast, cast_bad = _cast_locating(arr, target)
    except pa.ArrowNotImplementedError:
        raise _ColumnTypeError() from None
    bad |= cast_bad
    # copied: Arrow hands out read-only views and empty cells get filled in place
    values = np.array(cast.fill_null(0).to_numpy(zero_copy_only=False))
    if as_label:
        # NaN is how pandas and CSV exports spell a missing label
        values = np.where(np.isnan(values), -1.0, values)
        bad |= ~np.isfinite(values) | (values != np.round(values))
        values = np.where(bad, 0.0, values).astype(np.int64)
    elif field.dtype == "float32":
        values = values.astype(np.float32)
    return values, bad


def _number_text(arr: pa.Array, field: _Field) -> pa.Array:
    """Text cells of a number field, trimmed: " 12 " is 12 and "  " is empty.
    Other arrays, and string fields (whose spaces are data), pass unchanged."""
    if field.dtype == "string" or not _is_text(arr.type):
        return arr
    return pc.utf8_trim_whitespace(_as_utf8(arr))


def _raw(arr: pa.Array, i: int) -> Any:
    value = arr[i].as_py()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return value


def _bad_value(arr: pa.Array, expected: str) -> Callable[[int], str]:
    return lambda i: f"bad value {_raw(arr, i)!r}; expected {expected}."


def _parse_scalar(arr: pa.Array, field: _Field) -> _Parsed:
    n = len(arr)
    if _is_list(arr.type):
        raise _ColumnTypeError()
    text = _number_text(arr, field)
    blank = _blank(text)
    values, bad = _parse_values(_null_where(text, blank), field)
    bad &= ~blank
    problems: List[_Problem] = []
    if field.finite:
        bad |= ~blank & ~np.isfinite(values)
    if field.invalid is not None:
        bad |= ~blank & ~bad & field.invalid(values)
    if bad.any():
        problems.append((bad, _bad_value(arr, field.expected)))
    if field.fill is None:
        if blank.any():
            problems.append((blank, lambda i: f"value is missing; expected {field.expected}"
                                              f"{field.missing_hint}."))
    elif blank.any():
        fill = field.fill.encode("utf-8") if field.dtype == "string" else field.fill
        values[blank] = fill
    if field.dtype == "string":
        row_bytes = np.fromiter((len(b or b"") + 4 for b in values), np.int64, n)
        return _Parsed("bytes", [[b] for b in values], row_bytes, problems)
    kind = "float32" if field.dtype == "float32" else "int64"
    return _Parsed(kind, values, np.full(n, 10 if kind == "int64" else 4), problems)


def _parse_list(arr: pa.Array, field: _Field) -> _Parsed:
    n = len(arr)
    if _is_text(arr.type):
        text = _as_utf8(arr)
        blank = _blank(text)
        lists = pc.split_pattern(_null_where(text, blank), LIST_SEPARATOR)
    elif _is_list(arr.type):
        blank = _blank(arr)
        lists = arr
    else:
        # a plain scalar column holds one value per row
        blank = _blank(arr)
        lists = None
    if lists is None:
        lengths = (~blank).astype(np.int64)
        flat = arr.filter(pa.array(~blank))
    else:
        lengths = np.asarray(pc.list_value_length(lists).fill_null(0)
                             .to_numpy(zero_copy_only=False), np.int64)
        flat = pc.list_flatten(lists)
    parent = np.repeat(np.arange(n), lengths)
    # an empty element ("1||2") is an error: "" and -1 pad sequences in the reader
    flat = _number_text(flat, field)
    elem_null = _blank(flat)
    values, elem_bad = _parse_values(_null_where(flat, elem_null), field)
    elem_bad |= elem_null
    if field.invalid is not None:
        elem_bad |= ~elem_bad & field.invalid(values)
    bad = np.zeros(n, bool)
    first_bad = {}
    if elem_bad.any():
        idx = np.flatnonzero(elem_bad)
        bad[parent[idx]] = True
        rows, first = np.unique(parent[idx], return_index=True)
        first_bad = dict(zip(rows.tolist(), idx[first].tolist()))
    if field.distinct and len(values):
        order = np.lexsort((values, parent))
        sv, sp = values[order], parent[order]
        bad[sp[1:][(sv[1:] == sv[:-1]) & (sp[1:] == sp[:-1])]] = True

    def describe(i: int) -> str:
        if i in first_bad:
            element = flat[first_bad[i]].as_py()
            if isinstance(element, bytes):
                element = element.decode("utf-8", "replace")
            return (f"bad value {_raw(arr, i)!r} (element {element!r}); "
                    f"expected {field.expected}.")
        return f"bad value {_raw(arr, i)!r}; expected {field.expected}."

    problems: List[_Problem] = []
    if bad.any():
        problems.append((bad, describe))
    if field.non_empty:
        empty = lengths == 0
        if empty.any():
            problems.append((empty, lambda i: f"value is missing; expected {field.expected}."))
    starts = np.cumsum(lengths) - lengths
    if field.dtype == "string":
        items = values.tolist()
        rows = [items[s:s + k] for s, k in zip(starts.tolist(), lengths.tolist())]
        sizes = np.fromiter((len(b or b"") + 4 for b in items), np.int64, len(items))
        row_bytes = np.bincount(parent, weights=sizes, minlength=n).astype(np.int64) + 4
        return _Parsed("bytes", rows, row_bytes, problems)
    return _Parsed("int64", values, 10 * lengths + 4, problems, lengths=lengths, starts=starts)


# -- input sources ----------------------------------------------------------------


@dataclasses.dataclass
class _Chunk:
    columns: Dict[str, pa.Array]
    rows: np.ndarray                 # 1-based data row numbers


class _Source(abc.ABC):
    """Streams chunks of the needed columns of one input file (`_CsvSource`,
    `_ParquetSource`)."""

    def __init__(self, path: str, fields: Sequence[_Field], chunk_rows: int,
                 skip_bad_rows: bool):
        self.path = path
        self.fields = fields
        self.chunk_rows = chunk_rows
        self.skip_bad_rows = skip_bad_rows
        # (data row, message) of the first malformed CSV lines skipped
        self.malformed_errors: List[Tuple[int, str]] = []
        self.malformed_rows = 0

    def _check_columns(self, names: Sequence[str]) -> List[str]:
        """Returns the needed columns present in the file; raises for a missing
        required one."""
        present = set(names)
        for field in self.fields:
            if field.column not in present and not field.absent_ok:
                raise ConvertError(
                    f"{self.path}: required column {field.column!r} is missing (the file "
                    f"has {', '.join(names) or 'no columns'}). Add it, or declare a default "
                    f"for it in the spec.")
        return [f.column for f in self.fields if f.column in present]

    @abc.abstractmethod
    def chunks(self) -> Iterator[_Chunk]:
        """The file's rows, ``chunk_rows`` at a time."""


class _ParquetSource(_Source):

    def __init__(self, path: str, fields: Sequence[_Field], chunk_rows: int,
                 skip_bad_rows: bool):
        super().__init__(path, fields, chunk_rows, skip_bad_rows)
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConvertError(f"{self.path}: not a readable Parquet file ({exc}).") from None
        self._columns = self._check_columns(self._file.schema_arrow.names)

    def chunks(self) -> Iterator[_Chunk]:
        start = 0
        batches = self._file.iter_batches(batch_size=self.chunk_rows, columns=self._columns,
                                          use_threads=True)
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            columns = {name: batch.column(name) for name in self._columns}
            yield _Chunk(columns, np.arange(start + 1, start + n + 1))
            start += n


class _CsvSource(_Source):

    def __init__(self, path: str, fields: Sequence[_Field], chunk_rows: int,
                 skip_bad_rows: bool):
        super().__init__(path, fields, chunk_rows, skip_bad_rows)
        # Data row numbers of malformed lines pyarrow skipped, in file order.
        self._skipped: List[int] = []
        self._last_invalid = None
        self._read = pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=False)
        try:
            # Opening reads the header and infers types from the first block only.
            peek = pa_csv.open_csv(
                self.path, read_options=self._read,
                parse_options=pa_csv.ParseOptions(invalid_row_handler=lambda row: "skip"))
            names = peek.schema.names
            peek.close()
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConvertError(f"{self.path}: cannot read as CSV ({exc}).") from None
        self._columns = self._check_columns(names)

    def _on_invalid(self, row) -> str:
        # pyarrow's numbers are physical lines with the header as line 1
        data_row = row.number - 1 if row.number is not None else None
        where = f"row {data_row}" if data_row is not None else "a row"
        message = (f"{self.path}: {where}: expected {row.expected_columns} fields, got "
                   f"{row.actual_columns}: {row.text!r}.")
        if not self.skip_bad_rows:
            self._last_invalid = message
            return "error"
        self.malformed_rows += 1
        if len(self.malformed_errors) < _MAX_ERRORS:
            self.malformed_errors.append((data_row or 0, message))
        if data_row is not None:
            self._skipped.append(data_row)
        return "skip"

    def _row_numbers(self, start: int, n: int) -> np.ndarray:
        """Data row numbers of delivered rows ``start .. start + n - 1`` (0-based
        among delivered rows), stepping over the malformed rows skipped."""
        delivered = np.arange(start, start + n)
        if not self._skipped:
            return delivered + 1
        skipped = np.asarray(self._skipped)
        # delivered rows before the j-th skipped row
        before = skipped - np.arange(len(skipped)) - 1
        return delivered + 1 + np.searchsorted(before, delivered, side="right")

    def chunks(self) -> Iterator[_Chunk]:
        types = {name: pa.string() for name in self._columns}
        try:
            reader = pa_csv.open_csv(
                self.path, read_options=self._read,
                parse_options=pa_csv.ParseOptions(invalid_row_handler=self._on_invalid),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=self._columns, column_types=types,
                    strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise self._error(exc) from None
        start = 0
        with reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise self._error(exc) from None
                for lo in range(0, batch.num_rows, self.chunk_rows):
                    part = batch.slice(lo, self.chunk_rows)
                    n = part.num_rows
                    columns = {name: part.column(name) for name in self._columns}
                    yield _Chunk(columns, self._row_numbers(start, n))
                    start += n

    def _error(self, exc: Exception) -> ConvertError:
        if self._last_invalid is not None:
            return ConvertError(self._last_invalid)
        return ConvertError(f"{self.path}: cannot read as CSV ({exc}).")


# the least fraction of its rows a --skip_bad_rows conversion must keep (`convert`)
MIN_ROWS = 0.5


def _detect_format(path: str, input_format: str) -> str:
    if input_format not in FORMATS:
        raise ValueError(f"input_format must be one of {', '.join(FORMATS)}, "
                         f"got {input_format!r}.")
    if input_format != "auto":
        return input_format
    lower = path.lower()
    if lower.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if re.search(r"\.(csv|txt)(\.(gz|bz2|zst|lz4))?$", lower):
        return "csv"
    with open(path, "rb") as fh:
        return "parquet" if fh.read(4) == b"PAR1" else "csv"


# -- writing ----------------------------------------------------------------------


def _row_batches(keep: np.ndarray, cost: np.ndarray) -> Iterator[np.ndarray]:
    """Cuts ``keep`` (in order) into batches with rows x costliest row <= the
    encode budget (a row over budget on its own forms its own batch)."""
    if not len(keep):
        return
    if int(cost.max()) * len(keep) <= _ENCODE_BYTES:
        yield keep
        return
    lo, widest = 0, 0
    for i, c in enumerate(cost.tolist()):
        if i > lo and max(widest, c) * (i - lo + 1) > _ENCODE_BYTES:
            yield keep[lo:i]
            lo, widest = i, 0
        widest = max(widest, c)
    yield keep[lo:]


def _encode_batches(parsed: Dict[str, _Parsed], keep: np.ndarray) -> Iterator[List[bytes]]:
    """Encodes the kept rows, in batches small enough for the codec's matrices."""
    cost = sum(p.row_bytes[keep] for p in parsed.values())
    for rows in _row_batches(keep, np.asarray(cost)):
        columns = {name: p.column(rows) for name, p in parsed.items()}
        yield codec.encode_examples(columns, len(rows))


def _shard_names(out_dir: str, split: str, old_manifest: Optional[dict]) -> List[str]:
    """Shards of ``split`` already in ``out_dir``: those named like ours plus any
    the old manifest lists."""
    pattern = re.compile(rf"^{re.escape(split)}-\d{{5,}}\.tfrecord(\.gz)?$")
    names = {n.rstrip("/") for n in tf.io.gfile.listdir(out_dir) if pattern.match(n.rstrip("/"))}
    if old_manifest:
        entry = old_manifest.get("splits", {}).get(split) or {}
        names.update(str(s["file"]) for s in entry.get("shards", []))
    return sorted(names)


def _publish(tmp_dir: str, out_dir: str, split: str, shards: List[Dict[str, object]],
             old_manifest: Optional[dict]) -> None:
    """Moves the new shards into ``out_dir`` and removes stale ones of ``split``."""
    stale = set(_shard_names(out_dir, split, old_manifest))
    for shard in shards:
        name = str(shard["file"])
        tf.io.gfile.rename(os.path.join(tmp_dir, name), os.path.join(out_dir, name),
                           overwrite=True)
        stale.discard(name)
    for name in sorted(stale):
        path = os.path.join(out_dir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def _update_manifest(out_dir: str, split: str, shards: List[Dict[str, object]],
                     old: Optional[dict], counts: label_stats.LabelCounts,
                     shuffled: bool) -> None:
    """Writes the manifest with ``split``'s new shards, label counts and row order
    ("random" when shuffled, else "input"), keeping the other splits' entries and
    any other keys of ``old``."""
    old = old or {}
    splits = {name: list(entry.get("shards", []))
              for name, entry in (old.get("splits") or {}).items()}
    splits[split] = shards
    extra = {k: v for k, v in old.items() if k != "splits"}
    recorded = extra.get(label_stats.MANIFEST_KEY)
    recorded = dict(recorded) if isinstance(recorded, dict) else {}
    recorded[split] = counts.to_dict()
    extra[label_stats.MANIFEST_KEY] = recorded
    order = extra.get(tfrecord.ROW_ORDER_KEY)
    order = dict(order) if isinstance(order, dict) else {}
    order[split] = tfrecord.RANDOM_ORDER if shuffled else "input"
    extra[tfrecord.ROW_ORDER_KEY] = order
    tfrecord.write_manifest(out_dir, splits, extra)


def _count_labels(counts: label_stats.LabelCounts, spec: spec_lib.FeatureSpec,
                  parsed: Dict[str, "_Parsed"], keep: np.ndarray) -> None:
    """Adds the kept rows' parsed labels (1/0/-1) and scenarios to ``counts``."""
    labels = np.stack([parsed[t.label].values[keep] for t in spec.tasks], axis=1)
    scen = parsed[spec.scenario.feature]
    if scen.lengths is None:
        counts.add(labels, scen.values[keep])
        return
    # a multi-valued scenario: flat ids + per-row lengths -> [n, S] membership
    n, count = len(scen.lengths), spec.scenario.count
    rows = np.repeat(np.arange(n), scen.lengths)
    valid = (scen.values >= 0) & (scen.values < count)  # bad rows' ids may be out of range
    member = np.zeros((n, count), np.int64)
    member[rows[valid], scen.values[valid]] = 1
    counts.add(labels, member[keep])


def _shuffled_shards(run_files: List[str], total: int, tmp_dir: str, split: str,
                     records_per_shard: int, compression: Optional[str],
                     seed: int) -> List[Dict[str, object]]:
    """Steps 2 and 3 of the module docstring's external shuffle: deals the
    ``total`` records of ``run_files`` (in order) at random over balanced
    buckets, then writes each bucket, permuted, as ``{split}-NNNNN`` in
    ``tmp_dir``. Deletes the run and bucket files it is done with."""
    if total == 0:
        return []
    m = math.ceil(total / records_per_shard)
    rng = np.random.default_rng([seed, total, records_per_shard])
    room = np.full(m, total // m, np.int64)
    room[:total % m] += 1
    bucket_paths = [os.path.join(tmp_dir, f"bucket-{j:05d}.tfrecord") for j in range(m)]
    writers = [tf.io.TFRecordWriter(p) for p in bucket_paths]
    try:
        for batch in tf.data.TFRecordDataset(run_files).batch(_DEAL_BATCH):
            records = batch.numpy()
            take = rng.multivariate_hypergeometric(room, len(records))
            room -= take
            dest = np.repeat(np.arange(m), take)
            rng.shuffle(dest)
            for record, j in zip(records, dest.tolist()):
                writers[j].write(record)
    finally:
        for w in writers:
            w.close()
    for path in run_files:
        tf.io.gfile.remove(path)
    shards = []
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    for j, path in enumerate(bucket_paths):
        records = [r for batch in tf.data.TFRecordDataset(path).batch(_DEAL_BATCH)
                   for r in batch.numpy()]
        tf.io.gfile.remove(path)
        name = f"{split}-{j:05d}{tfrecord.shard_suffix(compression)}"
        with tf.io.TFRecordWriter(os.path.join(tmp_dir, name), options) as writer:
            for i in rng.permutation(len(records)).tolist():
                writer.write(records[i])
        shards.append({"file": name, "records": len(records)})
        del records
    return shards


def convert(spec: spec_lib.FeatureSpec,
            input_path: str,
            out_dir: str,
            *,
            split: str = "train",
            records_per_shard: int = 250_000,
            compression: Optional[str] = None,
            skip_bad_rows: bool = False,
            chunk_rows: int = 65_536,
            input_format: str = "auto",
            shuffle_rows: Optional[bool] = None,
            shuffle_seed: int = 0,
            min_rows: float = MIN_ROWS) -> ConvertResult:
    """Converts one CSV or Parquet file into ``out_dir/{split}-NNNNN.tfrecord[.gz]``.

    See the module docstring for how columns are read and validated.

    Args:
      spec: the feature spec giving each column its meaning.
      input_path: a CSV file (``.csv``, optionally ``.gz``/``.bz2`` compressed)
        or a Parquet file.
      out_dir: output directory (created if missing); also receives
        ``manifest.json`` and ``spec.yaml``.
      split: shard name prefix and manifest split, e.g. "train" or "eval". Its
        earlier shards in ``out_dir`` are replaced.
      records_per_shard: examples per shard.
      compression: None or "GZIP".
      skip_bad_rows: drop bad rows (counted in the result) instead of failing.
      chunk_rows: rows parsed and encoded at a time; bounds memory use.
      input_format: "auto" (by extension, else by content), "csv" or "parquet".
      shuffle_rows: write the rows in a seeded random order spread over the
        shards (module docstring, "Row order"); None: for ``split="train"``
        only. False keeps the input order.
      shuffle_seed: seed of that order; the same input, seed and
        ``records_per_shard`` give the same shards.
      min_rows: with ``skip_bad_rows``, the least fraction of the input's rows that
        must be kept; a conversion keeping fewer (or no row at all, with or without
        ``skip_bad_rows``) fails and the split already in ``out_dir`` is left as it
        was (module docstring, "Atomicity").

    Returns:
      A `ConvertResult`.

    Raises:
      ConvertError: the input is unreadable, lacks a required column, has a
        bad row (without ``skip_bad_rows``), has no row, or more bad rows than
        ``min_rows`` allows. No new shard is left behind and nothing in ``out_dir``
        is changed.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}.")
    if records_per_shard <= 0:
        raise ValueError(f"records_per_shard must be positive, got {records_per_shard}.")
    if compression not in (None, "GZIP"):
        raise ValueError(f"compression must be None or 'GZIP', got {compression!r}.")
    if not _SPLIT_PATTERN.match(split):
        raise ValueError(f"split must be a name of letters, digits and '_', got {split!r}.")
    if not 0 <= min_rows <= 1:
        raise ValueError(f"min_rows must be a fraction in [0, 1], got {min_rows}.")
    input_path = str(input_path)
    out_dir = str(out_dir)
    if not os.path.isfile(input_path):
        raise ConvertError(f"{input_path}: input file does not exist.")
    fmt = _detect_format(input_path, input_format)
    fields = _fields(spec)
    source_cls = _ParquetSource if fmt == "parquet" else _CsvSource
    source = source_cls(input_path, fields, chunk_rows, skip_bad_rows)

    shuffle = split == "train" if shuffle_rows is None else bool(shuffle_rows)
    created = not tf.io.gfile.exists(out_dir)
    tf.io.gfile.makedirs(out_dir)
    try:
        return _convert_into(spec, input_path, out_dir, source, fields, split=split,
                             records_per_shard=records_per_shard, compression=compression,
                             skip_bad_rows=skip_bad_rows, shuffle=shuffle,
                             shuffle_seed=shuffle_seed, min_rows=min_rows)
    except BaseException:
        # a failed first conversion leaves no empty output directory behind
        filesystems.remove_empty_dirs([out_dir] if created else [])
        raise


def _convert_into(spec, input_path, out_dir, source, fields, *, split, records_per_shard,
                  compression, skip_bad_rows, shuffle, shuffle_seed,
                  min_rows) -> ConvertResult:
    """`convert`'s body once the arguments are checked and ``out_dir`` exists."""
    tmp_dir = os.path.join(out_dir, f".tmp-convert-{split}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    written, skipped = 0, 0
    errors: List[Tuple[int, str]] = []  # (data row, message) of the first skipped rows
    counts = label_stats.LabelCounts(spec.task_names, spec.scenario.names)
    try:
        # shuffling first writes the rows in input order to uncompressed run files
        with tfrecord.ShardedWriter(tmp_dir, "run" if shuffle else split, records_per_shard,
                                    None if shuffle else compression) as writer:
            for chunk in source.chunks():
                parsed = _parse_chunk(input_path, chunk, fields)
                bad = np.zeros(len(chunk.rows), bool)
                for p in parsed.values():
                    for mask, _ in p.problems:
                        bad |= mask
                if bad.any():
                    bad_rows = np.flatnonzero(bad)
                    if not skip_bad_rows:
                        raise ConvertError(_row_message(input_path, chunk, parsed,
                                                        int(bad_rows[0])))
                    for i in bad_rows[:max(0, _MAX_ERRORS - len(errors))]:
                        errors.append((int(chunk.rows[i]),
                                       _row_message(input_path, chunk, parsed, int(i))))
                    skipped += len(bad_rows)
                keep = np.flatnonzero(~bad)
                _count_labels(counts, spec, parsed, keep)
                for records in _encode_batches(parsed, keep):
                    writer.write(records)
                written += len(keep)
        shards = list(writer.shards)
        _check_kept(input_path, out_dir, split, written, skipped + source.malformed_rows,
                    min_rows)
        if shuffle:
            runs = [os.path.join(tmp_dir, str(s["file"])) for s in shards]
            shards = _shuffled_shards(runs, written, tmp_dir, split, records_per_shard,
                                      compression, shuffle_seed)
        old_manifest = tfrecord.read_manifest(out_dir)
        _publish(tmp_dir, out_dir, split, shards, old_manifest)
    finally:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
    _update_manifest(out_dir, split, shards, old_manifest, counts, shuffle)
    spec_lib.save_spec(spec, os.path.join(out_dir, SPEC_FILE))
    skipped += source.malformed_rows
    # both lists hold their own first few; the first few overall are among them
    errors = sorted(errors + source.malformed_errors)[:_MAX_ERRORS]
    return ConvertResult(rows_written=written, rows_skipped=skipped, shards=shards,
                         first_errors=[message for _, message in errors])


def _check_kept(path: str, out_dir: str, split: str, written: int, skipped: int,
                min_rows: float) -> None:
    """Refuses to publish a split with no row, or with fewer than ``min_rows`` of
    the input's rows (the split already in ``out_dir`` stays as it was)."""
    kept = f"the {split!r} split in {out_dir} is left as it was"
    if not written:
        why = (f"all {skipped} row(s) are bad (see the first errors with --skip_bad_rows off)"
               if skipped else "the input has no data row")
        raise ConvertError(f"{path}: no row to write: {why}; {kept}.")
    total = written + skipped
    if written < min_rows * total:
        raise ConvertError(
            f"{path}: only {written} of {total} rows ({written / total:.1%}) are good, fewer "
            f"than --min_rows={min_rows:g} of the input; {kept}. Fix the input or lower "
            f"--min_rows.")


def _parse_chunk(path: str, chunk: _Chunk, fields: Sequence[_Field]) -> Dict[str, _Parsed]:
    parsed = {}
    for field in fields:
        arr = chunk.columns.get(field.column)
        if arr is None:  # an absent (optional) column: every cell is empty
            arr = pa.nulls(len(chunk.rows), pa.string())
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        try:
            parsed[field.column] = (_parse_list(arr, field) if field.is_list
                                    else _parse_scalar(arr, field))
        except _ColumnTypeError:
            raise ConvertError(f"{path}: column {field.column!r} has type {arr.type}, which "
                               f"cannot hold {field.expected}.") from None
    return parsed


def _row_message(path: str, chunk: _Chunk, parsed: Dict[str, _Parsed], i: int) -> str:
    """The message for bad row ``i`` of ``chunk``: its first problem in field order."""
    for column, p in parsed.items():
        for mask, describe in p.problems:
            if mask[i]:
                return f"{path}: row {int(chunk.rows[i])}, column {column!r}: {describe(i)}"
    raise AssertionError("row has no problem")
