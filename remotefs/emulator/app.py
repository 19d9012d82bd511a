"""The emulator's ASGI application: both platform APIs, faults, counters, one process.

Request path, in order: control routes (``/_emulator/…``, never delayed, failed or counted);
then the injected latency; then every ``fail_every``-th request answers 503 in its platform's
error shape; then the platform router; a byte-serving answer may then be dropped
(``drop_every``) or stalled (``stall_every``) halfway through its body. Every API and
storage response is counted in :class:`~remotefs.emulator.control.Stats` under its route
name with the body bytes sent.

A handler bug is answered as its platform's 500 error body and logged; it never leaves a
traceback in a response (issue 2, point 5).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import anyio

from remotefs.emulator.asgi import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    json_response,
    send_response,
)
from remotefs.emulator.control import Knobs, RateLimiter, Stats
from remotefs.emulator.dataset import Dataset
from remotefs.emulator.genestack import GenestackApi, OdmError
from remotefs.emulator.sevenbridges import SbError, SevenBridgesApi, _s3_error

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator/"
BYTE_ROUTES = frozenset({"sb.storage", "odm.download"})


@dataclass
class EmulatorApp:
    """An ASGI app serving ``dataset`` on both APIs to any of ``tokens``."""

    dataset: Dataset
    tokens: set[str]
    knobs: Knobs = field(default_factory=Knobs)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter()
        # Stable across restarts of the same data, so signed URLs outlive an emulator restart
        # the way S3 URLs outlive an S3 hiccup.
        secret = hashlib.sha256(f"remotefs-emulator\0{self.dataset.project_id}".encode()).digest()
        self.sb = SevenBridgesApi(self.dataset, self.knobs, self.limiter, self.tokens, secret)
        self.odm = GenestackApi(self.dataset, self.knobs, self.limiter, self.tokens)
        self._api_requests = 0
        self._byte_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        req = Request.from_scope(scope, receive)
        if req.path.startswith(CONTROL_PREFIX):
            await send_response(send, await self._control(req), head=req.method == "HEAD")
            return
        self.stats.arrive()
        if self.knobs.latency_ms > 0:
            await anyio.sleep(self.knobs.latency_ms / 1000)
        self._api_requests += 1
        route, response = await self._dispatch(req)
        cut_after = None
        stall: tuple[int, float] | None = None
        if route in BYTE_ROUTES and response.status in (200, 206) and req.method == "GET":
            self._byte_requests += 1
            knobs = self.knobs
            if knobs.drop_every and self._byte_requests % knobs.drop_every == 0:
                cut_after = response.content_length // 2
            elif knobs.stall_every and self._byte_requests % knobs.stall_every == 0:
                stall = (response.content_length // 2, knobs.stall_ms / 1000)
        sent = await send_response(
            send, response, head=req.method == "HEAD", cut_after=cut_after, stall=stall
        )
        self.stats.record(route, response.status, sent)

    async def _dispatch(self, req: Request) -> tuple[str, Response]:
        is_sb = req.path.startswith(("/v2", "/sb-storage/"))
        if self.knobs.fail_every and self._api_requests % self.knobs.fail_every == 0:
            return "fault.503", _unavailable(req, is_sb)
        try:
            if is_sb:
                return await self.sb.handle(req)
            if req.path.startswith("/api/"):
                return await self.odm.handle(req)
        except Exception:
            log.exception("emulator handler failed for %s %s", req.method, req.path)
            if is_sb:
                return "error", SbError(500, 90000, "Internal server error.").response()
            return "error", OdmError(500, "Internal server error.").response()
        return "unknown", json_response(404, {"error": {"message": f"No route {req.path}"}})

    async def _control(self, req: Request) -> Response:
        name = req.path[len(CONTROL_PREFIX) :].strip("/")
        if name == "stats" and req.method == "GET":
            return json_response(200, self.stats.as_dict())
        if name == "reset" and req.method == "POST":
            self.stats.reset()
            self.limiter.reset()
            self._api_requests = self._byte_requests = 0
            return json_response(200, {"ok": True})
        if name == "config" and req.method == "GET":
            return json_response(200, self.knobs.as_dict())
        if name == "config" and req.method == "POST":
            try:
                values = json.loads(await req.body() or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("expected a JSON object")
                self.knobs.update(values)
            except (ValueError, TypeError) as exc:
                return json_response(400, {"error": {"message": str(exc)}})
            return json_response(200, self.knobs.as_dict())
        return json_response(404, {"error": {"message": f"no control route {name!r}"}})


def _unavailable(req: Request, is_sb: bool) -> Response:
    if req.path.startswith("/sb-storage/"):
        return _s3_error(503, "SlowDown", "Please reduce your request rate.")
    if is_sb:
        # 90004 rather than code 0: code 0 means maintenance, on which the SB client sleeps 300 s.
        return SbError(503, 90004, "Service unavailable, try again.").response()
    return OdmError(503, "Service unavailable, try again.").response()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(dataset: Dataset, tokens: set[str], knobs: Knobs | None = None) -> EmulatorApp:
    return EmulatorApp(dataset, set(tokens), knobs or Knobs())
