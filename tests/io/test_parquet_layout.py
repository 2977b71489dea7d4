"""Footer checks of the parquet source: what tensorflow-io cannot read is refused
before reading, naming the file and column. These need pyarrow only (no io extra)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.io import parquet_data
from tfmdl.pipelines import parquet
from tfmdl.pipelines import reader


def _write(tmp_path, table, name="d"):
    return parquet_data.write(str(tmp_path / name), [table])


def _replace(table, name, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


def test_plan_reads_types_fills_and_row_counts(tmp_path):
    paths = parquet_data.write(str(tmp_path / "d"),
                               [parquet_data.table(30), parquet_data.table(12, 30)])
    columns, plans = parquet.plan(parquet_data.SPEC, paths, include_passthrough=True)
    by_name = {c.name: c for c in columns}
    assert [p.num_rows for p in plans] == [30, 12] and parquet.total_rows(paths) == 42
    assert plans[1].chunks == ((0, 12),)
    assert by_name["uid"].read_dtype.name == "int32" and by_name["ctr"].read_dtype.name == "float64"
    assert by_name["seq"].read_dtype.name == "string" and by_name["seq"].is_list
    assert by_name["age"].read_dtype is None and by_name["age"].fill == -1
    assert by_name["label_share"].read_dtype is None and by_name["label_share"].fill == -1
    assert "unused" not in by_name
    without = {c.name for c in parquet.plan(parquet_data.SPEC, paths)[0]}
    assert "true_click" not in without and "label_click" in without


def test_null_cells_are_refused_with_the_row_group(tmp_path):
    t = parquet_data.table(100)
    labels = pa.array([None if i == 70 else 1 for i in range(100)], pa.int64())
    [path] = _write(tmp_path, _replace(t, "label_click", labels))
    with pytest.raises(parquet.ParquetError,
                       match=rf"{path}: column 'label_click' has 1 null cell\(s\) in row group "
                             r"1\..*Write -1 for a missing label"):
        parquet.plan(parquet_data.SPEC, [path])


def test_nullable_columns_without_statistics_are_refused(tmp_path):
    path = str(tmp_path / "train-00000.parquet")
    pq.write_table(parquet_data.table(10), path, write_statistics=False)
    with pytest.raises(parquet.ParquetError,
                       match=rf"{path}: column 'scen' is nullable and row group 0 has no "
                             r"statistics proving it holds no nulls"):
        parquet.plan(parquet_data.SPEC, [path])


def test_list_columns_are_refused_with_the_string_layout(tmp_path):
    t = parquet_data.table(10)
    [path] = _write(tmp_path, _replace(t, "seq", pa.array([[1, 2]] * 10)))
    with pytest.raises(parquet.ParquetError,
                       match=rf"{path}: column 'seq' is a Parquet list<.*>; .*"
                             r"'\|'-separated string column"):
        parquet.plan(parquet_data.SPEC, [path])


def test_missing_and_mistyped_columns(tmp_path):
    t = parquet_data.table(10)
    [path] = _write(tmp_path, t.drop(["uid"]), "missing")
    with pytest.raises(parquet.ParquetError,
                       match=rf"{path}: required column 'uid' is missing \(the file has scen, "):
        parquet.plan(parquet_data.SPEC, [path])
    [path] = _write(tmp_path, _replace(t, "uid", pa.array([str(i) for i in range(10)])), "text")
    with pytest.raises(parquet.ParquetError,
                       match=rf"{path}: column 'uid' has type string, which the parquet source "
                             r"cannot read as an int64 id"):
        parquet.plan(parquet_data.SPEC, [path])


def test_a_column_typed_differently_across_files(tmp_path):
    a = parquet_data.table(10)
    b = _replace(parquet_data.table(10), "uid", pa.array(np.arange(10), pa.int64()))
    first, second = parquet_data.write(str(tmp_path / "d"), [a, b])
    with pytest.raises(parquet.ParquetError,
                       match=rf"column 'uid' is read as int32 from {first} but as int64 from "
                             rf"{second}"):
        parquet.plan(parquet_data.SPEC, [first, second])


def test_not_parquet(tmp_path):
    path = tmp_path / "train-00000.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(parquet.ParquetError, match=f"{path}: not a readable Parquet file"):
        parquet.plan(parquet_data.SPEC, [str(path)])


def test_data_directories_find_parquet_splits(tmp_path):
    paths = parquet_data.write(str(tmp_path / "flat"), [parquet_data.table(5)] * 2)
    assert reader.resolve_files(str(tmp_path / "flat"), "train") == paths
    assert reader.source_of(paths) == "parquet"
    spark = tmp_path / "spark" / "eval"
    spark.mkdir(parents=True)
    (spark / "part-00000.parquet").write_bytes(b"")
    assert reader.resolve_files(str(tmp_path / "spark"), "eval") == [
        str(spark / "part-00000.parquet")]
    with pytest.raises(reader.DataError, match="no files match .*/train-\\*.tfrecord\\* nor "):
        reader.resolve_files(str(tmp_path / "spark"), "train")
    with pytest.raises(reader.DataError, match="no files match .*/eval-\\*.tfrecord\\*\\.$"):
        reader.resolve_files(str(tmp_path / "spark"), "eval", source="tfrecord")
    with pytest.raises(reader.DataError, match="is Parquet but .* is not"):
        reader.source_of(paths + [str(tmp_path / "x.tfrecord")])


def test_reads_are_cut_where_string_pages_start(tmp_path, monkeypatch):
    """tensorflow-io garbles strings read across data pages (tfmdl.pipelines.parquet_pages)."""
    monkeypatch.setattr(parquet, "READ_ROWS", 1000)
    path = str(tmp_path / "train-00000.parquet")
    t = parquet_data.table(3000)
    t = _replace(t, "tags", pa.array([f"tag-{i:06d}-" * 4 for i in range(3000)]))
    # pages of 300 rows in the string columns written without a dictionary
    pq.write_table(t, path, row_group_size=2000, data_page_size=1, write_batch_size=300,
                   use_dictionary=["seq", "seq_pre", "city"])
    _, [plan] = parquet.plan(parquet_data.SPEC, [path])
    pages = list(range(0, 2000, 300)) + list(range(2000, 3000, 300))
    assert [a for a, _ in plan.chunks] == sorted(set(pages) | {1000})
    assert [b for _, b in plan.chunks] == sorted(set(pages) | {1000})[1:] + [3000]
