"""`filesystems.publish_dir` on an object store: files copied with the loader's
entry file last, nothing left behind on failure. The object-store branch runs on
local directories here (TensorFlow's copy is the same call on s3://)."""

import os

import pytest
import tensorflow as tf

from tfmdl.pipelines import filesystems


def _tree(root, files):
    for rel, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as fh:
            fh.write(text)


FILES = {"saved_model.pb": "graph", "variables/variables.index": "i",
         "variables/variables.data-00000-of-00001": "d", "assets.extra/spec.yaml": "s"}


@pytest.fixture
def as_object_store(monkeypatch):
    monkeypatch.setattr(filesystems, "is_object_store", lambda path: True)
    copies = []
    real_copy = tf.io.gfile.copy

    def copy(src, dst, overwrite=False):
        copies.append(os.path.basename(dst))
        real_copy(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "copy", copy)
    return copies


def test_object_store_copy_puts_saved_model_last(tmp_path, as_object_store):
    tmp, final = str(tmp_path / ".tmp-1-99"), str(tmp_path / "1")
    _tree(tmp, FILES)
    filesystems.publish_dir(tmp, final, last=["saved_model.pb"])
    assert as_object_store[-1] == "saved_model.pb" and len(as_object_store) == 4
    assert not os.path.exists(tmp)
    for rel, text in FILES.items():
        with open(os.path.join(final, rel)) as fh:
            assert fh.read() == text


def test_failed_copy_removes_the_partial_version(tmp_path, as_object_store, monkeypatch):
    tmp, final = str(tmp_path / ".tmp-1-99"), str(tmp_path / "1")
    _tree(tmp, FILES)
    copy = tf.io.gfile.copy

    def failing(src, dst, overwrite=False):
        if len(as_object_store) == 2:
            raise tf.errors.UnavailableError(None, None, "connection reset")
        copy(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "copy", failing)
    with pytest.raises(tf.errors.UnavailableError):
        filesystems.publish_dir(tmp, final, last=["saved_model.pb"])
    assert not os.path.exists(final) and os.path.exists(tmp)


def test_local_publish_is_one_rename(tmp_path):
    tmp, final = str(tmp_path / ".tmp-1-99"), str(tmp_path / "1")
    _tree(tmp, FILES)
    filesystems.publish_dir(tmp, final, last=["saved_model.pb"])
    assert sorted(os.listdir(final)) == ["assets.extra", "saved_model.pb", "variables"]
    with pytest.raises(tf.errors.OpError):  # the final version exists: never overwritten
        _tree(tmp, FILES)
        filesystems.publish_dir(tmp, final)


def test_text_files_local_and_through_gfile(tmp_path):
    path = str(tmp_path / "a.txt")
    filesystems.write_text(path, "one")
    filesystems.write_text(path, "two")
    assert filesystems.read_text(path) == "two" and filesystems.exists(path)
    url = "file://" + str(tmp_path / "b.txt")
    filesystems.write_text(url, "three")
    assert filesystems.read_text(url) == "three" and filesystems.isdir("file://" + str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
