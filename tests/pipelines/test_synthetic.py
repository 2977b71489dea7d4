import filecmp
import json
import os

import numpy as np
import pytest

from tfmdl import metrics
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.pipelines import synthetic


def _cfg(**kw):
    base = dict(preset="feed", train=2500, eval=1500, seed=3, users=1500, items=800,
                chunk_size=1000, records_per_shard=1200, calibration_rows=4000)
    base.update(kw)
    return synthetic.SynthConfig(**base)


def _files(d):
    return sorted(f for f in os.listdir(d))


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = (str(tmp_path / x) for x in "abc")
    synthetic.generate(_cfg(), a, workers=1)
    synthetic.generate(_cfg(), b, workers=1)
    synthetic.generate(_cfg(seed=4), c, workers=1)
    assert _files(a) == _files(b) == ["eval-00000.tfrecord", "eval-00001.tfrecord",
                                      "manifest.json", "oracle.json", "spec.yaml",
                                      "train-00000.tfrecord", "train-00001.tfrecord",
                                      "train-00002.tfrecord"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(os.path.join(a, "train-00000.tfrecord"),
                           os.path.join(c, "train-00000.tfrecord"), shallow=False)


def test_worker_processes_write_the_same_bytes(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    synthetic.generate(_cfg(train=4000), a, workers=1)
    synthetic.generate(_cfg(train=4000), b, workers=2)
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert not mismatch and not errors


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["feed", "search"])
def test_calibrated_rates_hit_targets(tmp_path, preset):
    cfg = _cfg(preset=preset, train=200_000, eval=0, users=3000, items=2000,
               calibration_rows=100_000, chunk_size=8192, records_per_shard=100_000)
    result = synthetic.generate(cfg, str(tmp_path), workers=1)
    rates = result.oracle["train_positive_rates"]
    for scen, per_task in rates.items():
        share = dict(zip(cfg.scenario_names, cfg.traffic))[scen]
        for task, r in per_task.items():
            # the calibrated expectation is tight; observed labels only where
            # the expected number of positives makes +-10% a >3-sigma band
            assert abs(r["mean_true_prob"] / r["target"] - 1) < 0.10, (scen, task, r)
            expected_pos = r["target"] * cfg.train * share
            if expected_pos > 2000:
                assert abs(r["label_rate"] / r["target"] - 1) < 0.10, (scen, task, r)


def test_oracle_matches_the_written_true_probabilities(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    with open(os.path.join(feed_dir, "oracle.json")) as fh:
        oracle = json.load(fh)
    ds = reader.make_dataset(spec, feed_dir, 512, split="eval", shuffle=False,
                             include_passthrough=True)
    probs, labels, scen, users = [], [], [], []
    for f, l, w in ds:
        probs.append(np.stack([f[f"true_{t}"].numpy() for t in spec.task_names], 1))
        labels.append(np.stack([l[t].numpy() for t in spec.task_names], 1))
        scen.append(f["scenario_id"].numpy())
        users.append(f["user_id"].numpy())
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    scen, users = np.concatenate(scen), np.concatenate(users)
    assert len(scen) == 2000
    table = metrics.slice_table(labels, probs, scen, spec.task_names,
                                list(spec.scenario.names), user_ids=users)
    for slice_name, per_task in oracle["oracle"].items():
        for task, values in per_task.items():
            for metric in ("auc", "gauc"):
                stored = values[metric]  # null where a slice has one class
                want = table[slice_name][task][metric]
                assert (stored is None and np.isnan(want)) or stored == pytest.approx(want, abs=1e-6)
    like = oracle["oracle"]["overall"]["like"]["auc"]
    finish = oracle["oracle"]["overall"]["finish"]["auc"]
    assert 0.65 < finish < 0.95 and 0.6 < like < 0.97
    overlap = oracle["overlap"]
    assert 0.6 < overlap["user"]["featured"] < 0.9 and 0.15 < overlap["item"]["nearby"] < 0.45


def test_search_preset_has_requests_sharing_a_query_id(search_dir):
    spec = spec_lib.load_spec(search_dir)
    assert spec.query_key == "query_id" and spec.scenario.count == 3
    with open(os.path.join(search_dir, "oracle.json")) as fh:
        oracle = json.load(fh)
    assert "qauc" in oracle["oracle"]["overall"]["click"]
    ds = reader.make_dataset(spec, search_dir, 4000, split="train", shuffle=False,
                             include_passthrough=True)
    f, _, _ = next(iter(ds))
    q = f["query_id"].numpy()
    _, sizes = np.unique(q, return_counts=True)
    assert 8 <= sizes.mean() <= 12
    # a request's candidates share user and scenario
    for key in ("user_id", "scenario_id", "query_category"):
        v = f[key].numpy()
        assert all(len(set(v[q == qq])) == 1 for qq in np.unique(q)[:50]), key
    shares = np.bincount(f["scenario_id"].numpy(), minlength=3) / len(q)
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.05)


def test_multi_scenario_fraction_makes_multi_hot_instances(tmp_path):
    synthetic.generate(_cfg(multi_scenario_fraction=0.3, eval=0), str(tmp_path), workers=1)
    spec = spec_lib.load_spec(str(tmp_path))
    assert spec.scenario.multi_valued
    f, _, _ = next(iter(reader.make_dataset(spec, str(tmp_path), 2500, split="train",
                                            shuffle=False)))
    ids = f["scenario_id"].numpy()
    assert ids.shape == (2500, 2)
    two = (ids >= 0).sum(1) == 2
    assert 0.25 < two.mean() < 0.35
    assert (ids[two, 0] != ids[two, 1]).all()


def test_spec_is_valid_and_references_real_features(feed_dir):
    spec = spec_lib.load_spec(feed_dir)
    assert spec.task_names == ["like", "follow", "comment", "dislike", "headslideleft", "finish"]
    assert set(spec.semantic_groups) >= {"user", "item", "context", "sequence"}
    assert spec.feature_sets.extra_embedding == ("user_id", "item_id")
    assert set(spec.feature_sets.scenario_prior) == {"featured", "nearby", "global"}


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="preset must be one of feed, search"):
        synthetic.SynthConfig(preset="ads")
    with pytest.raises(ValueError, match="user_overlap=1.5"):
        synthetic.SynthConfig(user_overlap=1.5)


