"""Train from s3:// and export to s3:// against a local S3-compatible server.

moto's server runs in a thread of this process on 127.0.0.1; the test talks to it
with boto3. Everything that uses tensorflow-io's S3 client runs as `tfmdl`
subprocesses: that client aborts at interpreter exit ("pure virtual method
called"), which `tfmdl.cli.main` sidesteps, so their exit codes are checked too.
"""

import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.io import parquet_data
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import spec as spec_lib

pytestmark = pytest.mark.io

BUCKET = "tfmdl-test"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """(boto3 client, environment for tensorflow-io's S3 client) of a fresh server."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", S3_ENDPOINT=endpoint, S3_VERIFY_SSL="0",
               TF_CPP_MIN_LOG_LEVEL="2")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield client, env
    server.stop()


def _upload(client, local_dir: str, prefix: str) -> None:
    for name in sorted(os.listdir(local_dir)):
        path = os.path.join(local_dir, name)
        if os.path.isfile(path):
            client.upload_file(path, BUCKET, f"{prefix}/{name}")


def _keys(client, prefix: str):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))


def _tfmdl(env, *args):
    out = subprocess.run([sys.executable, "-m", "tfmdl.cli.main"] + list(args),
                         capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


def _as_parquet(feed_dir: str, out_dir: str) -> None:
    spec = spec_lib.load_spec(feed_dir)
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(os.path.join(feed_dir, f"{split}-*.tfrecord"))
        parquet_data.write(out_dir, [parquet_data.tfrecord_to_table(spec, files)], spec=spec,
                           split=split, row_group_size=1000)


def test_train_export_predict_on_s3(s3, feed_dir, tmp_path):
    client, env = s3
    _upload(client, feed_dir, "feed")
    _as_parquet(feed_dir, str(tmp_path / "feed-parquet"))
    _upload(client, str(tmp_path / "feed-parquet"), "feed-parquet")
    data_pq, data_tf = f"s3://{BUCKET}/feed-parquet", f"s3://{BUCKET}/feed"
    model = f"s3://{BUCKET}/models/dnn"

    out = _tfmdl(env, "train", f"--config={ROOT}/configs/dnn_feed.yaml", f"--data={data_pq}",
                 f"--model_dir={model}", "--steps=24", "--jit_compile=off", "--verbose=0",
                 "--set", "training.batch_size=256", "--set", "training.backup_every_steps=8",
                 "--set", "training.checkpoint_every_steps=12", "--set", "params.hidden=[32]")
    assert f"training dnn on {data_pq} -> {model}" in out and "done in" in out
    keys = _keys(client, "models/dnn/")
    for expected in ("config.yaml", "spec.yaml", "train_summary.json", "weights/final.index"):
        assert expected in keys, keys
    assert any(k.startswith("checkpoints/ckpt-") and k.endswith(".index") for k in keys), keys
    assert any(k.startswith("logs/train/events.out.tfevents") for k in keys), keys
    # BackupAndRestore deletes its state after a run that finished
    assert not [k for k in keys if k.startswith("backup/") and not k.endswith("/")], keys

    # warm-up requests from the TFRecord copy on S3
    out = _tfmdl(env, "export", f"--model_dir={model}", f"--export_base=s3://{BUCKET}/export",
                 "--model_name=dnn_feed", f"--data={data_tf}")
    assert "warm-up requests: 4" in out
    keys = _keys(client, "export/dnn_feed/")
    assert not [k for k in keys if ".tmp-" in k], keys
    for expected in ("1/saved_model.pb", "1/variables/variables.index",
                     "1/assets.extra/tf_serving_warmup_requests", "1/assets.extra/spec.yaml",
                     "1/assets.extra/tfmdl_export.json"):
        assert expected in keys, keys
    shard = tf.io.gfile.glob(os.path.join(feed_dir, "eval-*.tfrecord"))[0]
    out = _tfmdl(env, "predict", f"--export_dir=s3://{BUCKET}/export/dnn_feed",
                 f"--input={shard}", "--limit=3")
    assert len(out.strip().splitlines()) == 4, out  # a header and three examples
    _check_export_serves(client, feed_dir, str(tmp_path / "export"))


def _check_export_serves(client, feed_dir: str, local: str) -> None:
    """Downloads the exported version and scores real examples with it."""
    for key in _keys(client, "export/dnn_feed/1/"):
        if key.endswith("/"):
            continue
        os.makedirs(os.path.dirname(os.path.join(local, key)), exist_ok=True)
        client.download_file(BUCKET, f"export/dnn_feed/1/{key}", os.path.join(local, key))
    serve = tf.saved_model.load(local).signatures["serving_default"]
    shard = tf.io.gfile.glob(os.path.join(feed_dir, "eval-*.tfrecord"))[0]
    records = next(iter(tf.data.TFRecordDataset(shard).batch(16)))
    outputs = serve(examples=records)
    spec = spec_lib.load_spec(feed_dir)
    assert sorted(outputs) == sorted(spec.task_names)
    for task, probs in outputs.items():
        probs = probs.numpy()
        assert probs.shape == (16,) and np.all((probs > 0) & (probs < 1)), task


def test_hdfs_and_az_are_routed_to_tensorflow_io():
    """No HDFS or Azure server runs here: only the routing is checked (TensorFlow
    alone raises UnimplementedError for these schemes)."""
    filesystems.require("hdfs://127.0.0.1:9/data", "az://account/container/data")
    assert {"hdfs", "az", "s3"} <= set(tf.io.gfile.get_registered_schemes())
    # tensorflow-io's HDFS plugin answers (no libhdfs here, so nothing exists)
    assert tf.io.gfile.exists("hdfs://127.0.0.1:9/data") is False
