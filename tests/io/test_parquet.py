"""The parquet source gives the TFRecord reader's batches on the same rows."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.io import parquet_data
from tfmdl.pipelines import convert
from tfmdl.pipelines import reader

pytestmark = pytest.mark.io


def _batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in ds]


def _assert_same_batches(expected, actual):
    assert len(actual) == len(expected) and expected
    for i, (want, got) in enumerate(zip(expected, actual)):
        for part, (w, g) in enumerate(zip(want, got)):
            assert sorted(g) == sorted(w), (i, part)
            for name in w:
                where = f"batch {i}, part {part}, {name}"
                assert g[name].dtype == w[name].dtype, where
                assert g[name].shape == w[name].shape, where
                np.testing.assert_array_equal(g[name], w[name], err_msg=where)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same 300 rows as three Parquet files and as three TFRecord shards
    written by the converter from one Parquet file."""
    root = tmp_path_factory.mktemp("parity")
    parts = [parquet_data.table(100, start) for start in (0, 100, 200)]
    parquet_dir = str(root / "parquet")
    parquet_data.write(parquet_dir, parts)
    single = str(root / "all.parquet")
    parquet_data.write(str(root / "one"), [parquet_data.table(300)])
    os.rename(str(root / "one" / "train-00000.parquet"), single)
    tfrecord_dir = str(root / "tfrecord")
    # input order kept: the Parquet reader's batches are compared with these by position
    result = convert.convert(parquet_data.SPEC, single, tfrecord_dir, records_per_shard=100,
                             shuffle_rows=False)
    assert result.rows_written == 300 and len(result.shards) == 3
    return parquet_dir, tfrecord_dir, single


@pytest.mark.parametrize("options", [
    dict(shuffle=False),
    dict(shuffle=True, seed=3, shuffle_block=4, shuffle_buffer=64, repeat=2),
    dict(shuffle=False, drop_remainder=True, include_labels=False),
], ids=["ordered", "shuffled_repeated", "features_only"])
def test_same_batches_as_the_tfrecord_reader(both, options):
    parquet_dir, tfrecord_dir, _ = both
    kwargs = dict(split="train", include_passthrough=True, **options)
    want = _batches(reader.make_dataset(parquet_data.SPEC, tfrecord_dir, 7, **kwargs))
    got = _batches(reader.make_dataset(parquet_data.SPEC, parquet_dir, 7, **kwargs))
    if not options.get("include_labels", True):
        want, got = [(b,) for b in want], [(b,) for b in got]
    _assert_same_batches(want, got)


def test_one_file_read_in_chunks_matches(both, tmp_path, monkeypatch):
    from tfmdl.pipelines import parquet

    monkeypatch.setattr(parquet, "READ_ROWS", 64)  # several chunks, a partial last one
    _, tfrecord_dir, single = both
    want = _batches(reader.make_dataset(parquet_data.SPEC, tfrecord_dir, 50, split="train",
                                        shuffle=False, cycle_length=1))
    got = _batches(reader.make_dataset(parquet_data.SPEC, [single], 50, shuffle=False))
    # one file is read in file order; the three shards with cycle_length=1 likewise
    _assert_same_batches(want, got)


