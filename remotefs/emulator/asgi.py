"""A minimal ASGI layer: requests in, responses out, nothing else.

The emulator is a plain ASGI application so that one app serves every use: in-process tests
through ``httpx.ASGITransport`` (under trio or asyncio) and real HTTP through uvicorn.
A framework would add a dependency and a per-request cost on the 1 GiB streaming path; the
few things the emulator needs (a query multi-dict, lower-cased headers, a streamed body with
an exact ``Content-Length``) fit here.

Invariant: a :class:`Response` with a streamed body always declares ``Content-Length`` and
yields exactly that many bytes (or the connection is dropped on purpose by a fault).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    scheme: str
    host: str
    receive: Receive | None = None
    _body: bytes | None = None

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]},{text}" if name in headers else text
        raw_path = scope.get("raw_path")
        path = unquote(raw_path.decode("ascii")) if raw_path else scope["path"]
        server = scope.get("server") or ("127.0.0.1", 80)
        return cls(
            method=scope["method"].upper(),
            path=path.split("?", 1)[0],
            query=parse_qsl(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            ),
            headers=headers,
            scheme=scope.get("scheme", "http"),
            host=headers.get("host") or f"{server[0]}:{server[1]}",
            receive=receive,
        )

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    async def body(self) -> bytes:
        if self._body is None:
            chunks = []
            while self.receive is not None:
                message = await self.receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            self._body = b"".join(chunks)
        return self._body


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: Iterable[bytes] | None = None
    length: int | None = None  # Content-Length of a streamed body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_length(self) -> int:
        return (
            self.length if self.stream is not None and self.length is not None else len(self.body)
        )


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    text = json.dumps(payload, ensure_ascii=False)
    try:
        body = text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in a sidecar): send it escaped
        body = json.dumps(payload).encode()
    return Response(status, [("content-type", "application/json"), *(headers or [])], body)


async def _iterate(stream: Iterable[bytes]) -> AsyncIterator[bytes]:
    iterator: Iterator[bytes] = iter(stream)
    for chunk in iterator:
        yield chunk
        await anyio.sleep(0)  # let other requests run between 1 MiB chunks


async def send_response(
    send: Send,
    response: Response,
    *,
    head: bool = False,
    cut_after: int | None = None,
    stall: tuple[int, float] | None = None,
) -> int:
    """Send ``response``; return the body bytes sent. ``cut_after`` drops the body midway;
    ``stall = (offset, seconds)`` pauses the body at ``offset`` for ``seconds``."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(response.content_length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if head:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 0
    sent = 0
    if response.stream is None:
        body = response.body if cut_after is None else response.body[:cut_after]
        if stall is not None:
            await send({"type": "http.response.body", "body": body[: stall[0]], "more_body": True})
            await anyio.sleep(stall[1])
            body, sent = body[stall[0] :], stall[0]
        await send({"type": "http.response.body", "body": body, "more_body": cut_after is not None})
        return sent + len(body)
    async for chunk in _iterate(response.stream):
        if stall is not None and sent + len(chunk) > stall[0]:
            first, chunk = chunk[: stall[0] - sent], chunk[stall[0] - sent :]
            await send({"type": "http.response.body", "body": first, "more_body": True})
            sent += len(first)
            await anyio.sleep(stall[1])
            stall = None
        if cut_after is not None and sent + len(chunk) > cut_after:
            piece = chunk[: cut_after - sent]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            return sent + len(piece)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return sent
