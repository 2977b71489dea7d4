"""Remote file systems: ``s3://``, ``hdfs://``, ``az://`` paths through tensorflow-io.

tfmdl reads and writes data, model and export directories through
`tf.io.gfile`, which TensorFlow itself implements for local paths and ``gs://``.
The other remote schemes come from tensorflow-io's file-system plugins, which
register with TensorFlow when `tensorflow_io` is imported. tensorflow-io 0.37.1
loads them only with TensorFlow <= 2.17, so they are in the ``io`` extra's
environment (``pip install 'tfmdl[io]'``, TensorFlow 2.17; README, "Parquet and
remote file systems").

`require(path, ...)` is called wherever a user-given path enters tfmdl (data,
model and export directories): for a scheme in `TFIO_SCHEMES` it imports
tensorflow-io once, and raises `MissingExtraError` naming the path and the
``io`` extra when tensorflow-io is absent or registered no such scheme.
tensorflow-io is never imported for local or ``gs://`` paths.

Object stores have no directory rename: TensorFlow copies every object and
deletes the source. `publish_dir` keeps the export's "complete or absent"
promise as far as a store allows (see its docstring).

The local branches of `exists`, `read_text` and `write_text` use plain Python,
so modules that avoid importing TensorFlow (the spec, the data generator)
stay light.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, List, Sequence

# Schemes that tensorflow-io 0.37.1 registers with TensorFlow (verified with
# tf.io.gfile.get_registered_schemes(); http/https are left out on purpose).
TFIO_SCHEMES = ("s3", "hdfs", "viewfs", "har", "az", "oss")
# Stores where a "directory" is a key prefix and a rename is copy + delete.
OBJECT_STORE_SCHEMES = ("s3", "gs", "az", "oss")
IO_EXTRA = "pip install 'tfmdl[io]'"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_loaded = False


class MissingExtraError(ValueError):
    """A path needs the ``io`` extra (tensorflow-io), which is not usable here."""


def scheme(path: str) -> str:
    """The URL scheme of ``path`` in lower case ("s3"), or "" for a local path."""
    match = _SCHEME.match(str(path))
    return match.group(1).lower() if match else ""


def is_local(path: str) -> bool:
    """A plain local path (``file://`` URLs go through `tf.io.gfile`)."""
    return not scheme(path)


def needs_tensorflow_io(path: str) -> bool:
    return scheme(path) in TFIO_SCHEMES


def is_object_store(path: str) -> bool:
    return scheme(path) in OBJECT_STORE_SCHEMES


def is_absolute(path: str) -> bool:
    """A URL, or an absolute local path."""
    return bool(scheme(path)) or os.path.isabs(path)


def absolute(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs are already absolute."""
    return str(path) if scheme(path) else os.path.abspath(path)


def tensorflow_io_loaded() -> bool:
    """Whether `require` imported tensorflow-io in this process (the CLI then
    exits without running C++ static destructors, see `tfmdl.cli.main`)."""
    return _loaded


def _paths(paths: Iterable) -> List[str]:
    out = []
    for p in paths:
        if isinstance(p, (list, tuple)):
            out.extend(str(x) for x in p)
        elif p is not None:
            out.append(str(p))
    return out


def require(*paths) -> None:
    """Makes every remote scheme among ``paths`` usable by `tf.io.gfile`.

    ``paths`` are strings, lists of strings or None (skipped). Raises
    `MissingExtraError` naming the first path whose scheme needs tensorflow-io
    when it cannot be imported or did not register the scheme.
    """
    for path in _paths(paths):
        if needs_tensorflow_io(path):
            _load_tensorflow_io(path)


def _load_tensorflow_io(path: str) -> None:
    global _loaded
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    name = scheme(path)
    try:
        import tensorflow_io  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except (ImportError, NotImplementedError, OSError) as exc:
        raise MissingExtraError(
            f"{path}: {name}:// paths need tensorflow-io, which cannot be imported here "
            f"({type(exc).__name__}: {exc}). Install the `io` extra ({IO_EXTRA}: TensorFlow "
            f"2.17 with tensorflow-io 0.37.1) in its own environment.") from None
    _loaded = True
    if name not in tf.io.gfile.get_registered_schemes():
        raise MissingExtraError(
            f"{path}: tensorflow-io is installed but registered no {name}:// file system with "
            f"TensorFlow {tf.__version__} (tensorflow-io 0.37.1 loads its plugins only with "
            f"TensorFlow <= 2.17). Use the `io` extra's environment ({IO_EXTRA}).")


# -- small file helpers (local: plain Python; remote: tf.io.gfile) ------------------


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    require(path)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(path)
    require(path)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.isdir(path)


def read_text(path: str) -> str:
    if is_local(path):
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read()
    require(path)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "r") as fh:
        return fh.read()


def write_text(path: str, text: str) -> None:
    """Writes ``text`` through a temporary file renamed into place. On an object
    store the rename is a server-side copy: readers still see the old or the new
    object, never a partial one."""
    tmp = os.path.join(os.path.dirname(path) or ".",
                       f".tmp-{os.getpid()}-{os.path.basename(path)}")
    if is_local(path):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return
    require(path)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(tmp, "w") as fh:
        fh.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def remove_empty_dirs(paths: Sequence[str]) -> None:
    """Removes each of ``paths`` that is an empty directory (in order, so a child
    before its parent): what a failed command that created them leaves behind
    instead of an empty output directory."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    for path in paths:
        if tf.io.gfile.isdir(path) and not tf.io.gfile.listdir(path):
            tf.io.gfile.rmtree(path)


# -- publishing a directory ---------------------------------------------------------


def _files_under(root: str) -> List[str]:
    """Paths of every file under ``root``, relative to it."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    out = []
    for directory, _, files in tf.io.gfile.walk(root):
        rel = os.path.relpath(directory, root) if directory != root else ""
        out.extend(os.path.join(rel, f) if rel else f for f in files)
    return sorted(out)


def publish_dir(tmp: str, final: str, last: Sequence[str] = ()) -> None:
    """Moves the complete directory ``tmp`` to ``final`` (which must not exist).

    Local and HDFS paths: one atomic rename. Object stores (`OBJECT_STORE_SCHEMES`)
    have no directory rename, so the files are copied one by one, those named in
    ``last`` (relative paths such as ``saved_model.pb``) at the end, and ``tmp``
    is deleted afterwards. ``final`` becomes visible with its first object, but the
    file a loader needs first appears only once every other file is in place; a
    failed copy removes what it copied. Only a process killed mid-copy leaves an
    incomplete ``final`` (without the ``last`` files) behind.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    if not is_object_store(final):
        tf.io.gfile.rename(tmp, final, overwrite=False)
        return
    files = _files_under(tmp)
    tail = [f for f in files if f in set(last)]
    ordered = [f for f in files if f not in set(last)] + tail
    try:
        for rel in ordered:
            target = os.path.join(final, rel)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(os.path.join(tmp, rel), target, overwrite=False)
    except BaseException:
        if tf.io.gfile.exists(final):
            tf.io.gfile.rmtree(final)
        raise
    tf.io.gfile.rmtree(tmp)

