"""HTTP ``Range`` header parsing (RFC 7233, bytes unit), shared by both byte routes.

:func:`parse_range` turns a header and a size into one of four outcomes; each route decides
what the outcome means on its platform (A6 for SB storage, A23 for ODM):

- ``None``: no header, serve the whole body with 200;
- ``ByteRange(start, end)``: one satisfiable range, ``end`` inclusive and already clamped to
  ``size - 1`` (an end past EOF is legal and clamped, RFC 7233 §2.1);
- :class:`Unsatisfiable`: syntactically fine but no byte of it lies in the file;
- :class:`MultipleRanges` / :class:`MalformedRange`: more than one range, or not a byte range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable:
    pass


class MultipleRanges:
    pass


class MalformedRange:
    pass


RangeOutcome = ByteRange | Unsatisfiable | MultipleRanges | MalformedRange | None


def parse_range(header: str | None, size: int) -> RangeOutcome:
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return MalformedRange()
    parts = spec.split(",")
    if len(parts) > 1:
        return MultipleRanges() if all(_SPEC.match(p) for p in parts) else MalformedRange()
    match = _SPEC.match(spec)
    if not match or (not match[1] and not match[2]):
        return MalformedRange()
    if not match[1]:  # suffix range: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return Unsatisfiable()
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return MalformedRange()
    if start >= size:
        return Unsatisfiable()
    end = int(match[2]) if match[2] else size - 1
    return ByteRange(start, min(end, size - 1))
