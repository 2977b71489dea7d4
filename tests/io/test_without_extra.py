"""Without the io extra, remote paths and the parquet source fail naming it, and
local and gs:// paths never import tensorflow-io. Runs in the main environment."""

import os
import subprocess
import sys

import pytest

from tests.io import parquet_data
from tests.io.conftest import tensorflow_io_usable
from tfmdl.pipelines import filesystems
from tfmdl.pipelines import reader
from tfmdl.serving import export

pytestmark = pytest.mark.skipif(tensorflow_io_usable(),
                                reason="tensorflow-io is usable here (the io environment)")

EXTRA = r"Install the `io` extra \(pip install 'tfmdl\[io\]'"


@pytest.mark.parametrize("url", ["s3://tfmdl-test/feed", "hdfs://namenode:8020/feed",
                                 "az://account/container/feed"])
def test_remote_data_dirs_name_the_io_extra(url):
    scheme = url.split(":")[0]
    with pytest.raises(filesystems.MissingExtraError,
                       match=rf"^{url}: {scheme}:// paths need tensorflow-io.*{EXTRA}"):
        reader.make_dataset(parquet_data.SPEC, url, 8, split="train")


def test_export_base_and_model_dir_name_the_io_extra(tmp_path):
    with pytest.raises(filesystems.MissingExtraError, match=rf"^s3://tfmdl-test/export: .*{EXTRA}"):
        export.export(str(tmp_path), "s3://tfmdl-test/export", "m", warmup=False)
    from tfmdl.training import model_dir

    with pytest.raises(filesystems.MissingExtraError, match=rf"^hdfs://nn/m: .*{EXTRA}"):
        model_dir.load_trained("hdfs://nn/m")


def test_local_and_gs_paths_do_not_load_tensorflow_io(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(filesystems, "_load_tensorflow_io", loads.append)
    filesystems.require(str(tmp_path), "gs://bucket/data", ["file:///tmp/x", None])
    assert loads == [] and not filesystems.tensorflow_io_loaded()
    filesystems.require(["/local", "viewfs://cluster/x"])
    assert loads == ["viewfs://cluster/x"]
    assert filesystems.scheme("S3://b/k") == "s3" and filesystems.is_local("/x")
    assert filesystems.absolute("s3://b/k") == "s3://b/k"
    assert filesystems.absolute("rel") == os.path.join(os.getcwd(), "rel")


def test_parquet_source_names_the_io_extra(tmp_path):
    parquet_data.write(str(tmp_path / "d"), [parquet_data.table(10)])
    with pytest.raises(filesystems.MissingExtraError,
                       match=r"^the parquet data source needs tensorflow-io.*tfmdl\[io\]"):
        reader.make_dataset(parquet_data.SPEC, str(tmp_path / "d"), 8, split="train")


def test_cli_train_on_s3_names_the_io_extra(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tfmdl.cli.main", "train", "--config=configs/dnn_feed.yaml",
         "--data=s3://tfmdl-test/feed", f"--model_dir={tmp_path / 'm'}"],
        capture_output=True, text=True, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "tfmdl train: s3://tfmdl-test/feed: s3:// paths need tensorflow-io" in out.stderr
    assert "pip install 'tfmdl[io]'" in out.stderr
