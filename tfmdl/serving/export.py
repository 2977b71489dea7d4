"""Exports a trained model directory as a TF Serving SavedModel (docs/design.md 8).

``export(model_dir, export_base, model_name)`` writes::

    E/NAME/V/saved_model.pb, variables/, assets/    signatures serving_default, predict_raw
    E/NAME/V/assets.extra/tf_serving_warmup_requests
    E/NAME/V/assets.extra/spec.yaml                 the feature spec (+ vocabularies/)
    E/NAME/V/assets.extra/tfmdl_export.json         source model dir, tasks, signatures

``V`` is an integer version, by default the next free one (largest existing + 1,
starting at 1); naming an existing version is an error, so a version a server may
already have loaded is never modified.

Atomicity: everything is written into the hidden directory ``E/NAME/.tmp-V-<pid>``
and renamed to ``E/NAME/V`` only when complete. TF Serving only considers
integer-named children of ``E/NAME``, so it never sees a partial export, and a
killed export leaves only the temporary directory, which the next export of the
same model removes (when the process that wrote it no longer runs).

Object stores (``s3://``, ``gs://``, ``az://``) have no directory rename: the
files are copied to ``E/NAME/V`` one by one with ``saved_model.pb`` last
(`filesystems.publish_dir`), so ``V`` is visible during the copy but holds no
loadable SavedModel until it is complete; TF Serving logs a failed load of such
a version and retries it. A failed copy removes ``V`` again; a process killed
during the copy leaves ``V`` without ``saved_model.pb``, to be deleted by hand.
``hdfs://`` renames are atomic. ``s3://``, ``hdfs://`` and ``az://`` need the
``io`` extra.

The module is saved with ``tf.saved_model.save`` (not ``keras.Model.save``), so
the export depends on no tfmdl Python code; see `tfmdl.serving.signatures`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional

import tensorflow as tf

from tfmdl.pipelines import filesystems
from tfmdl.pipelines import spec as spec_lib
from tfmdl.serving import signatures as sig_lib
from tfmdl.serving import warmup as warmup_lib

ASSETS_EXTRA = warmup_lib.ASSETS_EXTRA
SPEC_ASSET = "spec.yaml"
INFO_ASSET = "tfmdl_export.json"
SAVED_MODEL = "saved_model.pb"
VOCABULARIES = "vocabularies"
_TMP_PATTERN = re.compile(r"^\.tmp-(\d+)-(\d+)$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ExportError(ValueError):
    """An export cannot be written; the message names the path or flag."""


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote: ``path`` = ``export_base/model_name/version``."""
    path: str
    model_name: str
    version: int
    warmup_requests: int


def versions(model_base: str) -> List[int]:
    """The integer version directories under ``model_base`` (``E/NAME``), sorted."""
    if not tf.io.gfile.isdir(model_base):
        return []
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(model_base)]
    return sorted(int(n) for n in names
                  if n.isdigit() and tf.io.gfile.isdir(os.path.join(model_base, n)))


def next_version(model_base: str) -> int:
    """Largest existing version + 1, or 1 when there is none."""
    existing = versions(model_base)
    return existing[-1] + 1 if existing else 1


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_temp_dirs(model_base: str) -> List[str]:
    """Removes ``.tmp-V-<pid>`` directories left by killed exports (whose process no
    longer runs); returns the removed paths."""
    removed = []
    if not tf.io.gfile.isdir(model_base):
        return removed
    for name in tf.io.gfile.listdir(model_base):
        match = _TMP_PATTERN.match(name.rstrip("/"))
        if match and not _process_alive(int(match.group(2))):
            path = os.path.join(model_base, name.rstrip("/"))
            tf.io.gfile.rmtree(path)
            removed.append(path)
    return removed


