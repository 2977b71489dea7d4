import os

import numpy as np
import pytest
import tensorflow as tf

from tfmdl.pipelines import example_codec as codec
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import tfrecord

SPEC = spec_lib.FeatureSpec.from_dict({
    "scenario": {"feature": "scen", "names": ["a", "b", "c"]},
    "tasks": [{"name": "click"}, {"name": "like"}],
    "features": [
        {"name": "uid", "type": "categorical", "num_buckets": 100},
        {"name": "city", "type": "categorical", "dtype": "string", "hash_buckets": 10,
         "default": "unknown"},
        {"name": "ctr", "type": "numeric", "default": 0.25},
        {"name": "seq", "type": "sequence", "max_len": 3, "shared_table": "uid"},
        {"name": "seq_pre", "type": "sequence", "max_len": 3, "shared_table": "uid",
         "padding": "pre"},
    ],
    "passthrough": [{"name": "true_click", "dtype": "float32"}],
})


def _write(path_dir, n, start=0, prefix="train", shards=1, gzip=False, **overrides):
    rows = np.arange(start, start + n)
    cols = {
        "scen": codec.Column("int64", rows % 3),
        "uid": codec.Column("int64", rows),
        "city": codec.Column("bytes", [[b"c%d" % r] for r in rows]),
        "ctr": codec.Column("float32", rows / 10.0),
        "seq": codec.Column("int64", np.tile(np.arange(5), (n, 1)) + rows[:, None],
                            lengths=rows % 6),
        "seq_pre": codec.Column("int64", np.tile(np.arange(5), (n, 1)) + rows[:, None],
                                lengths=rows % 6),
        "label_click": codec.Column("int64", np.where(rows % 4 == 3, -1, rows % 2)),
        "true_click": codec.Column("float32", rows / 1000.0),
    }
    cols.update(overrides)
    # label_like absent entirely: every row's like label is missing; even rows lack city
    with_city = codec.encode_examples(cols, n)
    without = codec.encode_examples({k: v for k, v in cols.items() if k != "city"}, n)
    data = [with_city[i] if rows[i] % 2 else without[i] for i in range(n)]
    per = -(-n // shards)
    with tfrecord.ShardedWriter(str(path_dir), prefix, per, "GZIP" if gzip else None) as w:
        w.write(data)
        shards_written = w.close()
    tfrecord.write_manifest(str(path_dir), {prefix: shards_written})
    return data


def _read_all(ds):
    feats, labels, weights = [], [], []
    for f, l, w in ds:
        feats.append({k: v.numpy() for k, v in f.items()})
        labels.append({k: v.numpy() for k, v in l.items()})
        weights.append({k: v.numpy() for k, v in w.items()})
    cat = lambda dicts: {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}  # noqa
    return cat(feats), cat(labels), cat(weights)


@pytest.mark.parametrize("gzip", [False, True])
def test_reads_back_values_defaults_labels_and_padding(tmp_path, gzip):
    _write(tmp_path, 10, gzip=gzip)
    ds = reader.make_dataset(SPEC, str(tmp_path), 4, split="train", shuffle=False,
                             include_passthrough=True)
    f, l, w = _read_all(ds)
    np.testing.assert_array_equal(f["uid"], np.arange(10))
    np.testing.assert_array_equal(f["scen"], np.arange(10) % 3)
    np.testing.assert_allclose(f["ctr"], np.arange(10) / 10.0, rtol=1e-6)
    assert f["city"][0] == b"unknown" and f["city"][1] == b"c1"
    # row 7: seq of length 1 = [7]; row 5: length 5 truncated to the first 3 (post)
    np.testing.assert_array_equal(f["seq"][7], [7, -1, -1])
    np.testing.assert_array_equal(f["seq"][5], [5, 6, 7])
    np.testing.assert_array_equal(f["seq"][0], [-1, -1, -1])
    # pre padding keeps the last 3, right-aligned
    np.testing.assert_array_equal(f["seq_pre"][5], [7, 8, 9])
    np.testing.assert_array_equal(f["seq_pre"][2], [-1, 2, 3])
    np.testing.assert_allclose(f["true_click"], np.arange(10) / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(w["click"], (np.arange(10) % 4 != 3).astype(np.float32))
    np.testing.assert_array_equal(l["click"], np.where(np.arange(10) % 4 == 3, 0, np.arange(10) % 2))
    np.testing.assert_array_equal(w["like"], np.zeros(10))
    assert set(f) == {"scen", "uid", "city", "ctr", "seq", "seq_pre", "true_click"}


def test_missing_required_feature_names_it(tmp_path):
    n = 4
    cols = {"scen": codec.Column("int64", np.zeros(n, np.int64)),
            "ctr": codec.Column("float32", np.zeros(n, np.float32))}
    with tfrecord.ShardedWriter(str(tmp_path), "train") as w:
        w.write(codec.encode_examples(cols, n))
    ds = reader.make_dataset(SPEC, str(tmp_path), 4, split="train", shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="uid"):
        _read_all(ds)


def test_label_outside_0_1_minus1_names_the_task(tmp_path):
    _write(tmp_path, 6, label_click=codec.Column("int64", np.array([0, 1, 2, 0, 1, 0])))
    ds = reader.make_dataset(SPEC, str(tmp_path), 6, split="train", shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_click of task click must be 0, 1 or -1"):
        _read_all(ds)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_numeric_value_names_the_feature(tmp_path, value):
    """The one missing-value rule (docs/design.md 1): NaN/inf is an error on every
    path, never a NaN fed to the model (convert rejects it the same way)."""
    ctr = np.arange(6) / 10.0
    ctr[4] = value
    _write(tmp_path, 6, ctr=codec.Column("float32", ctr))
    ds = reader.make_dataset(SPEC, str(tmp_path), 6, split="train", shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="numeric feature ctr must be a finite number"):
        _read_all(ds)


def test_multi_valued_scenario_is_padded(tmp_path):
    spec = spec_lib.FeatureSpec.from_dict({**SPEC.to_dict(), "scenario": {
        "feature": "scen", "names": ["a", "b", "c"], "multi_valued": True}})
    _write(tmp_path, 3, scen=codec.Column("int64", np.array([[0, 2], [1, 0], [2, 0]]),
                                          lengths=np.array([2, 1, 1])))
    f, _, _ = _read_all(reader.make_dataset(spec, str(tmp_path), 3, split="train",
                                            shuffle=False))
    np.testing.assert_array_equal(f["scen"], [[0, 2, -1], [1, -1, -1], [2, -1, -1]])


def test_seeded_shuffle_is_deterministic_and_complete(tmp_path):
    _write(tmp_path, 300, shards=3)
    order = []
    for _ in range(2):
        f, _, _ = _read_all(reader.make_dataset(SPEC, str(tmp_path), 32, split="train",
                                                seed=5, shuffle_buffer=64, shuffle_block=4))
        order.append(f["uid"])
    np.testing.assert_array_equal(order[0], order[1])
    assert sorted(order[0].tolist()) == list(range(300))
    assert order[0].tolist() != list(range(300))
    exact, _, _ = _read_all(reader.make_dataset(SPEC, str(tmp_path), 32, split="train", seed=5,
                                                shuffle_block=1))
    assert sorted(exact["uid"].tolist()) == list(range(300))


def test_holdout_splits_every_file_the_same_way_whatever_the_order(tmp_path):
    _write(tmp_path, 2000, shards=3)

    def uids(side, **kw):
        f, _, _ = _read_all(reader.make_dataset(SPEC, str(tmp_path), 64, split="train",
                                                holdout=(side, 0.2), **kw))
        return f["uid"].tolist()

    taken, kept = uids("take", shuffle=False), uids("keep", shuffle=False)
    assert sorted(taken + kept) == list(range(2000))          # disjoint and complete
    assert 300 < len(taken) < 500                               # about 20%
    # the split follows the record, not the order, the seed or the shuffle
    assert sorted(uids("take", seed=1, shuffle_block=4)) == sorted(taken)
    assert sorted(uids("keep", seed=9)) == sorted(kept)
    with pytest.raises(ValueError, match="holdout must be"):
        reader.make_dataset(SPEC, str(tmp_path), 64, split="train", holdout=("take", 1.0))
    with pytest.raises(ValueError, match="holdout must be"):
        reader.make_dataset(SPEC, str(tmp_path), 64, split="train", holdout=("skip", 0.1))


def test_repeat_cache_and_drop_remainder(tmp_path):
    _write(tmp_path, 10)
    ds = reader.make_dataset(SPEC, str(tmp_path), 4, split="train", shuffle=False, repeat=2,
                             cache=True, drop_remainder=True)
    sizes = [int(f["uid"].shape[0]) for f, _, _ in ds]
    assert sizes == [4] * 5
    assert ds.element_spec[0]["uid"].shape.as_list() == [4]


def test_missing_directory_and_no_matching_files_name_the_path(tmp_path):
    with pytest.raises(reader.DataError, match=f"{tmp_path}/nope does not exist"):
        reader.make_dataset(SPEC, str(tmp_path / "nope" / "train-*.tfrecord"), 4)
    with pytest.raises(reader.DataError, match=f"no files match {tmp_path}/train-"):
        reader.make_dataset(SPEC, str(tmp_path), 4, split="train")
    with pytest.raises(reader.DataError, match="is a directory; name a split"):
        reader.make_dataset(SPEC, str(tmp_path), 4)


def _corrupt(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_corrupt_record_error_names_the_file(tmp_path):
    _write(tmp_path, 40, shards=2)
    files = reader.resolve_files(str(tmp_path), "train")
    _corrupt(files[1])
    ds = reader.make_dataset(SPEC, files, 8, shuffle=False)
    with pytest.raises(reader.DataError, match=r"train-00001\.tfrecord: corrupt record at index \d+"):
        for _ in reader.iterate(ds, files):
            pass


def test_ignore_errors_skips_and_counts(tmp_path):
    _write(tmp_path, 40, shards=2)
    files = reader.resolve_files(str(tmp_path), "train")
    _corrupt(files[1])
    ds = reader.make_dataset(SPEC, files, 8, shuffle=False, ignore_errors=True)
    f, _, _ = _read_all(ds)
    n = len(f["uid"])
    assert 20 <= n < 40
    assert reader.count_skipped(files, n) == 40 - n


def test_file_sharding_with_input_context(tmp_path):
    _write(tmp_path, 60, shards=4)
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = reader.make_dataset(SPEC, str(tmp_path), 8, split="train", shuffle=False,
                                 input_context=ctx)
        batches = [f["uid"].numpy() for f, _, _ in ds]
        assert max(len(b) for b in batches) == 4  # per-replica batch
        seen.append(np.concatenate(batches))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen).tolist()) == list(range(60))


def test_under_two_replica_mirrored_strategy(tmp_path, two_cpus, mirrored):
    _write(tmp_path, 64, shards=2)
    strategy = mirrored
    assert strategy.num_replicas_in_sync == 2

    def dataset_fn(ctx):
        return reader.make_dataset(SPEC, str(tmp_path), 16, split="train", shuffle=False,
                                   input_context=ctx, drop_remainder=True)

    dist = strategy.distribute_datasets_from_function(dataset_fn)

    @tf.function
    def step(batch):
        def replica_fn(features, labels, weights):
            return tf.reduce_sum(features["uid"]), tf.shape(features["uid"])[0]
        return strategy.run(replica_fn, args=batch)

    total, count = 0, 0
    for batch in dist:
        sums, sizes = step(batch)
        per_replica = strategy.experimental_local_results(sizes)
        assert [int(s) for s in per_replica] == [8, 8]
        total += sum(int(s) for s in strategy.experimental_local_results(sums))
        count += sum(int(s) for s in per_replica)
    assert count == 64 and total == sum(range(64))
    # the auto-sharded path of experimental_distribute_dataset works too
    ds = reader.make_dataset(SPEC, str(tmp_path), 16, split="train", shuffle=False,
                             drop_remainder=True)
    seen = sum(int(tf.reduce_sum([tf.size(x) for x in strategy.experimental_local_results(f["uid"])]))
               for f, _, _ in strategy.experimental_distribute_dataset(ds))
    assert seen == 64


def test_writer_is_atomic_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with tfrecord.ShardedWriter(str(tmp_path), "train", 5) as w:
            w.write([b"x"] * 7)
            raise RuntimeError("boom")
    # the first shard was complete and renamed; the partial second is gone
    assert sorted(os.listdir(tmp_path)) == ["train-00000.tfrecord"]


def test_default_shuffle_mixes_a_shard_sorted_by_user(tmp_path):
    # one shard of 40,000 records sorted by uid, like a log exported by user
    n = 40_000
    _write(tmp_path, n)
    first = lambda **kw: next(iter(reader.make_dataset(  # noqa: E731
        SPEC, str(tmp_path), 1024, split="train", seed=0, **kw)))[0]["uid"].numpy()
    uids = first()
    # the first batch already holds users from across the whole id range (in blocks of
    # 32 consecutive records, so 32 draws: the share is 0.5 +- 0.09)
    assert 0.25 < (uids >= n // 2).mean() < 0.75
    assert set(uids * 4 // n) == {0, 1, 2, 3}  # every quarter of the ids
    # with the old 10,000-record buffer alone it is a window over the first ids
    assert first(shuffle_floor=0).max() < n // 3
    # a manifest that records the rows as written in random order is trusted: no
    # bigger buffer (and no time filling it) for shards that would not mix better
    manifest = tfrecord.read_manifest(str(tmp_path))
    tfrecord.write_manifest(str(tmp_path), {"train": manifest["splits"]["train"]["shards"]},
                            extra={"row_order": {"train": "random"}})
    assert tfrecord.in_random_order(reader.resolve_files(str(tmp_path), "train"))
    assert first().max() < n // 3
    tfrecord.write_manifest(str(tmp_path), {"train": manifest["splits"]["train"]["shards"]},
                            extra={"row_order": {"train": "by_user"}})
    assert first().max() > n - n // 10
    with pytest.raises(ValueError, match="shuffle_floor must be >= 0, got -1"):
        reader.make_dataset(SPEC, str(tmp_path), 4, split="train", shuffle_floor=-1)
    with pytest.raises(ValueError, match="shuffle_buffer must be positive, got 0"):
        reader.make_dataset(SPEC, str(tmp_path), 4, split="train", shuffle_buffer=0)
