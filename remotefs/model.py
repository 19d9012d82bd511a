"""Value types shared by the backends and the filesystem core.

A :class:`RemoteEntry` is one file or directory as a backend lists it: everything ``stat``,
``readdir`` and the xattrs need, so that no per-file request is ever made for metadata.
``version`` fingerprints the bytes (size + modification time, + md5 when the platform has
one); the block cache keys on it, so bytes of an old version are never served for a new one.

Memory: a mount keeps one entry per listed file for its whole life (100,000 entries for a big
folder), so the platform's record and metadata are held as compact JSON bytes (~0.4 KB for an
SB ``fields=_all`` record) and decoded only when an xattr is read. Held as parsed dicts they
cost ~1.6 KB per entry (19 objects); the target is 2 KB per entry, everything included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EMPTY_JSON = b"{}"


def compact_json(value: Any) -> bytes:
    """``value`` (a decoded JSON document) as the shortest UTF-8 JSON text.

    A platform's JSON may hold escapes that are not valid Unicode (a lone surrogate,
    ``"\\ud800"``): those documents are kept ASCII-escaped, exactly as they came."""
    if not value:
        return EMPTY_JSON if isinstance(value, dict) else json.dumps(value).encode()
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    id: str
    """Platform ID: SB file/folder ID, ODM accession, or a backend's synthetic directory ID."""
    name: str
    """The platform's name, unmapped (the filesystem maps it to a POSIX name)."""
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    version: str = ""
    record_json: bytes = EMPTY_JSON
    """The platform's own record of the entry (served as ``user.remotefs.json``)."""
    metadata_json: bytes = EMPTY_JSON
    """Platform metadata served as ``user.<platform>.<key>`` xattrs (a JSON object)."""
    sized: bool = True
    """``False``: the listing did not say the file's size (ODM, A19), so ``size`` is 0 and
    means nothing; :meth:`~remotefs.backends.base.Backend.sized` learns it. An unsized
    entry is never read from: the filesystem sizes it before it answers for its
    attributes or opens it."""

    @property
    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.record_json)
        return record

    @property
    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = json.loads(self.metadata_json)
        return metadata