def write_spec_asset(spec: spec_lib.FeatureSpec, assets_dir: str) -> str:
    """Writes ``assets_dir/spec.yaml``, copying vocabulary files to
    ``assets_dir/vocabularies/`` and pointing the spec at them (relative paths), so
    the exported spec loads on another machine. Returns the spec path."""
    raw = spec.to_dict()
    for feature in raw["features"]:
        source = feature.get("vocabulary_file")
        if source is None:
            continue
        relative = os.path.join(VOCABULARIES, f"{feature['name']}.txt")
        tf.io.gfile.makedirs(os.path.join(assets_dir, VOCABULARIES))
        tf.io.gfile.copy(source, os.path.join(assets_dir, relative), overwrite=True)
        feature["vocabulary_file"] = relative
    path = os.path.join(assets_dir, SPEC_ASSET)
    tf.io.gfile.makedirs(assets_dir)
    spec_lib.save_spec(spec_lib.FeatureSpec.from_dict(raw, source=path), path)
    return path


def resolve_export_dir(path: str) -> str:
    """``path`` itself when it holds a SavedModel (``E/NAME/V``), else its latest
    integer version (``E/NAME`` -> ``E/NAME/<largest V>``), as TF Serving picks."""
    filesystems.require(path)
    if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL)):
        return path
    existing = versions(path)
    if existing:
        return os.path.join(path, str(existing[-1]))
    raise ExportError(f"{path} holds no SavedModel (saved_model.pb) and no integer version "
                      f"directory; pass E/NAME/V or E/NAME written by tfmdl export.")


def load_spec(export_dir: str) -> spec_lib.FeatureSpec:
    """The feature spec stored with an export (``assets.extra/spec.yaml``)."""
    path = os.path.join(export_dir, ASSETS_EXTRA, SPEC_ASSET)
    if not tf.io.gfile.exists(path):
        raise ExportError(f"{path} is missing: {export_dir} is not a SavedModel written by "
                          f"tfmdl export.")
    return spec_lib.load_spec(path)


def read_info(export_dir: str) -> Dict[str, Any]:
    """``assets.extra/tfmdl_export.json`` of an export (source model dir, tasks, ...)."""
    path = os.path.join(export_dir, ASSETS_EXTRA, INFO_ASSET)
    if not tf.io.gfile.exists(path):
        raise ExportError(f"{path} is missing: {export_dir} is not a SavedModel written by "
                          f"tfmdl export.")
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def _warmup_data(model_dir: str, data: Optional[str]) -> str:
    if data:
        return data
    # `tfmdl evaluate` records the data directory it scored
    eval_json = os.path.join(model_dir, "eval.json")
    if tf.io.gfile.exists(eval_json):
        with tf.io.gfile.GFile(eval_json) as fh:
            recorded = json.load(fh).get("data")
        if isinstance(recorded, str) and tf.io.gfile.isdir(recorded):
            return recorded
    raise ExportError(f"no data for the warm-up requests: pass --data=DIR (its eval split is "
                      f"read), or --nowarmup. ({eval_json} names no existing data directory.)")


