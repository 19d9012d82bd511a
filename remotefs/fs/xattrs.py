"""Platform metadata as extended attributes (design.md §4).

Names served, for every file and directory:

- ``user.remotefs.id``: the platform ID (SB file ID, ODM accession);
- ``user.remotefs.name``: the original platform name (before the POSIX name mapping);
- ``user.remotefs.json``: the platform's whole record of the entry, one JSON object;
- ``user.<ns>.<key>``: each metadata key (``ns`` is ``sbg`` or ``odm``); string values as
  UTF-8, other values as JSON.

Everything is computed from the entry already in memory: getxattr and listxattr never make a
network call (``security.*``/``system.*`` are answered "not supported" by the FUSE layer). An
attribute whose name would exceed 255 bytes or contain NUL, or whose value exceeds 64 KiB (the
Linux limit), is not served; it stays in ``user.remotefs.json`` unless that record itself is
too large.
"""

from __future__ import annotations

import json

from remotefs.model import RemoteEntry

XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536


def _value(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", errors="backslashreplace")
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode(
        "utf-8", errors="backslashreplace"
    )


def xattrs(entry: RemoteEntry, namespace: str) -> dict[bytes, bytes]:
    """All served attributes of ``entry``, name → value."""
    pairs: list[tuple[str, object]] = [
        ("user.remotefs.id", entry.id),
        ("user.remotefs.name", entry.name),
        ("user.remotefs.json", entry.record),
    ]
    pairs += [(f"user.{namespace}.{key}", value) for key, value in entry.metadata.items()]
    out: dict[bytes, bytes] = {}
    for name, value in pairs:
        raw_name = name.encode("utf-8", errors="backslashreplace")
        if b"\0" in raw_name or len(raw_name) > XATTR_NAME_MAX:
            continue
        raw_value = _value(value)
        if len(raw_value) <= XATTR_SIZE_MAX:
            out[raw_name] = raw_value
    return out
