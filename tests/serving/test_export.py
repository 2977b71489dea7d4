"""`tfmdl export`: layout, versions, assets.extra, and atomicity (a killed export
leaves no version directory; the next export cleans up after it)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tfmdl.pipelines import spec as spec_lib
from tfmdl.serving import export

from tests.serving.conftest import MODEL_NAME, model_base


def _integer_dirs(base):
    return sorted(n for n in os.listdir(base) if n.isdigit())


def test_layout_and_assets(exported, trained_model_dir, feed_spec):
    base = model_base(exported)
    assert exported.version == 1 and exported.path == os.path.join(base, "1")
    assert os.path.basename(base) == MODEL_NAME
    assert os.listdir(base) == ["1"]                      # no temporary directory left
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests",
                 "assets.extra/spec.yaml", "assets.extra/tfmdl_export.json"):
        assert os.path.exists(os.path.join(exported.path, name)), name
    assert export.load_spec(exported.path).to_dict() == feed_spec.to_dict()
    info = export.read_info(exported.path)
    assert info["model_dir"] == os.path.abspath(trained_model_dir)
    assert info["model_name"] == MODEL_NAME and info["version"] == 1
    assert info["tasks"] == feed_spec.task_names and info["model"] == "mdl"
    assert info["signatures"]["predict_raw"]["inputs"]["hist_items"] == {
        "dtype": "int64", "shape": [None, 10]}
    assert exported.warmup_requests == 4


def test_next_version_and_existing_version(tmp_path, trained_model_dir):
    base = tmp_path / MODEL_NAME
    assert export.next_version(str(base)) == 1
    for name in ("1", "3", "latest", ".tmp-9-1"):
        (base / name).mkdir(parents=True)
    (base / "7").write_text("a file, not a version")
    assert export.versions(str(base)) == [1, 3]
    assert export.next_version(str(base)) == 4
    assert export.resolve_export_dir(str(base)) == str(base / "3")
    with pytest.raises(export.ExportError, match="holds no SavedModel"):
        export.resolve_export_dir(str(tmp_path))
    with pytest.raises(export.ExportError, match=r"/3 already exists.*next free one \(4\)"):
        export.export(trained_model_dir, str(tmp_path), MODEL_NAME, version=3, warmup=False)
    for bad in ("", ".hidden", "a/b"):
        with pytest.raises(export.ExportError, match="--model_name"):
            export.export(trained_model_dir, str(tmp_path), bad, warmup=False)
    with pytest.raises(export.ExportError, match="--version"):
        export.export(trained_model_dir, str(tmp_path), MODEL_NAME, version=0, warmup=False)
    # warm-up requests need data: --data, or the directory recorded by tfmdl evaluate
    with pytest.raises(export.ExportError, match="--data"):
        export.export(trained_model_dir, str(tmp_path), MODEL_NAME)


def test_failed_export_leaves_nothing(tmp_path, trained_model_dir, eval_records):
    # warm-up examples the model cannot serve (item_id missing) fail the export
    bad = tf.train.Example()
    bad.ParseFromString(eval_records[0])
    del bad.features.feature["item_id"]
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(bad.SerializeToString())
    with pytest.raises(export.ExportError, match="item_id"):
        export.export(trained_model_dir, str(tmp_path / "E"), MODEL_NAME, data=path)
    assert not (tmp_path / "E").exists()        # not even an empty E/NAME (issue 23)
    # an export base that existed stays, with its other models untouched
    (tmp_path / "E2" / "other" / "1").mkdir(parents=True)
    with pytest.raises(export.ExportError, match="item_id"):
        export.export(trained_model_dir, str(tmp_path / "E2"), MODEL_NAME, data=path)
    assert sorted(os.listdir(tmp_path / "E2")) == ["other"]


def test_spec_asset_carries_its_vocabularies(tmp_path):
    vocab = tmp_path / "cities.txt"
    vocab.write_text("paris\nrome\n")
    spec = spec_lib.FeatureSpec.from_dict({
        "scenario": {"feature": "scen", "names": ["a", "b"]},
        "tasks": [{"name": "click"}],
        "features": [{"name": "city", "type": "categorical", "dtype": "string",
                      "vocabulary_file": str(vocab)}]}, source=str(tmp_path / "spec.yaml"))
    path = export.write_spec_asset(spec, str(tmp_path / "export" / "assets.extra"))
    os.remove(vocab)
    loaded = spec_lib.load_spec(path)
    assert open(loaded.feature("city").vocabulary_file).read() == "paris\nrome\n"


def test_killed_export_leaves_no_version(tmp_path, trained_model_dir, feed_dir):
    base = tmp_path / "E"
    name_dir = base / MODEL_NAME
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfmdl.cli.main", "export", f"--model_dir={trained_model_dir}",
         f"--export_base={base}", f"--model_name={MODEL_NAME}", f"--data={feed_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    temp = None
    deadline = time.time() + 300
    while temp is None and time.time() < deadline and proc.poll() is None:
        if name_dir.is_dir():
            temp = next((n for n in os.listdir(name_dir) if n.startswith(".tmp-")), None)
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temp == f".tmp-1-{proc.pid}", (temp, proc.stderr.read()[-2000:])
    # killed while writing: the temporary directory is still there, no version is
    assert (name_dir / temp).is_dir()
    assert _integer_dirs(name_dir) == []

    # the next export removes the dead process's directory and takes version 1
    result = export.export(trained_model_dir, str(base), MODEL_NAME, data=feed_dir)
    assert result.version == 1
    assert os.listdir(name_dir) == ["1"]
