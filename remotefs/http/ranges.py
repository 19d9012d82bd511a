"""Byte ranges of a ranged GET (SB storage A6, ODM download A23): never fewer or other bytes.

- :func:`range_header`: ``Range`` for ``length`` bytes from ``offset`` (RFC 7233).
- :func:`range_body`: the body of the answer, checked: a 206 must carry exactly the range
  asked for and its bytes; a 200 (``Range`` ignored) only for a whole-file request; a total
  other than the listed size means the file changed since it was listed (``Stale``).
- :func:`declared_length`: the body length a response promises, to tell a body cut short.
"""

from __future__ import annotations

import re

import httpx

from remotefs.errors import ProtocolError, Stale

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def range_header(offset: int, length: int) -> str:
    """``Range`` for ``length`` bytes from ``offset``: RFC 7233, inclusive end."""
    return f"bytes={offset}-{offset + length - 1}"


def declared_length(response: httpx.Response) -> int | None:
    """The body length the headers promise, if any (a HEAD promises none)."""
    return promised_length(response.request.method, response.status_code, response.headers)


def promised_length(method: str, status: int, headers: httpx.Headers) -> int | None:
    """:func:`declared_length` from a response's parts."""
    if method == "HEAD" or status in (204, 304):
        return None
    length = headers.get("content-length")
    if length is not None and length.strip().isdigit():
        return int(length)
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if match:
            return int(match[2]) - int(match[1]) + 1
    return None


def range_body(response: httpx.Response, offset: int, length: int, size: int, what: str) -> bytes:
    """The bytes of a ranged GET, or an error: never fewer or other bytes than asked.

    Rules: a 206 must carry ``Content-Range: bytes offset-(offset+length-1)/size`` and exactly
    ``length`` bytes. A 200 means the server ignored ``Range``; it is accepted only when the
    whole file was asked for and it has exactly ``size`` bytes. A ``Content-Range`` total
    other than the listed size means the file changed since it was listed: ``Stale``.
    """
    status = response.status_code
    body = response.content
    if status == 206:
        header = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.match(header)
        if not match:
            raise ProtocolError(f"{what}: 206 with a missing or malformed Content-Range {header!r}")
        start, end, total = int(match[1]), int(match[2]), match[3]
        if total != "*" and int(total) != size:
            raise Stale(f"{what}: the file is now {total} bytes, not the {size} listed")
        if (start, end) != (offset, offset + length - 1):
            raise ProtocolError(
                f"{what}: asked for bytes {offset}-{offset + length - 1}, got {start}-{end}"
            )
        if len(body) != length:
            raise ProtocolError(f"{what}: 206 body has {len(body)} bytes, expected {length}")
        return body
    if status == 200:
        if offset != 0 or length != size:
            raise ProtocolError(
                f"{what}: the server ignored Range (200 for bytes {offset}-{offset + length - 1})"
            )
        if len(body) != size:
            raise ProtocolError(f"{what}: 200 body has {len(body)} bytes, expected {size}")
        return body
    raise ProtocolError(f"{what}: unexpected HTTP {status} for a byte range")
