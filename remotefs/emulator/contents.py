"""ODM ``includeContents``: the parsed structure of HDF5 files and archives (A21).

Applies to names ending ``.h5``, ``.h5ad``, ``.zip`` and ``.gz`` (spec 2.6). The layout is
A21's tree of ``{"type", "name", "path", "children"}`` nodes; a file that cannot be parsed
(a single-file ``.gz``, a generated file, HDF5 without h5py installed) gets the documented
``{"error": "The contents could not be parsed."}``. Results are computed once per file.
"""

from __future__ import annotations

import functools
import tarfile
import zipfile
from typing import Any

from remotefs.emulator.content import DiskContent
from remotefs.emulator.dataset import Node

PARSED_SUFFIXES = (".h5", ".h5ad", ".zip", ".gz")
UNPARSED = {"error": "The contents could not be parsed."}


def file_contents(node: Node) -> dict[str, Any] | None:
    """The ``contents`` value for ``node``, or None when the key must be omitted."""
    if not node.name.lower().endswith(PARSED_SUFFIXES):
        return None
    if not isinstance(node.content, DiskContent):
        return UNPARSED
    return _parse(str(node.content.path), node.name)


@functools.lru_cache(maxsize=256)
def _parse(path: str, name: str) -> dict[str, Any]:
    lower = name.lower()
    try:
        if lower.endswith((".h5", ".h5ad")):
            return _hdf5_tree(path, name)
        if lower.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return _paths_tree(name, [i.filename for i in zf.infolist()])
        with tarfile.open(path, "r:gz") as tf:
            return _paths_tree(name, [m.name + ("/" if m.isdir() else "") for m in tf.getmembers()])
    except Exception:
        return UNPARSED


def _paths_tree(name: str, paths: list[str]) -> dict[str, Any]:
    root: dict[str, Any] = {"type": "folder", "name": name, "path": "/", "children": []}
    index = {"": root}
    for raw in sorted(paths):
        parts = [p for p in raw.split("/") if p]
        for depth, part in enumerate(parts):
            key = "/".join(parts[: depth + 1])
            if key in index:
                continue
            is_dir = depth < len(parts) - 1 or raw.endswith("/")
            node: dict[str, Any] = {
                "type": "folder" if is_dir else "file",
                "name": part,
                "path": "/" + key,
            }
            if is_dir:
                node["children"] = []
            index["/".join(parts[:depth])]["children"].append(node)
            index[key] = node
    return root


def _hdf5_tree(path: str, name: str) -> dict[str, Any]:
    try:
        import h5py
    except ImportError:
        return UNPARSED

    def walk(obj: Any, label: str) -> dict[str, Any]:
        if isinstance(obj, h5py.Group):
            children = [walk(obj[k], k) for k in obj]
            return {"type": "group", "name": label, "path": obj.name, "children": children}
        return {"type": "dataset", "name": label, "path": obj.name, "children": []}

    with h5py.File(path, "r") as f:
        return walk(f, name)
