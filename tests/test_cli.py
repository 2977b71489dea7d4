"""The tfmdl command line, run as a user runs it (subprocesses)."""

import os
import subprocess
import sys

import pytest

TFMDL = [sys.executable, "-m", "tfmdl.cli.main"]


def run(*args, check=True):
    out = subprocess.run(TFMDL + list(args), capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}")
    return out


def test_lists_commands_and_suggests_on_typos():
    out = run("--help")
    assert "data synth" in out.stdout and "benchmark pipeline" in out.stdout
    out = run("data", "synt", check=False)
    assert out.returncode == 2 and "Did you mean 'tfmdl data synth'" in out.stderr
    out = run("data", "synth", "--out=/tmp/x", "--presett=feed", check=False)
    assert out.returncode != 0 and "presett" in out.stderr and "preset" in out.stderr


def test_synth_oracle_and_pipeline_benchmark(tmp_path):
    out_dir = str(tmp_path / "search")
    args = ["data", "synth", "--preset=search", "--train=3000", "--eval=1500", "--users=800",
            "--items=600", f"--out={out_dir}", "--records_per_shard=1000"]
    out = run(*args)
    assert "Oracle AUC" in out.stdout and "Oracle QAUC" in out.stdout
    assert "| main |" in out.stdout and "examples/s" in out.stdout
    assert sorted(f for f in os.listdir(out_dir) if f.startswith("train-")) == [
        "train-00000.tfrecord", "train-00001.tfrecord", "train-00002.tfrecord"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    again = run(*args, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert "reusing" in run(*args, "--reuse").stdout
    assert "Oracle GAUC" in run("data", "oracle", f"--data={out_dir}").stdout
    bench = run("benchmark", "pipeline", f"--data={out_dir}", "--batch_size=256")
    assert "streaming: 3000 examples" in bench.stdout and "shuffled: 3000 examples" in bench.stdout
    assert "machine: " in bench.stdout


def test_pipeline_benchmark_errors_name_paths(tmp_path, feed_dir):
    out = run("benchmark", "pipeline", f"--data={tmp_path}/missing", check=False)
    assert out.returncode == 2 and f"{tmp_path}/missing" in out.stderr
    # a corrupt shard is named, and --ignore_errors counts what was skipped
    import shutil
    data = str(tmp_path / "data")
    shutil.copytree(feed_dir, data)
    shard = os.path.join(data, "train-00001.tfrecord")
    raw = bytearray(open(shard, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(raw))
    out = run("benchmark", "pipeline", f"--data={data}", "--modes=streaming", check=False)
    assert out.returncode == 2 and "train-00001.tfrecord: corrupt record at index" in out.stderr
    out = run("benchmark", "pipeline", f"--data={data}", "--modes=streaming", "--ignore_errors")
    assert "skipped records: " in out.stdout
    skipped = int(out.stdout.split("skipped records: ")[1].split()[0])
    assert 0 < skipped < 1500


def test_convert_bad_row_and_skip(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "scenario: {feature: scen, names: [a, b]}\n"
        "tasks: [{name: click}]\n"
        "features:\n"
        "  - {name: uid, type: categorical, num_buckets: 10}\n"
        "  - {name: ctr, type: numeric, default: 0.0}\n")
    csv = tmp_path / "data.csv"
    csv.write_text("scen,uid,ctr,label_click\n0,1,0.5,1\n1,abc,0.1,0\n0,3,,\n")
    out = run("data", "convert", f"--spec={spec}", f"--input={csv}", f"--out={tmp_path}/o",
              check=False)
    assert out.returncode == 2
    assert "data.csv: row 2, column 'uid'" in out.stderr
    assert not (tmp_path / "o").exists()      # nothing written, no empty directory left
    out = run("data", "convert", f"--spec={spec}", f"--input={csv}", f"--out={tmp_path}/o",
              "--skip_bad_rows")
    assert "wrote 2 rows" in out.stdout and "skipped 1 bad row" in out.stdout


def test_convert_shuffles_train_rows_unless_told_not_to(tmp_path):
    import json

    import tensorflow as tf

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "scenario: {feature: scen, names: [a, b]}\n"
        "tasks: [{name: click}]\n"
        "features:\n"
        "  - {name: uid, type: categorical, num_buckets: 1000}\n")
    csv = tmp_path / "sorted.csv"
    csv.write_text("scen,uid,label_click\n" + "".join(f"{i % 2},{i},{i % 3 == 0:d}\n"
                                                       for i in range(300)))

    def uids(out_dir):
        records = tf.data.TFRecordDataset(os.path.join(out_dir, "train-00000.tfrecord"))
        return [tf.train.Example.FromString(r.numpy()).features.feature["uid"].int64_list.value[0]
                for r in records]

    common = ["data", "convert", f"--spec={spec}", f"--input={csv}"]
    run(*common, f"--out={tmp_path}/a")
    run(*common, f"--out={tmp_path}/b", "--shuffle_seed=5")
    run(*common, f"--out={tmp_path}/c", "--noshuffle_rows")
    a, b, c = (uids(str(tmp_path / d)) for d in "abc")
    assert c == list(range(300))
    assert sorted(a) == sorted(b) == c and a != c and b != a
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["label_counts"]["train"]["tasks"]["click"] == {"positives": 100,
                                                                  "negatives": 200}


def test_synth_row_order_flag(tmp_path):
    import json

    out = run("data", "synth", "--train=600", "--eval=200", "--users=100", "--items=100",
              "--row_order=by_user", f"--out={tmp_path}/d")
    assert "Oracle AUC" in out.stdout
    oracle = json.loads((tmp_path / "d" / "oracle.json").read_text())
    assert oracle["config"]["row_order"] == "by_user"
    bad = run("data", "synth", "--train=3000000", "--row_order=by_time", f"--out={tmp_path}/e",
              check=False)
    assert bad.returncode == 2 and "at most 2,000,000 train rows" in bad.stderr
