"""tfmdl.evaluation: predict / evaluate / compare and the evaluate / compare CLI."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmdl import evaluation
from tfmdl import metrics
from tfmdl import models
from tfmdl.models import experiment
from tfmdl.pipelines import label_stats
from tfmdl.pipelines import reader
from tfmdl.pipelines import spec as spec_lib
from tfmdl.training import model_dir

FEED_PARAMS = {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1}  # 6 semantic groups
SEARCH_PARAMS = {"layers": 1, "width": 56, "heads": 4, "ffn_mult": 1}  # 7 semantic groups
TFMDL = [sys.executable, "-m", "tfmdl.cli.main"]


def _make_model_dir(out, data_dir, params, train=True):
    """Builds an MDL model, fits it one epoch (unless ``train`` is False) and writes
    a model directory as ``tfmdl train`` would. Returns (out, built, spec)."""
    spec = spec_lib.load_spec(data_dir)
    keras.utils.set_random_seed(0 if train else 1)
    built = models.build("mdl", spec, params)
    if train:
        built.model.compile(optimizer=keras.optimizers.Adam(3e-3),
                            loss={t: "binary_crossentropy" for t in spec.task_names})
        ds = reader.make_dataset(spec, data_dir, 256, split="train", seed=0)
        ds = ds.map(lambda f, l, w: (f, {k: v[:, None] for k, v in l.items()},
                                     {k: v[:, None] for k, v in w.items()}))
        built.model.fit(ds, epochs=1, verbose=0)
    model_dir.write_config_and_spec(out, experiment.load_config({"model": "mdl",
                                                                 "params": params}), spec)
    model_dir.save_final_weights(out, built.model)
    return out, built, spec


@pytest.fixture(scope="module")
def feed_model(tmp_path_factory, feed_dir):
    return _make_model_dir(str(tmp_path_factory.mktemp("feed_model")), feed_dir, FEED_PARAMS)


@pytest.fixture(scope="module")
def feed_untrained(tmp_path_factory, feed_dir):
    return _make_model_dir(str(tmp_path_factory.mktemp("feed_untrained")), feed_dir,
                           FEED_PARAMS, train=False)


@pytest.fixture(scope="module")
def search_model(tmp_path_factory, search_dir):
    return _make_model_dir(str(tmp_path_factory.mktemp("search_model")), search_dir,
                           SEARCH_PARAMS)


def _no_nan_json(path):
    def reject(token):
        raise AssertionError(f"{path} contains {token}")
    with open(path) as fh:
        return json.load(fh, parse_constant=reject)


# --------------------------------------------------------------------------- #
# predict
# --------------------------------------------------------------------------- #
def test_load_trained_predicts_like_the_in_memory_model(feed_model, feed_dir):
    out, built, spec = feed_model
    mem = evaluation.predict(built, spec, feed_dir, batch_size=512)
    loaded, _ = model_dir.load_trained(out)
    disk = evaluation.predict(loaded, loaded.spec, feed_dir, batch_size=700)
    assert mem.num_rows == disk.num_rows == 2000
    assert mem.preds.shape == (2000, len(spec.task_names))
    np.testing.assert_allclose(mem.preds, disk.preds, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mem.labels, disk.labels)
    np.testing.assert_array_equal(mem.user_ids, disk.user_ids)
    assert mem.query_ids is None and mem.task_names == spec.task_names
    # single-valued scenario ids become one-hot rows
    assert mem.scenarios.shape == (2000, 2) and (mem.scenarios.sum(axis=1) == 1).all()
    assert set(np.unique(mem.labels)) <= {0.0, 1.0}
    # the predictions are the model's own outputs, in file order
    f, _, _ = next(iter(reader.make_dataset(spec, feed_dir, 16, split="eval", shuffle=False)))
    direct = built.model({k: f[k] for k in ["scenario_id"] + spec.feature_names})
    np.testing.assert_allclose(mem.preds[:16, spec.task_names.index("finish")],
                               direct["finish"].numpy()[:, 0], rtol=1e-5, atol=1e-6)


def test_missing_labels_read_as_minus_one(feed_model, feed_dir, tmp_path):
    _, built, spec = feed_model
    shard = sorted(f for f in os.listdir(feed_dir) if f.startswith("eval-"))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(feed_dir, shard)).take(40)]
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(feed_dir, "spec.yaml"), data / "spec.yaml")
    with tf.io.TFRecordWriter(str(data / "eval-00000.tfrecord")) as w:
        for i, raw in enumerate(records):
            ex = tf.train.Example.FromString(raw)
            if i % 4 == 0:
                del ex.features.feature["label_finish"]
            if i % 4 == 1:
                ex.features.feature["label_like"].int64_list.value[:] = [-1]
            w.write(ex.SerializeToString())
    p = evaluation.predict(built, spec, str(data))
    k_finish, k_like = spec.task_names.index("finish"), spec.task_names.index("like")
    assert (p.labels[0::4, k_finish] == -1).all() and (p.labels[1::4, k_finish] >= 0).all()
    assert (p.labels[1::4, k_like] == -1).all() and (p.labels[0::4, k_like] >= 0).all()
    table = metrics.slice_table(p.labels, p.preds, p.scenarios, p.task_names,
                                p.scenario_names, metrics=("count",))
    assert table["overall"]["finish"]["count"] == 30


def test_multi_valued_scenarios_become_multi_hot():
    ids = np.array([[0, 2, -1], [1, -1, -1], [2, 1, 0]])
    np.testing.assert_array_equal(label_stats.multi_hot(ids, 3),
                                  [[1, 0, 1], [0, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(label_stats.multi_hot(np.array([1, 0]), 2), [[0, 1], [1, 0]])


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #
def test_evaluate_writes_reports_that_match_recomputed_metrics(feed_model, feed_dir):
    out, built, spec = feed_model
    report = evaluation.evaluate(out, feed_dir, batch_size=1024)
    on_disk = _no_nan_json(os.path.join(out, "eval.json"))
    assert on_disk == json.loads(json.dumps(report))
    assert report["rows"] == 2000 and report["scenarios"] == ["featured", "nearby"]
    assert list(report["metrics"]) == ["featured", "nearby", "overall"]

    p = evaluation.predict(built, spec, feed_dir)
    expected = metrics.slice_table(p.labels, p.preds, p.scenarios, p.task_names,
                                   p.scenario_names, user_ids=p.user_ids)
    for slice_name, per_task in expected.items():
        for task, values in per_task.items():
            got = report["metrics"][slice_name][task]
            assert "qauc" not in got  # feed has no query key
            for metric in ("auc", "gauc", "logloss", "calibration", "pos_rate", "count"):
                want = values[metric]
                if isinstance(want, float) and math.isnan(want):
                    assert got[metric] is None
                else:
                    assert got[metric] == pytest.approx(want, rel=1e-5, abs=1e-6)
    # a task with almost no positives has undefined AUC cells, written as null
    assert any(v["auc"] is None for per_task in report["metrics"].values()
               for v in per_task.values())

    # the oracle of the data set and the share of its gap the model closes
    oracle = json.load(open(os.path.join(feed_dir, "oracle.json")))["oracle"]
    assert report["oracle"] == oracle
    model_auc = report["metrics"]["overall"]["finish"]["auc"]
    oracle_auc = oracle["overall"]["finish"]["auc"]
    assert report["oracle_gap_closed"]["overall"]["finish"]["auc"] == pytest.approx(
        (model_auc - 0.5) / (oracle_auc - 0.5) * 100)

    md = open(os.path.join(out, "eval.md")).read()
    assert md == evaluation.format_report_markdown(report)
    for heading in ("## AUC", "## GAUC", "## Log loss", "## Calibration"):
        assert heading in md
    assert "## QAUC" not in md
    assert "| overall (oracle) |" in md and "| overall (% of oracle gap closed) |" in md
    assert f"{model_auc:.4f}" in md and f"{oracle_auc:.4f}" in md
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_evaluate_search_has_qauc(search_model, search_dir):
    out, _, _ = search_model
    report = evaluation.evaluate(out, search_dir)
    assert report["query_key"] == "query_id"
    overall = report["metrics"]["overall"]["click"]
    assert overall["qauc"] is not None and overall["gauc"] is not None
    assert report["oracle_gap_closed"]["overall"]["click"]["qauc"] is not None
    md = open(os.path.join(out, "eval.md")).read()
    assert "## QAUC" in md and "| slice (qauc) | click | like | favorite |" in md
    assert md.count("| main (oracle) |") == 4  # AUC, GAUC, QAUC, log loss


def test_evaluate_train_split_leaves_out_the_eval_oracle(search_model, search_dir):
    out, _, _ = search_model
    report = evaluation.evaluate(out, search_dir, split="train")
    assert report["rows"] == 4000 and "oracle" not in report
    assert "scores the eval split" in report["oracle_note"]


def test_evaluate_errors_name_the_path(feed_model, feed_dir, tmp_path):
    out, _, _ = feed_model
    with pytest.raises(model_dir.ModelDirError, match=f"{tmp_path}/nope does not exist"):
        evaluation.evaluate(str(tmp_path / "nope"), feed_dir)
    with pytest.raises(reader.DataError, match=f"data directory {tmp_path}/nodata does not"):
        evaluation.evaluate(out, str(tmp_path / "nodata"))
    with pytest.raises(reader.DataError, match=f"no files match {feed_dir}/test-"):
        evaluation.evaluate(out, feed_dir, split="test")


def test_a_shard_cut_at_a_record_boundary_is_an_error(feed_model, feed_dir, tmp_path):
    """Issue 23 item 4: 700 of 2,000 rows read without a corrupt-record error used
    to be evaluated next to an oracle computed on all of them."""
    out, _, _ = feed_model
    data = tmp_path / "data"
    shutil.copytree(feed_dir, data)
    shard = sorted(f for f in os.listdir(data) if f.startswith("eval-"))[0]
    path = str(data / shard)
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with tf.io.TFRecordWriter(path) as w:        # the same file, cut after 700 records
        for r in records[:700]:
            w.write(r)
    expected = sum(1 for f in os.listdir(feed_dir) if f.startswith("eval-")
                   for _ in tf.data.TFRecordDataset(os.path.join(feed_dir, f)))
    with pytest.raises(reader.DataError,
                       match=rf"read {expected - len(records) + 700} rows .* but manifest\.json "
                             rf"lists {expected}: a shard was truncated"):
        evaluation.evaluate(out, str(data))
    assert not os.path.exists(os.path.join(out, "eval.json")) or \
        json.load(open(os.path.join(out, "eval.json")))["rows"] == expected


# --------------------------------------------------------------------------- #
# compare
# --------------------------------------------------------------------------- #
def test_compare_with_itself_has_zero_delta(feed_model, feed_dir):
    out, _, spec = feed_model
    result = evaluation.compare(out, out, feed_dir, n_boot=50)
    assert result["resampled"] == "users (user_id)"
    assert list(result["table"]) == ["featured", "nearby", "overall"]
    cell = result["table"]["overall"]["finish"]
    assert cell["delta"] == 0 and cell["low"] == 0 and cell["high"] == 0
    assert cell["p_value"] == 1.0 and cell["auc_a"] == cell["auc_b"]
    json.dumps(result, allow_nan=False)
    md = evaluation.format_compare_markdown(result)
    assert "| overall | finish |" in md and "[+0.0000, +0.0000]" in md


def test_compare_trained_beats_untrained(feed_model, feed_untrained, feed_dir):
    result = evaluation.compare(feed_model[0], feed_untrained[0], feed_dir, n_boot=200)
    cell = result["table"]["overall"]["finish"]
    assert cell["auc_a"] > cell["auc_b"]
    assert cell["delta"] > 0 and 0 < cell["low"] <= cell["delta"] <= cell["high"]
    assert cell["p_value"] < 0.05 and cell["count"] == 2000
    p = evaluation.predict(feed_model[1], feed_model[2], feed_dir)
    assert cell["positives"] == int(p.labels[:, p.task_names.index("finish")].sum())
    report = evaluation.evaluate(feed_model[0], feed_dir)
    assert cell["auc_a"] == pytest.approx(report["metrics"]["overall"]["finish"]["auc"])


def test_compare_search_resamples_queries(search_model, search_dir):
    result = evaluation.compare(search_model[0], search_model[0], search_dir, n_boot=20)
    assert result["resampled"] == "queries (query_id)"
    assert list(result["table"]) == ["main", "video", "lite", "overall"]


def test_compare_refuses_models_with_other_tasks(feed_model, search_model, feed_dir):
    with pytest.raises(evaluation.EvaluationError) as err:
        evaluation.compare(feed_model[0], search_model[0], feed_dir, n_boot=10)
    msg = str(err.value)
    assert "tasks:" in msg and "scenarios:" in msg
    assert feed_model[0] in msg and search_model[0] in msg and "'finish'" in msg


def test_evaluate_refuses_data_with_other_scenarios(feed_model, search_dir):
    with pytest.raises(evaluation.EvaluationError, match=f"{search_dir}/spec.yaml has scenarios"):
        evaluation.evaluate(feed_model[0], search_dir)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def _run(*args):
    return subprocess.run(TFMDL + list(args), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


@pytest.mark.slow
def test_cli_evaluate_and_compare(feed_model, feed_dir, tmp_path):
    out = _run("evaluate", f"--model_dir={feed_model[0]}", f"--data={feed_dir}",
               "--batch_size=1000")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "## AUC" in out.stdout and "| overall (oracle) |" in out.stdout
    assert out.stdout == open(os.path.join(feed_model[0], "eval.md")).read()
    json_out = str(tmp_path / "cmp.json")
    out = _run("compare", f"--a={feed_model[0]}", f"--b={feed_model[0]}",
               f"--data={feed_dir}", "--n_boot=20", f"--out={json_out}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| overall | finish |" in out.stdout
    assert _no_nan_json(json_out)["table"]["overall"]["finish"]["delta"] == 0


@pytest.mark.slow
def test_cli_errors_name_paths(feed_model, feed_dir, tmp_path):
    missing = str(tmp_path / "missing_model")
    out = _run("evaluate", f"--model_dir={missing}", f"--data={feed_dir}")
    assert out.returncode == 2 and missing in out.stderr and "Traceback" not in out.stderr

    out = _run("evaluate", f"--model_dir={feed_model[0]}", f"--data={tmp_path}/nodata")
    assert out.returncode == 2 and f"data directory {tmp_path}/nodata" in out.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run("evaluate", f"--model_dir={feed_model[0]}", f"--data={empty}")
    assert out.returncode == 2 and f"no files match {empty}/eval-" in out.stderr

    incomplete = tmp_path / "incomplete"
    shutil.copytree(feed_model[0], incomplete)
    shutil.rmtree(incomplete / "weights")
    out = _run("compare", f"--a={feed_model[0]}", f"--b={incomplete}", f"--data={feed_dir}")
    assert out.returncode == 2 and f"{incomplete}/weights/final.index is missing" in out.stderr


def test_head_health_flags_measurable_cells_only():
    from tfmdl import evaluation as ev  # pylint: disable=g-import-not-at-top

    def cell(auc, cal, count, rate):
        return {"auc": auc, "calibration": cal, "count": count, "pos_rate": rate}

    table = {"a": {"ok": cell(0.7, 1.1, 10000, 0.02),          # 200 positives, healthy
                   "dead": cell(0.41, 1e-7, 10000, 0.02),      # the collapse
                   "hot": cell(0.8, 2.5, 10000, 0.02),
                   # 200 positives: the 95% half-width is about 0.04, so 0.53 is noise
                   "noise": cell(0.53, 1.0, 10000, 0.02),
                   "rare": cell(0.3, 0.0, 10000, 0.005)},      # 50 positives: not judged
             "overall": {"ok": cell(0.2, 9.0, 20000, 0.02)}}   # pooled slice: skipped
    health = ev.head_health(table)
    assert health["checked"] == 4
    bad = {c["task"]: c["why"] for c in health["unhealthy"]}
    assert set(bad) == {"dead", "hot", "noise"}
    assert "AUC 0.41 does not clear 0.5" in bad["dead"]
    assert "calibration 1e-07 outside" in bad["dead"]
    assert "calibration" not in bad["noise"] and "half-width 0.04" in bad["noise"]
    assert health["too_few_positives"] == [{"slice": "a", "task": "rare", "positives": 50}]
    text = "\n".join(ev.format_health_markdown(health))
    assert "3 of 4 cells with at least 100 positives look broken" in text
    assert "a / rare (50)" in text
    healthy = ev.head_health({"a": {"ok": table["a"]["ok"]}})
    assert "All 1 cells" in "\n".join(ev.format_health_markdown(healthy))
