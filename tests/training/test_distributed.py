"""Cluster strategies with real processes on 127.0.0.1 (TF_CONFIG)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tfmdl import metrics
from tfmdl.pipelines import reader
from tfmdl.training import model_dir as model_dir_lib

CONFIG = {"model": "mdl", "params": {"layers": 1, "width": 48, "heads": 4, "ffn_mult": 1},
          "training": {"batch_size": 256, "epochs": 2, "jit_compile": "off"}}


def _ports(n):
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        out.append(s.getsockname()[1])
        s.close()
    return out


def _train_args(cfg, data, m, strategy):
    return [sys.executable, "-m", "tfmdl.cli.main", "train", f"--config={cfg}",
            f"--data={data}", f"--model_dir={m}", f"--strategy={strategy}", "--verbose=0"]


def _finish_auc(m, data):
    built, _ = model_dir_lib.load_trained(m)
    labels, preds = [], []
    for f, l, w in reader.make_dataset(built.spec, data, 1000, split="eval", shuffle=False):
        labels.append(l["finish"].numpy())
        preds.append(built.model(f)["finish"].numpy()[:, 0])
    return metrics.auc(np.concatenate(labels), np.concatenate(preds))


@pytest.mark.slow
def test_multi_worker_matches_single_process_quality(feed_dir, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _ports(2)]}
    m = str(tmp_path / "multi")
    procs = []
    try:
        for i in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}))
            procs.append(subprocess.Popen(_train_args(cfg, feed_dir, m, "multi_worker"), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "CollectiveAllReduceStrategy, 2 replica(s)" in outs[0]
    single = str(tmp_path / "single")
    out = subprocess.run(_train_args(cfg, feed_dir, single, "default"), capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = _finish_auc(m, feed_dir), _finish_auc(single, feed_dir)
    assert a > 0.58 and b > 0.58, (a, b)
    assert abs(a - b) < 0.05, (a, b)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_via_cli(feed_dir, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(dict(CONFIG, training=dict(CONFIG["training"], epochs=1))))
    out = subprocess.run(_train_args(cfg, feed_dir, str(tmp_path / "m"), "mirrored")
                         + ["--cpu_devices=2"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MirroredStrategy, 2 replica(s), XLA off" in out.stdout
    assert model_dir_lib.has_final_weights(str(tmp_path / "m"))
