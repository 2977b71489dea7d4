import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tfmdl.pipelines import convert as convert_lib
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord
from tfmdl.pipelines.convert import ConvertError, convert

from tests.files import tree_bytes

SPEC = {
    "name": "toy",
    "scenario": {"feature": "scenario_id", "names": ["feed", "search", "video"]},
    "tasks": [{"name": "click", "label": "label_click"},
              {"name": "buy", "label": "label_buy"}],
    "features": [
        {"name": "user_id", "type": "categorical", "dtype": "int64", "hash_buckets": 100,
         "default": 0},
        {"name": "city", "type": "categorical", "dtype": "string", "vocabulary": ["x", "y"]},
        {"name": "age", "type": "numeric", "default": 30.0,
         "normalization": {"kind": "zscore", "mean": 30.0, "std": 10.0}},
        {"name": "hist", "type": "sequence", "dtype": "int64", "num_buckets": 50, "max_len": 3},
    ],
    "passthrough": [{"name": "p_true", "dtype": "float32"}],
}

HEADER = "scenario_id,user_id,city,age,hist,label_click,label_buy,p_true,extra"
CSV_ROWS = [
    "0,11,x,25.5,1|2,1,0,0.25,foo",
    "2,,y,,,0,,0.5,bar",            # empty cells: defaults, empty sequence, missing label
    "1,13,z,40,5|6|7|8,,1,0.75,baz",  # sequence longer than max_len
]


def _spec(**overrides):
    raw = json.loads(json.dumps(SPEC))
    raw.update(overrides)
    return spec_lib.FeatureSpec.from_dict(raw)


def _write_csv(path, header, rows):
    path.write_text("\n".join([header] + rows) + "\n")
    return str(path)


def _read(spec, out_dir, split="train"):
    ds = reader.make_dataset(spec, str(out_dir), batch_size=1000, split=split, shuffle=False,
                             include_passthrough=True)
    batches = list(ds)
    assert len(batches) == 1
    features, labels, weights = batches[0]
    return ({k: v.numpy() for k, v in features.items()},
            {k: v.numpy() for k, v in labels.items()},
            {k: v.numpy() for k, v in weights.items()})


def _records(out_dir, split="train"):
    """Raw records of a split's shards, in shard order."""
    files = sorted(f for f in os.listdir(out_dir) if f.startswith(f"{split}-"))
    out = []
    for name in files:
        path = os.path.join(out_dir, name)
        comp = "GZIP" if name.endswith(".gz") else ""
        out.extend(r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=comp))
    return out


def _write_parquet(path, cols):
    pq.write_table(pa.table(cols), str(path))
    return path


def _shards(out_dir):
    return sorted(f for f in os.listdir(out_dir) if ".tfrecord" in f)


