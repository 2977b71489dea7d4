"""File helpers shared by the tests."""

import os


def tree_bytes(root) -> dict:
    """``{relative path: bytes}`` of every file under ``root``: compare two of them
    to show that a failed command left every existing output byte-identical."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out
