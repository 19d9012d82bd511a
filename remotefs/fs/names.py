"""Platform names → POSIX names: deterministic, unique per directory, documented.

Platform names may hold what a POSIX name cannot. The mapping, applied to one directory's
entries at a time (documented in the README, "Names"):

1. ``/`` becomes ``∕`` (U+2215 DIVISION SLASH) and NUL becomes ``␀`` (U+2400).
2. An empty name, ``.``, ``..`` and a name the mount reserves in that directory (``.query``,
   where query folders are offered) get the entry's short ID appended: ``. [1a2b3c4d]``.
3. The name is encoded as UTF-8 (a lone surrogate is written as a ``\\udXXX`` escape).
4. A name longer than 255 bytes is cut at a character boundary and ends ``… [ID]`` + its
   extension (when the extension is short), so it stays recognisable and unique.
5. When two entries still share a name, the one with the smallest ID keeps it and every other
   gets `` [ID]`` inserted before its extension: ``sample [5f3a0c21].bam``.

Invariants: the result depends only on the set of (id, name) pairs, not on listing order;
every result is a valid, unique, non-empty POSIX name of at most 255 bytes without ``/`` or
NUL. The original name is always readable as the ``user.remotefs.name`` xattr.
"""

from __future__ import annotations

from collections.abc import Sequence

NAME_MAX = 255
_SHORT_ID = 8
_MAX_EXTENSION = 16


def short_id(entry_id: str) -> str:
    return entry_id if len(entry_id) <= 12 else entry_id[-_SHORT_ID:]


def _encode(name: str) -> bytes:
    return name.encode("utf-8", errors="backslashreplace")


def _split_extension(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > _MAX_EXTENSION:
        return name, ""
    return name[:dot], name[dot:]


def _with_tag(name: str, tag: str) -> str:
    """``stem [tag].ext``, cut to fit in NAME_MAX bytes."""
    stem, ext = _split_extension(name)
    suffix = f" [{tag}]{ext}"
    budget = NAME_MAX - len(_encode(suffix))
    raw = _encode(stem)
    if len(raw) > budget:
        raw = raw[:budget]
        stem = raw.decode("utf-8", errors="ignore")  # drop a cut character
    return stem + suffix


def _base(entry_id: str, name: str, reserved: frozenset[str]) -> str:
    name = name.replace("/", "\u2215").replace("\0", "\u2400")
    if name in ("", ".", "..") or name in reserved:
        return f"{name} [{short_id(entry_id)}]".lstrip()
    if len(_encode(name)) > NAME_MAX:
        return _with_tag(name, short_id(entry_id))
    return name


def posix_names(
    entries: Sequence[tuple[str, str]], reserved: frozenset[str] = frozenset()
) -> list[bytes]:
    """Map ``(id, name)`` pairs of one directory to unique POSIX names, in the same order;
    names in ``reserved`` are the mount's own there and are never given to an entry."""
    bases = [_base(entry_id, name, reserved) for entry_id, name in entries]
    owner: dict[str, str] = {}
    for (entry_id, _), base in zip(entries, bases, strict=True):
        if base not in owner or entry_id < owner[base]:
            owner[base] = entry_id
    out: list[bytes] = []
    taken: set[bytes] = set()
    for (entry_id, _), base in zip(entries, bases, strict=True):
        name = base if owner[base] == entry_id else _with_tag(base, short_id(entry_id))
        encoded = _encode(name)
        if encoded in taken:  # a tagged name that collides with a real one: use the full ID
            encoded = _encode(_with_tag(base, entry_id))
        taken.add(encoded)
        out.append(encoded)
    return out