def test_csv_and_parquet_round_trip(tmp_path):
    spec = _spec()
    csv_path = _write_csv(tmp_path / "in.csv", HEADER, CSV_ROWS)
    table = pa.table({
        "scenario_id": pa.array([0, 2, 1], pa.int64()),
        "user_id": pa.array([11, None, 13], pa.int64()),
        "city": pa.array(["x", "y", "z"]).dictionary_encode(),
        "age": pa.array([25.5, None, 40.0]),
        "hist": pa.array([[1, 2], None, [5, 6, 7, 8]], pa.list_(pa.int64())),
        "label_click": pa.array([1, 0, None], pa.int64()),
        "label_buy": pa.array([0.0, None, 1.0]),  # pandas writes int labels with NaN as floats
        "p_true": pa.array([0.25, 0.5, 0.75]),
        "extra": ["foo", "bar", "baz"],
    })
    pq_path = str(tmp_path / "in.parquet")
    pq.write_table(table, pq_path)

    # input order kept (shuffle_rows=False) so rows can be checked by position
    from_csv = convert(spec, csv_path, str(tmp_path / "csv"), shuffle_rows=False)
    from_pq = convert(spec, pq_path, str(tmp_path / "pq"), shuffle_rows=False)
    assert (from_csv.rows_written, from_csv.rows_skipped) == (3, 0)
    assert from_pq.rows_written == 3
    assert from_csv.shards == [{"file": "train-00000.tfrecord", "records": 3}]

    features, labels, weights = _read(spec, tmp_path / "csv")
    np.testing.assert_array_equal(features["scenario_id"], [0, 2, 1])
    np.testing.assert_array_equal(features["user_id"], [11, 0, 13])
    assert features["city"].tolist() == [b"x", b"y", b"z"]
    np.testing.assert_allclose(features["age"], [25.5, 30.0, 40.0])
    np.testing.assert_array_equal(features["hist"], [[1, 2, -1], [-1, -1, -1], [5, 6, 7]])
    np.testing.assert_allclose(features["p_true"], [0.25, 0.5, 0.75])
    assert "extra" not in features
    np.testing.assert_array_equal(labels["click"], [1, 0, 0])
    np.testing.assert_array_equal(weights["click"], [1, 1, 0])
    np.testing.assert_array_equal(labels["buy"], [0, 0, 1])
    np.testing.assert_array_equal(weights["buy"], [1, 0, 1])

    assert _records(tmp_path / "csv") == _records(tmp_path / "pq")
    assert spec_lib.load_spec(str(tmp_path / "csv")).to_dict() == spec.to_dict()
    manifest = json.loads((tmp_path / "csv" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["records"] == 3


def test_multi_valued_scenario(tmp_path):
    spec = _spec(scenario={"feature": "scenario_id", "names": ["a", "b", "c"],
                           "multi_valued": True})
    rows = ["0|2,11,x,1,,1,0,0.1", "1,12,y,2,3,0,1,0.2", "2|1|0,13,x,3,4|5,1,1,0.3"]
    header = "scenario_id,user_id,city,age,hist,label_click,label_buy,p_true"
    convert(spec, _write_csv(tmp_path / "in.csv", header, rows), str(tmp_path / "csv"),
            shuffle_rows=False)
    features, _, _ = _read(spec, tmp_path / "csv")
    np.testing.assert_array_equal(features["scenario_id"], [[0, 2, -1], [1, -1, -1], [2, 1, 0]])

    base = {"user_id": [11, 12, 13], "city": ["x", "y", "x"], "age": [1.0, 2.0, 3.0],
            "hist": pa.array([[], [3], [4, 5]], pa.list_(pa.int64())),
            "label_click": [1, 0, 1], "label_buy": [0, 1, 1], "p_true": [0.1, 0.2, 0.3]}
    as_lists = pa.table(dict(base, scenario_id=pa.array([[0, 2], [1], [2, 1, 0]])))
    as_text = pa.table(dict(base, scenario_id=["0|2", "1", "2|1|0"],
                            hist=["", "3", "4|5"]))
    for name, table in [("lists", as_lists), ("text", as_text)]:
        pq.write_table(table, str(tmp_path / f"{name}.parquet"))
        convert(spec, str(tmp_path / f"{name}.parquet"), str(tmp_path / name),
                shuffle_rows=False)
        assert _records(tmp_path / name) == _records(tmp_path / "csv"), name


def test_multi_valued_scenario_rejects_repeats_and_empty(tmp_path):
    spec = _spec(scenario={"feature": "scenario_id", "names": ["a", "b", "c"],
                           "multi_valued": True})
    header = "scenario_id,city,hist,p_true"
    rows = ["0|2,x,,0.1", "1|1,y,,0.2", ",x,,0.3"]
    result = convert(spec, _write_csv(tmp_path / "in.csv", header, rows),
                     str(tmp_path / "out"), skip_bad_rows=True, min_rows=0.3)
    assert (result.rows_written, result.rows_skipped) == (1, 2)
    assert "row 2" in result.first_errors[0] and "'1|1'" in result.first_errors[0]
    assert "row 3" in result.first_errors[1] and "missing" in result.first_errors[1]


BAD_CELLS = [
    ("user_id", "abc", "an int64 id"),
    ("user_id", "0x10", "an int64 id"),
    ("label_click", "2", "0 or 1"),
    ("scenario_id", "7", "[0, 3)"),
    ("age", "fast", "a finite number"),
    ("age", "inf", "a finite number"),
    ("hist", "4|x|6", "element 'x'"),
    ("city", "", "missing"),
]


@pytest.mark.parametrize("column,value,expected", BAD_CELLS)
def test_bad_row_fails_without_leaving_shards(tmp_path, column, value, expected):
    spec = _spec()
    header = HEADER.split(",")
    rows = []
    for i in range(5):
        cells = dict(zip(header, f"{i % 3},{i},x,{i}.5,1|2,1,0,0.5,e".split(",")))
        if i == 2:
            cells[column] = value
        rows.append(",".join(cells[h] for h in header))
    path = _write_csv(tmp_path / "bad.csv", HEADER, rows)
    out = tmp_path / "out"
    with pytest.raises(ConvertError) as info:
        # one record per shard: shards 0 and 1 are complete when row 3 fails
        convert(spec, path, str(out), records_per_shard=1)
    message = str(info.value)
    assert "bad.csv" in message and "row 3" in message and repr(column) in message
    assert expected in message
    if value:
        assert repr(value) in message
    assert not out.exists()          # a failed first conversion leaves no empty directory

    result = convert(spec, path, str(out), records_per_shard=1, skip_bad_rows=True,
                     shuffle_rows=False)
    assert (result.rows_written, result.rows_skipped) == (4, 1)
    assert len(result.first_errors) == 1 and "row 3" in result.first_errors[0]
    assert _shards(out) == [f"train-{i:05d}.tfrecord" for i in range(4)]
    features, _, _ = _read(spec, out)
    np.testing.assert_array_equal(features["user_id"], [0, 1, 3, 4])


def test_parquet_bad_values(tmp_path):
    spec = _spec()
    table = pa.table({
        "scenario_id": [0, 1, 2, 1], "city": ["x", "y", "x", "y"], "hist": [""] * 4,
        "label_click": pa.array([1.0, 0.5, None, 1.0]),  # 0.5 is not a label
        "user_id": pa.array([1, 2, 3, 4]),
        "age": pa.array([1.0, 2.0, float("inf"), 4.0]),   # inf is not a number
        "p_true": [0.1, 0.2, 0.3, 0.4],
    })
    path = str(tmp_path / "bad.parquet")
    pq.write_table(table, path)
    with pytest.raises(ConvertError, match=r"bad\.parquet: row 2, column 'label_click'"):
        convert(spec, path, str(tmp_path / "out"))
    result = convert(spec, path, str(tmp_path / "out"), skip_bad_rows=True)
    assert (result.rows_written, result.rows_skipped) == (2, 2)
    assert "row 3, column 'age': bad value inf" in result.first_errors[1]


@pytest.mark.parametrize("column,values,kind", [
    ("user_id", pa.array([1.0, 2.0]), "double"),          # float for an id: never cast
    ("user_id", pa.array([True, False]), "bool"),         # was read as id 1 / 0
    ("age", pa.array([True, False]), "bool"),             # bool for a numeric feature
    ("hist", pa.array([[1.5], [2.0]]), "list<element: double>"),
])
def test_parquet_column_of_another_kind_is_a_named_error(tmp_path, column, values, kind):
    """Issue 23 item 3: a typed column whose kind does not match the spec is an
    error naming the file and column, never a cast."""
    cols = {"scenario_id": [0, 1], "city": ["x", "y"], "p_true": [0.1, 0.2], "hist": [[1], []],
            "label_click": pa.array([True, False])}                # bool labels are fine
    cols[column] = values
    path = str(tmp_path / "typed.parquet")
    pq.write_table(pa.table(cols), path)
    with pytest.raises(ConvertError, match=rf"typed\.parquet: column {column!r} has type "
                                           rf"{re.escape(kind)}, which cannot hold"):
        convert(_spec(), path, str(tmp_path / "out"), skip_bad_rows=True)
    assert not (tmp_path / "out").exists()
    cols[column] = {"user_id": [1, 2], "age": [1.0, 2.0], "hist": [[1], [2]]}[column]
    result = convert(_spec(), str(_write_parquet(tmp_path / "ok.parquet", cols)),
                     str(tmp_path / "out"))
    assert result.rows_written == 2


def test_parquet_column_of_wrong_type(tmp_path):
    table = pa.table({"scenario_id": pa.array([[0]]), "city": ["x"], "hist": [[1]],
                      "p_true": [0.1]})
    pq.write_table(table, str(tmp_path / "in.parquet"))
    with pytest.raises(ConvertError, match="column 'scenario_id' has type list"):
        convert(_spec(), str(tmp_path / "in.parquet"), str(tmp_path / "out"))


def test_missing_required_column(tmp_path):
    header = "scenario_id,user_id,age,hist,label_click,label_buy,p_true"
    path = _write_csv(tmp_path / "nocity.csv", header, ["0,1,2.0,,1,0,0.5"])
    out = tmp_path / "out"
    with pytest.raises(ConvertError, match=r"nocity\.csv: required column 'city' is missing"):
        convert(_spec(), path, str(out))
    assert not out.exists() or os.listdir(out) == []


def test_absent_optional_columns_are_filled(tmp_path):
    # no user_id (has a default), hist (sequence with a default) or label_buy (a label)
    spec = _spec(features=[dict(f, default=-1) if f["name"] == "hist" else f
                           for f in SPEC["features"]])
    header = "scenario_id,city,age,label_click,p_true"
    path = _write_csv(tmp_path / "in.csv", header, ["0,x,1.5,1,0.5", "1,y,2.5,0,0.25"])
    assert convert(spec, path, str(tmp_path / "out"), shuffle_rows=False).rows_written == 2
    features, labels, weights = _read(spec, tmp_path / "out")
    np.testing.assert_array_equal(features["user_id"], [0, 0])
    np.testing.assert_array_equal(features["hist"], [[-1, -1, -1]] * 2)
    np.testing.assert_array_equal(weights["buy"], [0, 0])
    np.testing.assert_array_equal(labels["click"], [1, 0])


def _many_rows(n):
    rows = []
    for i in range(n):
        hist = "|".join(str((i + k) % 50) for k in range(i % 6))
        label = "" if i % 7 == 0 else str(i % 2)
        rows.append(f"{i % 3},{i},{'xyz'[i % 3]},{i / 4},{hist},{label},{(i + 1) % 2},"
                    f"{i / 100},e")
    return rows


def test_chunking_and_sharding(tmp_path):
    spec = _spec()
    path = _write_csv(tmp_path / "in.csv", HEADER, _many_rows(50))
    small = convert(spec, path, str(tmp_path / "small"), chunk_rows=7, records_per_shard=16,
                    shuffle_rows=False)
    large = convert(spec, path, str(tmp_path / "large"), chunk_rows=1000, records_per_shard=16,
                    shuffle_rows=False)
    assert small.rows_written == large.rows_written == 50
    assert _records(tmp_path / "small") == _records(tmp_path / "large")
    assert len(_records(tmp_path / "small")) == 50
    assert _shards(tmp_path / "small") == [f"train-{i:05d}.tfrecord" for i in range(4)]
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert [s["records"] for s in manifest["splits"]["train"]["shards"]] == [16, 16, 16, 2]
    assert manifest["splits"]["train"]["records"] == 50

    # the same rows through Parquet (text cells) and GZIP shards read back the same
    columns = list(zip(*[r.split(",") for r in _many_rows(50)]))
    pq.write_table(pa.table({h: list(c) for h, c in zip(HEADER.split(","), columns)}),
                   str(tmp_path / "in.parquet"))
    convert(spec, str(tmp_path / "in.parquet"), str(tmp_path / "gz"), chunk_rows=7,
            records_per_shard=16, compression="GZIP", shuffle_rows=False)
    assert _shards(tmp_path / "gz")[0] == "train-00000.tfrecord.gz"
    assert _records(tmp_path / "gz") == _records(tmp_path / "small")


def test_manifest_merges_splits_and_replaces_stale_shards(tmp_path):
    spec = _spec()
    out = str(tmp_path / "out")
    path = _write_csv(tmp_path / "in.csv", HEADER, _many_rows(50))
    convert(spec, path, out, records_per_shard=16)
    convert(spec, _write_csv(tmp_path / "ev.csv", HEADER, CSV_ROWS), out, split="eval")
    # re-converting train into fewer shards drops the old train-00001..3
    convert(spec, path, out, records_per_shard=100)
    assert _shards(out) == ["eval-00000.tfrecord", "train-00000.tfrecord"]
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 50, "eval": 3}
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert len(_records(out, "train")) == 50


def test_malformed_csv_lines(tmp_path):
    spec = _spec()
    rows = [CSV_ROWS[0], "1,2,3", CSV_ROWS[1], CSV_ROWS[2].replace(",13,", ",abc,")]
    path = _write_csv(tmp_path / "in.csv", HEADER, rows)
    with pytest.raises(ConvertError, match=r"in\.csv: row 2: expected 9 fields, got 3"):
        convert(spec, path, str(tmp_path / "out"))
    result = convert(spec, path, str(tmp_path / "out"), skip_bad_rows=True)
    assert (result.rows_written, result.rows_skipped) == (2, 2)
    # the value error is reported at its own row, counting the skipped line
    assert "row 2:" in result.first_errors[0]
    assert "row 4, column 'user_id'" in result.first_errors[1]


def test_argument_errors(tmp_path):
    spec = _spec()
    path = _write_csv(tmp_path / "in.csv", HEADER, CSV_ROWS)
    with pytest.raises(ConvertError, match="does not exist"):
        convert(spec, str(tmp_path / "nope.csv"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="split"):
        convert(spec, path, str(tmp_path / "out"), split="train/x")
    with pytest.raises(ValueError, match="input_format"):
        convert(spec, path, str(tmp_path / "out"), input_format="json")
    assert issubclass(convert_lib.ConvertError, ValueError)


# -- label counts in the manifest -------------------------------------------------


def _expected_counts(spec, out_dir, split):
    """Label counts of a split recomputed from its records with plain numpy."""
    ds = reader.make_dataset(spec, str(out_dir), batch_size=100_000, split=split,
                             shuffle=False)
    (features, labels, weights), = list(ds)
    scen = features[spec.scenario.feature].numpy()
    S = spec.scenario.count
    member = (np.stack([(scen == s).any(axis=1) for s in range(S)], axis=1) if scen.ndim == 2
              else scen[:, None] == np.arange(S))
    out = {"rows": len(scen), "tasks": {}, "cells": {s: {} for s in spec.scenario.names}}
    for t in spec.task_names:
        y, w = labels[t].numpy(), weights[t].numpy()
        pos, neg = (w > 0) & (y == 1), (w > 0) & (y == 0)
        out["tasks"][t] = {"positives": int(pos.sum()), "negatives": int(neg.sum())}
        for i, s in enumerate(spec.scenario.names):
            out["cells"][s][t] = {"positives": int((pos & member[:, i]).sum()),
                                  "negatives": int((neg & member[:, i]).sum())}
    return out


def _manifest(out_dir):
    return json.loads(open(os.path.join(str(out_dir), "manifest.json")).read())


def test_manifest_records_label_counts_of_the_rows_written(tmp_path):
    spec = _spec()
    rows = _many_rows(60)
    rows[5] = rows[5].replace(",5,", ",abc,", 1)  # a bad row: skipped, not counted
    path = _write_csv(tmp_path / "in.csv", HEADER, rows)
    out = tmp_path / "out"
    assert convert(spec, path, str(out), skip_bad_rows=True, chunk_rows=16).rows_skipped == 1
    counts = _manifest(out)["label_counts"]["train"]
    assert counts == _expected_counts(spec, out, "train")
    assert counts["rows"] == 59
    # missing labels (every 7th click) count in neither column
    click = counts["tasks"]["click"]
    assert click["positives"] + click["negatives"] == 59 - sum(
        1 for i in range(60) if i % 7 == 0 and i != 5)


def test_label_counts_of_a_multi_valued_scenario(tmp_path):
    spec = _spec(scenario={"feature": "scenario_id", "names": ["a", "b", "c"],
                           "multi_valued": True})
    header = "scenario_id,user_id,city,age,hist,label_click,label_buy,p_true"
    rows = ["0|2,11,x,1,,1,0,0.1", "1,12,y,2,3,0,1,0.2", "2|1|0,13,x,3,4|5,1,,0.3",
            "2,14,y,4,,,1,0.4"]
    convert(spec, _write_csv(tmp_path / "in.csv", header, rows), str(tmp_path / "out"))
    counts = _manifest(tmp_path / "out")["label_counts"]["train"]
    assert counts == _expected_counts(spec, tmp_path / "out", "train")
    # the row in all three scenarios counts in each
    assert counts["cells"]["a"]["click"] == {"positives": 2, "negatives": 0}
    assert counts["cells"]["c"]["buy"] == {"positives": 1, "negatives": 1}


def test_reconverting_a_split_replaces_only_its_counts(tmp_path):
    spec = _spec()
    out = str(tmp_path / "out")
    convert(spec, _write_csv(tmp_path / "tr.csv", HEADER, _many_rows(40)), out)
    convert(spec, _write_csv(tmp_path / "ev.csv", HEADER, CSV_ROWS), out, split="eval")
    eval_counts = _manifest(out)["label_counts"]["eval"]
    assert eval_counts == _expected_counts(spec, out, "eval")
    convert(spec, _write_csv(tmp_path / "tr2.csv", HEADER, _many_rows(40)[:25]), out)
    counts = _manifest(out)["label_counts"]
    assert counts["eval"] == eval_counts
    assert counts["train"]["rows"] == 25
    assert counts["train"] == _expected_counts(spec, out, "train")
    # the row order too: train shuffled (the reader trusts it), eval in input order
    assert _manifest(out)["row_order"] == {"train": "random", "eval": "input"}
    assert tfrecord.in_random_order(reader.resolve_files(out, "train"))
    assert not tfrecord.in_random_order(reader.resolve_files(out, "eval"))


def test_train_counts_counts_the_files_when_the_manifest_has_none(tmp_path):
    from tfmdl.pipelines import label_stats

    spec = _spec()
    out = str(tmp_path / "out")
    convert(spec, _write_csv(tmp_path / "tr.csv", HEADER, _many_rows(40)), out,
            records_per_shard=15)
    files = reader.resolve_files(out, "train")
    recorded = label_stats.train_counts(spec, out, files, out=None)
    manifest = _manifest(out)
    del manifest["label_counts"]
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)
    calls = []

    def counter(*args, **kwargs):
        calls.append(kwargs["total"])
        return label_stats.count_files(*args, **kwargs)

    counted = label_stats.train_counts(spec, out, files, out=None, counter=counter)
    assert calls == [40]  # it did count, knowing the total from the shard manifest
    assert counted.to_dict() == recorded.to_dict()
    assert recorded.to_dict() == _expected_counts(spec, out, "train")


# -- row order ----------------------------------------------------------------------


def _sorted_log(n, users=100):
    """A CSV export sorted by user: user u's rows are consecutive."""
    rows = []
    for i in range(n):
        u = i * users // n
        rows.append(f"{u % 3},{u},{'xy'[u % 2]},{i},{u % 50},{i % 2},{(i // 3) % 2},"
                    f"{i / n},e")
    return rows


def _positions(spec, out_dir):
    """Input row index (the age column) of each record, in shard order."""
    ds = reader.make_dataset(spec, str(out_dir), batch_size=100_000, split="train",
                             shuffle=False, cycle_length=1)
    (features, _, _), = list(ds)
    return features["age"].numpy().astype(np.int64)


def _rank_correlation(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_train_rows_are_spread_at_random_over_the_shards(tmp_path):
    spec = _spec()
    path = _write_csv(tmp_path / "sorted.csv", HEADER, _sorted_log(2000))
    a = convert(spec, path, str(tmp_path / "a"), records_per_shard=500, chunk_rows=300)
    assert [s["records"] for s in a.shards] == [500] * 4
    order = _positions(spec, tmp_path / "a")
    assert sorted(order.tolist()) == list(range(2000))
    assert abs(_rank_correlation(order, np.arange(2000))) < 0.1
    # each shard is a sample of the whole file, not a range of it
    for shard in np.split(order, 4):
        assert shard.min() < 200 and shard.max() > 1800

    # the same rows as the input-order conversion; deterministic in the seed only
    convert(spec, path, str(tmp_path / "kept"), records_per_shard=500, shuffle_rows=False)
    assert _positions(spec, tmp_path / "kept").tolist() == list(range(2000))
    assert sorted(_records(tmp_path / "a")) == sorted(_records(tmp_path / "kept"))
    convert(spec, path, str(tmp_path / "b"), records_per_shard=500, chunk_rows=2000)
    assert _records(tmp_path / "b") == _records(tmp_path / "a")
    convert(spec, path, str(tmp_path / "c"), records_per_shard=500, shuffle_seed=1)
    assert _records(tmp_path / "c") != _records(tmp_path / "a")
    assert not [f for f in os.listdir(tmp_path / "a") if f.startswith(".tmp")]


def test_uneven_shards_are_balanced_and_other_splits_keep_their_order(tmp_path):
    spec = _spec()
    path = _write_csv(tmp_path / "sorted.csv", HEADER, _sorted_log(50))
    result = convert(spec, path, str(tmp_path / "out"), records_per_shard=16,
                     compression="GZIP")
    assert [s["records"] for s in result.shards] == [13, 13, 12, 12]
    assert _shards(tmp_path / "out")[0] == "train-00000.tfrecord.gz"
    assert sorted(_positions(spec, tmp_path / "out").tolist()) == list(range(50))
    convert(spec, path, str(tmp_path / "out"), split="eval")
    ds = reader.make_dataset(spec, str(tmp_path / "out"), batch_size=100, split="eval",
                             shuffle=False)
    (features, _, _), = list(ds)
    assert features["age"].numpy().astype(int).tolist() == list(range(50))


def test_a_conversion_that_keeps_no_row_leaves_the_existing_split_untouched(tmp_path):
    """Issue 23 item 1: --skip_bad_rows with every row bad used to replace the split
    with nothing and succeed."""
    spec = _spec()
    out = tmp_path / "out"
    convert(spec, _write_csv(tmp_path / "good.csv", HEADER, _many_rows(20)), str(out))
    before = tree_bytes(out)
    bad = [",".join(c if i != 1 else "abc" for i, c in enumerate(r.split(",")))  # user_id
           for r in _many_rows(20)]
    with pytest.raises(ConvertError, match=r"bad\.csv: no row to write: all 20 row\(s\) are "
                                           r"bad.*'train' split in .* is left as it was"):
        convert(spec, _write_csv(tmp_path / "bad.csv", HEADER, bad), str(out),
                skip_bad_rows=True)
    assert tree_bytes(out) == before


def test_a_conversion_below_min_rows_fails_and_min_rows_0_accepts_it(tmp_path):
    spec = _spec()
    out = tmp_path / "out"
    convert(spec, _write_csv(tmp_path / "good.csv", HEADER, _many_rows(10)), str(out))
    before = tree_bytes(out)
    rows = _many_rows(10)
    mostly_bad = [",".join(c if i != 3 else "fast" for i, c in enumerate(r.split(",")))
                  if k >= 3 else r for k, r in enumerate(rows)]          # 3 good of 10
    path = _write_csv(tmp_path / "mostly_bad.csv", HEADER, mostly_bad)
    with pytest.raises(ConvertError, match=r"only 3 of 10 rows \(30\.0%\) are good, fewer "
                                           r"than --min_rows=0\.5"):
        convert(spec, path, str(out), skip_bad_rows=True)
    assert tree_bytes(out) == before
    result = convert(spec, path, str(out), skip_bad_rows=True, min_rows=0.3)
    assert (result.rows_written, result.rows_skipped) == (3, 7)
    with pytest.raises(ValueError, match=r"min_rows must be a fraction in \[0, 1\], got 2"):
        convert(spec, path, str(out), min_rows=2)


def test_a_header_only_input_is_an_error_and_leaves_no_directory(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ConvertError, match=r"empty\.csv: no row to write: the input has no "
                                           r"data row"):
        convert(_spec(), _write_csv(tmp_path / "empty.csv", HEADER, []), str(out))
    assert not out.exists()