def test_values_defaults_and_missing_labels(both):
    _, _, single = both
    f, l, w = next(iter(reader.make_dataset(parquet_data.SPEC, single, 300, shuffle=False,
                                            include_passthrough=True)))
    r = np.arange(300)
    np.testing.assert_array_equal(f["uid"].numpy(), r % 100)
    assert f["uid"].dtype == tf.int64 and f["ctr"].dtype == tf.float32
    assert f["city"].numpy()[0] == b"unknown" and f["city"].numpy()[1] == b"c1"
    np.testing.assert_array_equal(f["age"].numpy(), -np.ones(300))  # absent, default -1
    # row 11: seq 4..8 -> post keeps [4, 5, 6], pre keeps [6, 7, 8]; row 6: empty
    np.testing.assert_array_equal(f["seq"].numpy()[11], [4, 5, 6])
    np.testing.assert_array_equal(f["seq_pre"].numpy()[11], [6, 7, 8])
    np.testing.assert_array_equal(f["seq"].numpy()[6], [-1, -1, -1])
    np.testing.assert_array_equal(f["tags"].numpy()[2], [b"t2", b"u2"])
    np.testing.assert_array_equal(w["click"].numpy(), (r % 5 != 4).astype(np.float32))
    np.testing.assert_array_equal(w["like"].numpy(), (r % 3 != 0).astype(np.float32))
    np.testing.assert_array_equal(l["like"].numpy(), np.where(r % 3 == 0, 0, (r // 2) % 2))
    np.testing.assert_array_equal(w["share"].numpy(), np.zeros(300))


def test_multi_valued_scenario_matches_the_converter(tmp_path):
    parquet_dir = str(tmp_path / "pq")
    [path] = parquet_data.write(parquet_dir, [parquet_data.multi_table(40)],
                                spec=parquet_data.MULTI_SPEC)
    convert.convert(parquet_data.MULTI_SPEC, path, str(tmp_path / "tf"), shuffle_rows=False)
    kwargs = dict(split="train", shuffle=False)
    want = _batches(reader.make_dataset(parquet_data.MULTI_SPEC, str(tmp_path / "tf"), 8,
                                        **kwargs))
    got = _batches(reader.make_dataset(parquet_data.MULTI_SPEC, parquet_dir, 8, **kwargs))
    _assert_same_batches(want, got)
    np.testing.assert_array_equal(got[0][0]["scen"][2], [2, 0, 1])
    np.testing.assert_array_equal(got[0][0]["scen"][1], [1, 2, -1])


def test_bad_cells_fail_naming_the_column(tmp_path):
    t = parquet_data.table(20)
    bad = {
        "label_click": (t.set_column(t.schema.get_field_index("label_click"), "label_click",
                                     __import__("pyarrow").array([2] * 20)), "label_click"),
        "seq": (t.set_column(t.schema.get_field_index("seq"), "seq",
                             __import__("pyarrow").array(["1||2"] * 20)), "column seq"),
        "ctr": (t.set_column(t.schema.get_field_index("ctr"), "ctr",
                             __import__("pyarrow").array([float("inf")] * 20)), "column ctr"),
    }
    for name, (table, message) in bad.items():
        parquet_data.write(str(tmp_path / name), [table])
        ds = reader.make_dataset(parquet_data.SPEC, str(tmp_path / name), 8, split="train")
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _batches(ds)


def test_warmup_examples_from_parquet_parse_like_the_rows(both):
    from tfmdl.serving import warmup

    parquet_dir, tfrecord_dir, _ = both
    records = warmup.read_records(parquet_dir, "train", 20, parquet_data.SPEC)
    assert len(records) == 20
    parse = reader.make_parse_fn(parquet_data.SPEC, include_labels=False)
    got = tf.nest.map_structure(lambda t: t.numpy(), parse(tf.constant(records)))
    want = _batches(reader.make_dataset(parquet_data.SPEC, tfrecord_dir, 20, split="train",
                                        shuffle=False, include_labels=False).take(1))
    _assert_same_batches([(want[0],)], [(got,)])


def test_strings_spanning_many_data_pages(tmp_path):
    """One row group of small pages: reads are cut at the string pages (a read across
    pages garbles strings in tensorflow-io 0.37.1, tfmdl.pipelines.parquet_pages)."""
    import pyarrow.parquet as pq

    path = str(tmp_path / "pq" / "train-00000.parquet")
    os.makedirs(os.path.dirname(path))
    pq.write_table(parquet_data.table(3000), path, row_group_size=3000, data_page_size=2048,
                   write_batch_size=64, use_dictionary=False)
    convert.convert(parquet_data.SPEC, path, str(tmp_path / "tf"), shuffle_rows=False)
    kwargs = dict(split="train", shuffle=False, include_passthrough=True)
    want = _batches(reader.make_dataset(parquet_data.SPEC, str(tmp_path / "tf"), 512, **kwargs))
    got = _batches(reader.make_dataset(parquet_data.SPEC, str(tmp_path / "pq"), 512, **kwargs))
    _assert_same_batches(want, got)
