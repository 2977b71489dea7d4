"""Client helpers (REST body, Example and PredictRequest builders) and the
`tfmdl predict` / `tfmdl benchmark serve` commands."""

import base64
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmdl.serving import client

from tests.serving.conftest import MODEL_NAME


def _as_dict(spec, record: bytes) -> dict:
    """The raw feature values of a serialized Example, as a request would give them."""
    ex = tf.train.Example()
    ex.ParseFromString(record)
    out = {}
    for name in [spec.scenario.feature] + spec.feature_names:
        if name not in ex.features.feature:
            continue
        feature = ex.features.feature[name]
        values = list(getattr(feature, feature.WhichOneof("kind")).value)
        is_list = name != spec.scenario.feature and spec.feature(name).type == "sequence"
        out[name] = values if is_list else values[0]
    return out


def test_rest_request_body(eval_records):
    body = client.rest_request_body(eval_records[:3])
    json.dumps(body)
    assert body["signature_name"] == "serving_default"
    assert [base64.b64decode(i["examples"]["b64"]) for i in body["instances"]] == \
        eval_records[:3]
    ex = tf.train.Example()
    ex.ParseFromString(eval_records[0])
    assert client.rest_request_body([ex], "predict_raw")["signature_name"] == "predict_raw"


def test_example_from_dict_round_trips(feed_spec, eval_records, loaded):
    dicts = [_as_dict(feed_spec, r) for r in eval_records[:16]]
    assert isinstance(dicts[0]["hist_items"], list) and isinstance(dicts[0]["user_id"], int)
    rebuilt = [client.example_from_dict(feed_spec, d).SerializeToString() for d in dicts]
    serve = loaded.signatures["serving_default"]
    want = serve(examples=tf.constant(eval_records[:16]))
    got = serve(examples=tf.constant(rebuilt))
    for task in feed_spec.task_names:
        np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), atol=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"user_idd": 3}, r"'user_idd' is not an input.*Did you mean 'user_id'"),
    ({"label_like": 1}, "'label_like' is not an input"),
    ({"user_id": "17"}, "feature user_id: expected an int64 id, got str"),
    ({"user_id": 1.5}, "feature user_id: expected an int64 id, got float"),
    ({"user_id": True}, "feature user_id: expected an int64 id, got bool"),
    ({"user_id": [1, 2]}, "feature user_id: expected one int64 value, got a list"),
    ({"user_activity": "high"}, "feature user_activity: expected a finite number"),
    ({"user_activity": float("nan")}, "feature user_activity: expected a finite number"),
    ({"hist_items": 5}, "feature hist_items: expected a list of int64 values"),
    ({"hist_items": [1, "x"]}, "feature hist_items: expected an int64 id, got str"),
    ({"scenario_id": 2}, r"scenario feature scenario_id must hold ids in \[0, 2\)"),
    ({"item_id": None}, "feature item_id is required"),
])
def test_example_from_dict_names_bad_features(feed_spec, eval_records, change, message):
    features = dict(_as_dict(feed_spec, eval_records[0]), **change)   # None = left out
    with pytest.raises(client.RequestError, match=message):
        client.example_from_dict(feed_spec, features)


def test_example_from_dict_fills_nothing_it_is_not_given(feed_spec, eval_records):
    features = _as_dict(feed_spec, eval_records[0])
    for name in ("user_age", "hist_items", "user_activity"):      # defaults / sequences
        features.pop(name)
    ex = client.example_from_dict(feed_spec, features)
    assert "user_age" not in ex.features.feature and "hist_items" not in ex.features.feature


@pytest.mark.parametrize("signature", ["serving_default", "predict_raw"])
def test_grpc_requests_run_on_the_saved_model(feed_spec, eval_records, loaded, signature):
    dicts = [_as_dict(feed_spec, r) for r in eval_records[:5]]
    request = client.grpc_predict_request(feed_spec, MODEL_NAME, dicts, signature,
                                          version=1)
    assert request.model_spec.name == MODEL_NAME
    assert request.model_spec.signature_name == signature
    assert request.model_spec.version.value == 1
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    got = loaded.signatures[signature](**inputs)
    want = loaded.signatures["serving_default"](examples=tf.constant(eval_records[:5]))
    for task in feed_spec.task_names:
        np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), atol=1e-6)
    with pytest.raises(client.RequestError, match="unknown signature 'predict_rwa'"):
        client.grpc_predict_request(feed_spec, MODEL_NAME, dicts, "predict_rwa")