def _info(model_dir: str, model_name: str, version: int, config, spec: spec_lib.FeatureSpec,
          warmup: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    from tfmdl import __version__  # pylint: disable=g-import-not-at-top

    raw_inputs = {name: {"dtype": s.dtype.name, "shape": [d for d in s.shape.as_list()]}
                  for name, s in sig_lib.raw_input_specs(spec).items()}
    return {
        "model_name": model_name,
        "version": version,
        "model_dir": filesystems.absolute(model_dir),
        "model": config.model,
        "tasks": spec.task_names,
        "scenario": {"feature": spec.scenario.feature, "names": list(spec.scenario.names)},
        "signatures": {
            sig_lib.SERVING_DEFAULT: {"inputs": {sig_lib.EXAMPLES: {"dtype": "string",
                                                                    "shape": [None]}},
                                      "outputs": spec.task_names},
            sig_lib.PREDICT_RAW: {"inputs": raw_inputs, "outputs": spec.task_names},
        },
        "warmup": warmup,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "tfmdl_version": __version__,
    }


def _check_args(model_name: str, version: Optional[int]) -> None:
    if not isinstance(model_name, str) or not _NAME_PATTERN.match(model_name):
        raise ExportError(f"--model_name must be letters, digits, '_', '-' or '.' (not "
                          f"starting with '.' or '-'), got {model_name!r}.")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ExportError(f"--version must be a positive integer, got {version!r}.")


def export(model_dir: str, export_base: str, model_name: str, *,
           version: Optional[int] = None, data: Optional[str] = None, split: str = "eval",
           warmup: bool = True) -> ExportResult:
    """Exports the trained model of ``model_dir`` to ``export_base/model_name/version``.

    Args:
      model_dir: a directory written by ``tfmdl train``.
      export_base: the export root ``E``.
      model_name: the TF Serving model name (the directory ``E/NAME``).
      version: the version directory; default the next free integer.
      data: data directory (or file pattern) whose ``split`` provides the warm-up
        requests; default the data directory recorded in ``model_dir/eval.json``.
      split: the split to take warm-up examples from.
      warmup: write ``assets.extra/tf_serving_warmup_requests``.

    Raises:
      ExportError: a bad name or version, an existing version, or warm-up
        examples the model cannot serve. ModelDirError: an incomplete model dir.
    """
    from tfmdl.training import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

    _check_args(model_name, version)
    filesystems.require(model_dir, export_base, data)
    if not tf.io.gfile.isdir(model_dir):
        raise model_dir_lib.ModelDirError(f"model directory {model_dir} does not exist.")
    warmup_data = _warmup_data(model_dir, data) if warmup else None
    model_base = os.path.join(export_base, model_name)
    # directories this export creates, removed again (when empty) if it fails
    created = [d for d in (model_base, export_base) if not tf.io.gfile.exists(d)]
    tf.io.gfile.makedirs(model_base)
    clean_stale_temp_dirs(model_base)
    version = version or next_version(model_base)
    final = os.path.join(model_base, str(version))
    if tf.io.gfile.exists(final):
        raise ExportError(f"{final} already exists; versions are never overwritten. Omit "
                          f"--version for the next free one ({next_version(model_base)}).")
    tmp = os.path.join(model_base, f".tmp-{version}-{os.getpid()}")
    tf.io.gfile.makedirs(tmp)
    try:
        built, config = model_dir_lib.load_trained(model_dir)
        module = sig_lib.ServingModule(built.model, built.spec)
        logs, warmup_info = [], None
        if warmup:
            logs = _checked_warmup(module, built.spec, model_name, warmup_data, split)
            warmup_info = {"data": filesystems.absolute(warmup_data), "split": split,
                           "requests": [list(r) for r in warmup_lib.DEFAULT_REQUESTS]}
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        assets = os.path.join(tmp, ASSETS_EXTRA)
        if logs:
            warmup_lib.write_requests(os.path.join(assets, warmup_lib.WARMUP_FILE), logs)
        write_spec_asset(built.spec, assets)
        with tf.io.gfile.GFile(os.path.join(assets, INFO_ASSET), "w") as fh:
            json.dump(_info(model_dir, model_name, version, config, built.spec, warmup_info),
                      fh, indent=2)
            fh.write("\n")
        if tf.io.gfile.exists(final):  # another export took this version meanwhile
            raise ExportError(f"{final} appeared while exporting; run the export again.")
        filesystems.publish_dir(tmp, final, last=[SAVED_MODEL])
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        filesystems.remove_empty_dirs(created)   # no empty E/NAME left behind
        raise
    return ExportResult(path=final, model_name=model_name, version=version,
                        warmup_requests=len(logs))


def _checked_warmup(module: sig_lib.ServingModule, spec: spec_lib.FeatureSpec,
                    model_name: str, data: str, split: str) -> List[object]:
    """Builds the warm-up requests and runs them through ``module``: a request that
    fails would make TF Serving refuse the version."""
    batch = max(b for _, b in warmup_lib.DEFAULT_REQUESTS)
    records = warmup_lib.read_records(data, split, batch, spec)
    functions = {sig_lib.SERVING_DEFAULT: module.serve_examples,
                 sig_lib.PREDICT_RAW: lambda **features: module.serve_raw(features)}
    try:
        # predict_raw requests are parsed while being built, so bad examples can fail here
        logs = warmup_lib.build_requests(spec, model_name, records)
        warmup_lib.replay(functions, logs)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise ExportError(f"warm-up examples from {data} ({split} split) fail on the model: "
                          f"{message.strip().splitlines()[0]}") from None
    return logs
