"""TF Serving's ``models.config``: which models a server loads and which versions.

``write_model_server_config(path, [(name, base_path, versions)])`` writes a
`ModelServerConfig` text proto for ``tensorflow_model_server
--model_config_file=path``::

    model_config_list {
      config {
        name: "mdl_feed"
        base_path: "/models/mdl_feed"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
      }
    }

``versions=None`` serves the latest version (``latest { num_versions: 1 }``),
picking up new exports as they appear. ``base_path`` is the directory holding
the integer version directories (``<export_base>/<model_name>``) as the server
sees it (inside a container: the mount target).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import tensorflow as tf
from google.protobuf import text_format

from tfmdl.pipelines import tfrecord

try:
    from tensorflow_serving.config import model_server_config_pb2
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("tfmdl.serving.model_config needs tensorflow-serving-api: "
                      "pip install -e '.[serving]'") from _exc

ModelEntry = Tuple[str, str, Optional[Sequence[int]]]


def model_server_config(models: Sequence[ModelEntry]):
    """Builds the `ModelServerConfig` for ``[(name, base_path, versions or None)]``.

    Raises:
      ValueError: naming an empty or repeated model name, an empty base path or
        a version that is not a non-negative integer.
    """
    if not models:
        raise ValueError("models.config: give at least one (name, base_path, versions) entry.")
    config = model_server_config_pb2.ModelServerConfig()
    seen = set()
    for i, entry in enumerate(models):
        if len(entry) != 3:
            raise ValueError(f"models.config entry {i}: expected (name, base_path, versions or "
                             f"None), got {entry!r}.")
        name, base_path, versions = entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"models.config entry {i}: model name must be a non-empty "
                             f"string, got {name!r}.")
        if name in seen:
            raise ValueError(f"models.config entry {i}: model {name!r} is listed twice.")
        seen.add(name)
        if not isinstance(base_path, str) or not base_path:
            raise ValueError(f"models.config model {name!r}: base_path must be a non-empty "
                             f"path, got {base_path!r}.")
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = base_path
        model.model_platform = "tensorflow"
        policy = model.model_version_policy
        if versions is None:
            policy.latest.num_versions = 1
            continue
        versions = list(versions)
        bad = [v for v in versions if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad or not versions:
            raise ValueError(f"models.config model {name!r}: versions must be a non-empty list "
                             f"of non-negative integers (or None for the latest), got "
                             f"{versions!r}.")
        policy.specific.versions.extend(sorted(set(versions)))
    return config


def write_model_server_config(path: str, models: Sequence[ModelEntry]) -> str:
    """Writes ``models.config`` (text proto) to ``path`` atomically; returns the text."""
    text = text_format.MessageToString(model_server_config(models))
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    tfrecord.atomic_write_text(path, text)
    return text


def read_model_server_config(path: str):
    """Parses a ``models.config`` text proto into a `ModelServerConfig`."""
    with tf.io.gfile.GFile(path) as fh:
        return text_format.Parse(fh.read(), model_server_config_pb2.ModelServerConfig())