def _train_records(d):
    """Raw train records in shard order."""
    import tensorflow as tf

    files = [os.path.join(d, f) for f in _files(d) if f.startswith("train-")]
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def _field(records, name):
    import tensorflow as tf

    return np.array([tf.train.Example.FromString(r).features.feature[name].int64_list.value[0]
                     for r in records])


def test_sorted_row_orders_write_the_same_rows_sorted(tmp_path):
    dirs = {o: str(tmp_path / o) for o in synthetic.ROW_ORDERS}
    for order, d in dirs.items():
        synthetic.generate(_cfg(row_order=order), d, workers=1)
    shuffled = _train_records(dirs["shuffled"])
    assert json.load(open(os.path.join(dirs["shuffled"], "manifest.json")))["row_order"] == {
        "train": "random", "eval": "random"}
    users = _field(shuffled, "user_id")
    # generation order is already random across users
    ranks = np.argsort(np.argsort(users, kind="stable"))
    assert abs(np.corrcoef(ranks, np.arange(len(users)))[0, 1]) < 0.1
    for order, key in (("by_user", "user_id"), ("by_time", "hour")):
        records = _train_records(dirs[order])
        assert sorted(records) == sorted(shuffled), order  # the same multiset of rows
        values = _field(records, key)
        assert (np.diff(values) >= 0).all(), order     # sorted within and across shards
        assert _files(dirs[order]) == _files(dirs["shuffled"])
        for f in _files(dirs["shuffled"]):
            if f.startswith("eval-"):
                assert filecmp.cmp(os.path.join(dirs[order], f),
                                   os.path.join(dirs["shuffled"], f), shallow=False)
        oracles = [json.load(open(os.path.join(dirs[o], "oracle.json"))) for o in
                   ("shuffled", order)]
        for o in oracles:
            del o["config"]["row_order"]
        assert oracles[0] == oracles[1], order
        assert json.load(open(os.path.join(dirs[order], "manifest.json")))["row_order"] == {
            "train": order, "eval": "random"}
    with pytest.raises(ValueError, match="row_order must be one of shuffled, by_user"):
        _cfg(row_order="random")
    with pytest.raises(ValueError, match="at most 2,000,000 train rows"):
        _cfg(row_order="by_user", train=2_000_001)


def test_manifest_label_counts_match_the_written_labels(tmp_path):
    synthetic.generate(_cfg(multi_scenario_fraction=0.3), str(tmp_path), workers=1)
    spec = spec_lib.load_spec(str(tmp_path))
    with open(os.path.join(str(tmp_path), "manifest.json")) as fh:
        recorded = json.load(fh)["label_counts"]
    for split, rows in (("train", 2500), ("eval", 1500)):
        f, l, w = next(iter(reader.make_dataset(spec, str(tmp_path), 10_000, split=split,
                                                shuffle=False)))
        ids = f["scenario_id"].numpy()
        member = np.stack([(ids == s).any(axis=1) for s in range(spec.scenario.count)], 1)
        body = recorded[split]
        assert body["rows"] == rows
        for t in spec.task_names:
            y, present = l[t].numpy(), w[t].numpy() > 0
            assert present.all()  # synthetic labels are never missing
            assert body["tasks"][t] == {"positives": int((y == 1).sum()),
                                        "negatives": int((y == 0).sum())}, (split, t)
            for i, s in enumerate(spec.scenario.names):
                assert body["cells"][s][t] == {
                    "positives": int(((y == 1) & member[:, i]).sum()),
                    "negatives": int(((y == 0) & member[:, i]).sum())}, (split, s, t)
