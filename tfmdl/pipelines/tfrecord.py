"""Sharded, atomic TFRecord writing and the shard manifest.

A shard is written to a hidden temporary file beside its final name and renamed
into place only when it is complete, so a reader globbing ``train-*.tfrecord``
never sees a half-written shard. ``manifest.json`` (also written atomically)
records every shard with its record count; readers use it to report how many
records ``ignore_errors`` skipped. Its optional ``"row_order"`` mapping says, per
split, in what order the writer put the rows: ``"random"`` (`RANDOM_ORDER`: every
shard a random sample in random order, as ``tfmdl data convert`` writes the train
split and the synthetic generator its shuffled splits), or anything else
(``"input"``, ``"by_user"``, ...) for an order the reader must not trust to be
mixed (`in_random_order`).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Optional

import tensorflow as tf

MANIFEST = "manifest.json"
ROW_ORDER_KEY = "row_order"
RANDOM_ORDER = "random"


def shard_suffix(compression: Optional[str]) -> str:
    return ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"


def compression_of(path: str) -> Optional[str]:
    """GZIP for ``*.gz`` files, None otherwise."""
    return "GZIP" if path.endswith(".gz") else None


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with tf.io.gfile.GFile(tmp, "w") as fh:
        fh.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class ShardedWriter:
    """Writes serialized records into ``{out_dir}/{prefix}-NNNNN.tfrecord[.gz]``.

    Args:
      out_dir: directory (created if missing).
      prefix: shard name prefix, e.g. "train".
      records_per_shard: a new shard starts after this many records.
      compression: None or "GZIP".

    Use as a context manager; on an exception the current temporary shard is
    deleted and completed shards stay as they are (each is whole).
    """

    def __init__(self, out_dir: str, prefix: str, records_per_shard: int = 250_000,
                 compression: Optional[str] = None):
        if records_per_shard <= 0:
            raise ValueError(f"records_per_shard must be positive, got {records_per_shard}.")
        if compression not in (None, "GZIP"):
            raise ValueError(f"compression must be None or 'GZIP', got {compression!r}.")
        tf.io.gfile.makedirs(out_dir)
        self.out_dir = out_dir
        self.prefix = prefix
        self.records_per_shard = records_per_shard
        self.compression = compression
        self.shards: List[Dict[str, object]] = []
        self._writer: Optional[tf.io.TFRecordWriter] = None
        self._tmp: Optional[str] = None
        self._final: Optional[str] = None
        self._count = 0

    @property
    def num_records(self) -> int:
        return sum(int(s["records"]) for s in self.shards) + (self._count if self._writer else 0)

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):05d}{shard_suffix(self.compression)}"
        self._final = os.path.join(self.out_dir, name)
        self._tmp = os.path.join(self.out_dir, f".tmp-{os.getpid()}-{name}")
        options = tf.io.TFRecordOptions(compression_type=self.compression or "")
        self._writer = tf.io.TFRecordWriter(self._tmp, options)
        self._count = 0

    def _close_shard(self) -> None:
        self._writer.close()
        tf.io.gfile.rename(self._tmp, self._final, overwrite=True)
        self.shards.append({"file": os.path.basename(self._final), "records": self._count})
        self._writer = None

    def write(self, records: Iterable[bytes]) -> None:
        for record in records:
            if self._writer is None:
                self._open()
            self._writer.write(record)
            self._count += 1
            if self._count >= self.records_per_shard:
                self._close_shard()

    def close(self) -> List[Dict[str, object]]:
        if self._writer is not None:
            self._close_shard()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if tf.io.gfile.exists(self._tmp):
                tf.io.gfile.remove(self._tmp)
            self._writer = None

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_manifest(out_dir: str, splits: Dict[str, List[Dict[str, object]]],
                   extra: Optional[Dict[str, object]] = None) -> None:
    """Writes ``manifest.json``: per split, the shards and their record counts."""
    body = {"splits": {name: {"shards": shards,
                              "records": sum(int(s["records"]) for s in shards)}
                       for name, shards in splits.items()}}
    if extra:
        body.update(extra)
    atomic_write_text(os.path.join(out_dir, MANIFEST), json.dumps(body, indent=2) + "\n")


def read_manifest(out_dir: str) -> Optional[dict]:
    path = os.path.join(out_dir, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as fh:
        return json.load(fh)


def expected_records(files: List[str]) -> Optional[int]:
    """Total record count of ``files`` according to their directory's manifest,
    or None when any file is not listed."""
    total = 0
    manifests: Dict[str, Optional[dict]] = {}
    for path in files:
        directory, name = os.path.split(path)
        if directory not in manifests:
            manifests[directory] = read_manifest(directory)
        manifest = manifests[directory]
        if manifest is None:
            return None
        counts = {s["file"]: int(s["records"])
                  for split in manifest["splits"].values() for s in split["shards"]}
        if name not in counts:
            return None
        total += counts[name]
    return total


def in_random_order(files: List[str]) -> bool:
    """True when every file is a shard listed in its directory's manifest under a
    split whose ``row_order`` is `RANDOM_ORDER`; False for files without a
    manifest, unlisted files and splits of any other (or no recorded) order."""
    if not files:
        return False
    splits_of: Dict[str, Optional[Dict[str, str]]] = {}
    for path in files:
        directory, name = os.path.split(path)
        if directory not in splits_of:
            manifest = read_manifest(directory)
            if manifest is None:
                return False
            order = manifest.get(ROW_ORDER_KEY) or {}
            splits_of[directory] = {str(s["file"]): split
                                    for split, entry in manifest.get("splits", {}).items()
                                    for s in entry.get("shards", [])
                                    if order.get(split) == RANDOM_ORDER}
        if name not in splits_of[directory]:
            return False
    return True
