"""tests/io: tensorflow-io (the `io` extra) — Parquet source and remote file systems.

Tests marked ``io`` need tensorflow-io with its file-system plugins loaded (TensorFlow
2.17, ``.venv-io``; ``make test`` runs them there). Elsewhere they are skipped, and
the unmarked tests here check what happens without the extra.
"""

import pytest


def tensorflow_io_usable() -> bool:
    """tensorflow-io imports and registered its file systems with this TensorFlow."""
    try:
        import tensorflow as tf
        import tensorflow_io  # noqa: F401
    except (ImportError, NotImplementedError, OSError):
        return False
    return "s3" in tf.io.gfile.get_registered_schemes()


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("io")]
    if not marked or tensorflow_io_usable():
        return
    skip = pytest.mark.skip(reason="needs the io extra (tensorflow-io on TensorFlow 2.17); "
                                   "make test runs these in .venv-io")
    for item in marked:
        item.add_marker(skip)
