"""The emulator's data: a local directory tree seen as one SB project and as ODM files.

Mapping of a ``--data DIR`` tree (documented in the README):

- Every directory is a Seven Bridges folder, every regular file an SB file of one project
  (``--project owner/name``; default ``<user>/<dir name>``). Every regular file is also one
  Genestack ODM file; every top-level directory is also an ODM study whose attached files are
  all the files below it.
- ``NAME.meta.json`` beside ``NAME`` is that file's metadata (a JSON object); it is not listed.
  Its ``tags`` key becomes the SB tags, ``Data Class`` the ODM data class (default ``Other``);
  every other key is SB metadata (values as strings) and an ODM attribute (values as given).
- Names starting ``.remotefs-`` are bookkeeping and never served.
- ``NAME.generated`` holding ``{"size": N, "seed": S}`` stands for a file ``NAME`` whose bytes
  are generated (:mod:`remotefs.emulator.content`): a 1 GiB file that costs no disk.

Invariants: IDs are a pure function of the project and the file's relative path, so they are
stable across restarts (SB IDs are 24 hex digits; ODM accessions ``GSF`` + 6 digits, allocated
in path order with collisions resolved deterministically). The tree is read once at start-up;
file bytes are read from disk on each request.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotefs.emulator.content import Content, DiskContent, GeneratedContent

SIDECAR_SUFFIX = ".meta.json"
NAME_KEY = "remotefs:name"
"""A sidecar key that replaces the served platform name (hostile-name tests)."""
GENERATED_SUFFIX = ".generated"
PRIVATE_PREFIX = ".remotefs-"
"""Names the emulator's own bookkeeping uses (the demo's completion marker); never served."""
DEFAULT_DATA_CLASS = "Other"


class DatasetError(ValueError):
    """The data directory cannot be served (missing, unreadable, or a malformed sidecar)."""


def sb_timestamp(epoch: float) -> str:
    """SB timestamps: exactly ``YYYY-MM-DDTHH:MM:SSZ`` (spec 1.3; never ``+00:00``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(eq=False)
class Node:
    """One folder or file of the tree, with both platforms' identities."""

    sb_id: str
    name: str
    relpath: str
    is_folder: bool
    mtime: float
    parent: Node | None = field(default=None, repr=False)
    content: Content | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    children: list[Node] = field(default_factory=list, repr=False)
    accession: str = ""
    study: Study | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.content.size if self.content is not None else 0

    @property
    def tags(self) -> list[str]:
        tags = self.meta.get("tags", [])
        return [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]

    @property
    def sb_metadata(self) -> dict[str, str]:
        """SB metadata: keys and values are strings (spec 1.6)."""
        return {k: _as_string(v) for k, v in self.meta.items() if k != "tags"}

    @property
    def data_class(self) -> str:
        return str(self.meta.get("Data Class", DEFAULT_DATA_CLASS))

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(eq=False)
class Study:
    """An ODM study: a top-level directory and every file below it."""

    accession: str
    name: str
    mtime: float
    files: list[Node] = field(default_factory=list, repr=False)


@dataclass(eq=False, repr=False)
class Dataset:
    """Everything the emulator serves, indexed for both APIs."""

    user: str
    project_id: str
    root: Node
    by_sb_id: dict[str, Node]
    odm_files: list[Node]
    by_accession: dict[str, Node]
    studies: list[Study]
    by_study_accession: dict[str, Study]

    @property
    def project_name(self) -> str:
        return self.project_id.split("/", 1)[1]


def _as_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _sb_id(project_id: str, relpath: str) -> str:
    return hashlib.sha1(f"sb\0{project_id}\0{relpath}".encode()).hexdigest()[:24]


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: must hold a JSON object")
    return value


def _generated(path: Path) -> GeneratedContent:
    spec = _read_json_object(path)
    size, seed = spec.get("size"), spec.get("seed", 0)
    if not isinstance(size, int) or size < 0 or not isinstance(seed, int):
        raise DatasetError(f'{path}: expected {{"size": N >= 0, "seed": S}}')
    return GeneratedContent(size=size, seed=seed)


def _load_dir(path: Path, node: Node, project_id: str, nodes: dict[str, Node]) -> None:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot list ({exc.strerror})") from None
    names = {e.name for e in entries}
    for entry in entries:
        name = entry.name
        if name.startswith(PRIVATE_PREFIX):
            continue
        if name.endswith(SIDECAR_SUFFIX) and (
            name[: -len(SIDECAR_SUFFIX)] in names
            or name[: -len(SIDECAR_SUFFIX)] + GENERATED_SUFFIX in names
        ):
            continue
        relpath = f"{node.relpath}/{name}" if node.relpath else name
        if entry.is_dir(follow_symlinks=True):
            child = Node(_sb_id(project_id, relpath), name, relpath, True, entry.stat().st_mtime)
            _load_dir(Path(entry.path), child, project_id, nodes)
        elif entry.is_file(follow_symlinks=True):
            content: Content
            if name.endswith(GENERATED_SUFFIX):
                name = name[: -len(GENERATED_SUFFIX)]
                relpath = relpath[: -len(GENERATED_SUFFIX)]
                content = _generated(Path(entry.path))
            else:
                content = DiskContent(Path(entry.path), entry.stat().st_size)
            sidecar = path / (name + SIDECAR_SUFFIX)
            meta = _read_json_object(sidecar) if sidecar.name in names else {}
            served = meta.pop(NAME_KEY, None)  # names no file system can hold: "a/b", "x\0y", "."
            child = Node(
                _sb_id(project_id, relpath),
                served if isinstance(served, str) else name,
                relpath,
                False,
                entry.stat().st_mtime,
                content=content,
                meta=meta,
            )
        else:
            continue
        child.parent = node
        node.children.append(child)
        nodes[child.sb_id] = child
    # A2: deterministic order, "creation order" taken as mtime, ties broken by id.
    node.children.sort(key=lambda n: (n.mtime, n.sb_id))


def _allocate_accessions(keys: list[str]) -> list[str]:
    """``GSF`` + 6 digits per key, a pure function of the sorted key list."""
    taken: set[int] = set()
    out = []
    for key in keys:
        number = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 900_000 + 100_000
        while number in taken:
            number = number + 1 if number < 999_999 else 100_000
        taken.add(number)
        out.append(f"GSF{number}")
    return out


def load_dataset(data_dir: Path, *, user: str = "demo-user", project: str | None = None) -> Dataset:
    """Read ``data_dir`` into a :class:`Dataset` (see the module docstring for the mapping)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a directory")
    project_id = project or f"{user}/{_slug(data_dir.resolve().name)}"
    if project_id.count("/") != 1 or not all(project_id.split("/")):
        raise DatasetError(f"project {project_id!r}: expected owner/name")
    root = Node(
        _sb_id(project_id, ""), project_id.split("/")[1], "", True, data_dir.stat().st_mtime
    )
    nodes: dict[str, Node] = {root.sb_id: root}
    _load_dir(data_dir, root, project_id, nodes)

    files = sorted((n for n in root.walk() if not n.is_folder), key=lambda n: n.relpath)
    tops = sorted((n for n in root.children if n.is_folder), key=lambda n: n.relpath)
    accessions = _allocate_accessions(
        [f"file:{n.relpath}" for n in files] + [f"study:{n.relpath}" for n in tops]
    )
    for node, accession in zip(files, accessions, strict=False):
        node.accession = accession
    studies = []
    for top, accession in zip(tops, accessions[len(files) :], strict=True):
        study = Study(accession, top.name, top.mtime)
        study.files = sorted((n for n in top.walk() if not n.is_folder), key=lambda n: n.accession)
        for node in study.files:
            node.study = study
        studies.append(study)
    odm_files = sorted(files, key=lambda n: n.accession)  # A29: by accession ascending
    studies.sort(key=lambda s: s.accession)
    return Dataset(
        user=user,
        project_id=project_id,
        root=root,
        by_sb_id=nodes,
        odm_files=odm_files,
        by_accession={n.accession: n for n in odm_files},
        studies=studies,
        by_study_accession={s.accession: s for s in studies},
    )


def _slug(name: str) -> str:
    """SB project short names are lower-cased and de-specialised (spec 1.3)."""
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return out or "project"