def _run(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "tfmdl.cli.main"] + list(args),
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}")
    return out


def _scores(stdout):
    rows = list(csv.reader(stdout.strip().splitlines()))
    return rows[0], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


@pytest.mark.slow
def test_predict_command_on_tfrecord_and_csv(tmp_path, exported, feed_dir, feed_spec,
                                             eval_records, loaded):
    shard = os.path.join(feed_dir, "eval-00000.tfrecord")
    header, from_tfrecord = _scores(_run("predict", f"--export_dir={exported.path}",
                                         f"--input={shard}", "--limit=5").stdout)
    assert header == ["row"] + feed_spec.task_names and from_tfrecord.shape == (5, 6)
    want = loaded.signatures["serving_default"](examples=tf.constant(eval_records[:5]))
    np.testing.assert_allclose(from_tfrecord[:, 0], want["like"].numpy(), atol=1e-6)

    # the same examples as CSV: `|`-separated sequences, no label or passthrough columns
    columns = [feed_spec.scenario.feature] + feed_spec.feature_names
    path = tmp_path / "requests.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for record in eval_records[:5]:
            d = _as_dict(feed_spec, record)
            writer.writerow(["|".join(map(str, d[c])) if isinstance(d.get(c), list)
                             else repr(d[c]) if c in d else "" for c in columns])
    # E/NAME stands for its latest version
    _, from_csv = _scores(_run("predict", f"--export_dir={os.path.dirname(exported.path)}",
                               f"--input={path}").stdout)
    np.testing.assert_allclose(from_csv, from_tfrecord, atol=1e-6)

    out = _run("predict", f"--export_dir={tmp_path}", f"--input={shard}", check=False)
    assert out.returncode == 2 and "holds no SavedModel" in out.stderr

    # issue 23 item 10: a corrupt file is named with its record, a record that is not an
    # Example (non-UTF-8 bytes) is named by its row; both one line, exit 2
    records = open(shard, "rb").read()
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(records[:len(records) // 2] + b"\xff" * 64)
    out = _run("predict", f"--export_dir={exported.path}", f"--input={cut}", check=False)
    assert out.returncode == 2 and f"{cut}: corrupt record at index" in out.stderr, out.stderr
    garbage = tmp_path / "garbage.tfrecord"
    with tf.io.TFRecordWriter(str(garbage)) as w:
        w.write(eval_records[0])
        w.write(b"\xff\xfe not an Example \x80")
    out = _run("predict", f"--export_dir={exported.path}", f"--input={garbage}", check=False)
    assert out.returncode == 2 and f"{garbage}: row 1 is not a serialized tf.train.Example" \
        in out.stderr, out.stderr


@pytest.mark.slow
def test_export_and_benchmark_commands(tmp_path, trained_model_dir, feed_dir, exported):
    usage = _run("--help").stdout
    assert "export" in usage and "predict" in usage and "benchmark serve" in usage
    out = _run("export", f"--model_dir={trained_model_dir}", f"--export_base={tmp_path}",
               f"--model_name={MODEL_NAME}", "--nowarmup")
    assert f"{tmp_path}/{MODEL_NAME}/1 (model {MODEL_NAME}, version 1)" in out.stdout
    again = _run("export", f"--model_dir={trained_model_dir}", f"--export_base={tmp_path}",
                 f"--model_name={MODEL_NAME}", "--nowarmup", "--version=1", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr

    out = _run("benchmark", "serve", f"--export_dir={exported.path}", f"--data={feed_dir}",
               "--batch_sizes=1,16", "--calls=4", "--warmup=1", "--rounds=2")
    assert "machine: " in out.stdout and "batch   16: p50" in out.stdout
    assert "ratio signature / Keras: " in out.stdout
