"""Value types shared by the backends and the filesystem core.

A :class:`RemoteEntry` is one file or directory as a backend lists it: everything ``stat``,
``readdir`` and the xattrs need, so that no per-file request is ever made for metadata.
``version`` fingerprints the bytes (size + modification time, + md5 when the platform has
one); the block cache keys on it, so bytes of an old version are never served for a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The platform's own record of the entry (served as ``user.remotefs.json``)."""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Platform metadata served as ``user.<platform>.<key>`` xattrs."""
