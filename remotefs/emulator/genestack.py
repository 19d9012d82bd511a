"""Genestack ODM "files as user" API, as documented (spec part B, checklist §3.1).

Routes live under ``/api/v1/as-user`` (and the same shapes under ``/api/v1/as-curator``).
A request carries ``Genestack-API-Token: T`` or ``Authorization: Bearer T``; when both are
sent the token header wins (A26). Files are flat and keyed by accession, listed in accession
order (A29); every top-level directory of the data tree is a study.

Assumptions adopted, by number (spec §3.2): A15 filter grammar; A16 data class through
``filter``; A17 ``count`` is the page's item count; A18 ``GET /files/{id}`` is unwrapped;
A19 ``genestack:dateCreated`` / ``genestack:file.last-update`` added, no size; A20 HEAD
headers; A21 ``contents`` layout; A22 no redirect on download; A23 Range rules (one range,
inclusive end clamped; several, malformed or unsatisfiable → 400; 406 for a refused Accept);
A24 optional 429 with ``Retry-After``; A25 error body ``{"error": {"message": …}}``;
A27 ``pageLimit`` outside 0..2000 or a negative ``pageOffset`` → 400; A28 ``pageLimit=0``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from remotefs.emulator.asgi import Request, Response, json_response
from remotefs.emulator.contents import file_contents
from remotefs.emulator.control import Knobs, RateLimiter
from remotefs.emulator.dataset import Dataset, Node, Study
from remotefs.emulator.ranges import ByteRange, parse_range
from remotefs.emulator.sevenbridges import _http_date, content_disposition
from remotefs.odm_filter import QueryError, parse_filter, parse_query

T = TypeVar("T")

MAX_PAGE_LIMIT = 2000
UNAUTHENTICATED = (
    "User is not authenticated. Please supply a valid Access Token in the `Authorization` HTTP "
    "header (e.g. Authorization: bearer [token]) or Genestack API token in the "
    "`Genestack-API-Token` header"
)
_PREFIX = r"/api/v1/as-(?:user|curator)"


class OdmError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> Response:
        return json_response(self.status, {"error": {"message": self.message}})  # A25


def iso_timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


Handler = Callable[[Request, re.Match[str]], Awaitable[Response]]


class GenestackApi:
    def __init__(
        self, dataset: Dataset, knobs: Knobs, limiter: RateLimiter, tokens: set[str]
    ) -> None:
        self.ds = dataset
        self.knobs = knobs
        self.limiter = limiter
        self.tokens = tokens
        self.routes: list[tuple[re.Pattern[str], str, Handler]] = [
            (re.compile(_PREFIX + r"/files/?"), "odm.files.list", self.list_files),
            (
                re.compile(_PREFIX + r"/files/(?P<id>[^/]+)/download/?"),
                "odm.download",
                self.download,
            ),
            (re.compile(_PREFIX + r"/files/(?P<id>[^/]+)/?"), "odm.files.get", self.get_file),
            (
                re.compile(_PREFIX + r"/integration/link/files/by/study/(?P<id>[^/]+)/?"),
                "odm.files.by_study",
                self.files_by_study,
            ),
            (re.compile(_PREFIX + r"/studies/?"), "odm.studies.list", self.list_studies),
        ]

    async def handle(self, req: Request) -> tuple[str, Response]:
        for pattern, name, handler in self.routes:
            m = pattern.fullmatch(req.path)
            if not m:
                continue
            if name == "odm.download" and req.method == "HEAD":
                name = "odm.head"
            elif req.method not in ("GET", "HEAD"):
                return "odm.write", OdmError(
                    405, "Method not allowed: this emulator is read-only."
                ).response()
            token = self._token(req)
            if token is None:
                return name, OdmError(401, UNAUTHENTICATED).response()
            if self.knobs.odm_rate_limit > 0:  # A24
                allowed, window = self.limiter.take(
                    "odm:" + token, self.knobs.odm_rate_limit, self.knobs.odm_rate_window
                )
                if not allowed:
                    wait = max(1, math.ceil(window.reset - time.time()))
                    resp = OdmError(429, "Too many requests.").response()
                    resp.headers.append(("Retry-After", str(wait)))
                    return name, resp
            try:
                return name, await handler(req, m)
            except OdmError as exc:
                return name, exc.response()
        return "odm.unknown", OdmError(404, "Not found.").response()

    def _token(self, req: Request) -> str | None:
        token = req.headers.get("genestack-api-token")  # A26: the token header wins
        if token is None:
            scheme, _, value = req.headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        return token if token in self.tokens else None

    # --- objects (A18, A19, A21) ------------------------------------------------------------

    def file_obj(self, node: Node, include_contents: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "genestack:accession": node.accession,
            "genestack:name": node.name,
            "Data Class": node.data_class,
        }
        obj.update((k, v) for k, v in node.meta.items() if k not in ("tags", "Data Class"))
        obj["genestack:dateCreated"] = obj["genestack:file.last-update"] = iso_timestamp(node.mtime)
        if include_contents:
            contents = file_contents(node)
            if contents is not None:
                obj["contents"] = contents
        return obj

    def study_obj(self, study: Study) -> dict[str, Any]:
        return {
            "genestack:accession": study.accession,
            "genestack:name": study.name,
            "Study Title": study.name,
            "Study Source": "remotefs emulator",
            "genestack:dateCreated": iso_timestamp(study.mtime),
        }

    # --- parameters ----------------------------------------------------------------------

    def _include_contents(self, req: Request) -> bool:
        value = req.param("includeContents")
        if value is None or value == "false":
            return False
        if value == "true":
            return True
        raise OdmError(400, "includeContents must be true or false.")

    def _paging(self, req: Request) -> tuple[int, int]:
        try:
            limit = int(req.param("pageLimit") or MAX_PAGE_LIMIT)
            offset = int(req.param("pageOffset") or 0)
        except ValueError:
            raise OdmError(400, "pageLimit and pageOffset must be integers.") from None
        if not 0 <= limit <= MAX_PAGE_LIMIT:  # A27
            raise OdmError(400, f"pageLimit must be between 0 and {MAX_PAGE_LIMIT}.")
        if offset < 0:
            raise OdmError(400, "pageOffset must be zero or more.")
        return limit, offset

    def _predicates(self, req: Request) -> list[Callable[[Any], bool]]:
        preds = []
        try:
            if req.param("filter") is not None:
                preds.append(parse_filter(req.param("filter") or ""))
            if req.param("query"):
                preds.append(parse_query(req.param("query") or ""))
        except QueryError as exc:
            raise OdmError(400, str(exc)) from None
        return preds

    def _accepts(self, req: Request, media_type: str) -> None:
        accept = req.headers.get("accept")
        if accept is None:
            return
        kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        top = media_type.split("/")[0] + "/*"
        if not kinds & {media_type, top, "*/*"}:
            raise OdmError(406, f"Only {media_type} can be produced here.")

    def _list_response(
        self, items: Sequence[T], limit: int, offset: int, render: Callable[[T], dict[str, Any]]
    ) -> Response:
        """A ``ListResponse`` page; only the page's items are rendered."""
        page = [render(item) for item in items[offset : offset + limit]]
        pagination = {"count": len(page), "total": len(items), "offset": offset, "limit": limit}
        return json_response(200, {"meta": {"pagination": pagination}, "data": page})  # A17, A28

    # --- handlers ------------------------------------------------------------------------

    async def list_files(self, req: Request, m: re.Match[str]) -> Response:
        self._accepts(req, "application/json")
        limit, offset = self._paging(req)
        include = self._include_contents(req)
        preds = self._predicates(req)
        matched = [n for n in self.ds.odm_files if all(p(self.file_obj(n, False)) for p in preds)]
        return self._list_response(matched, limit, offset, lambda n: self.file_obj(n, include))

    def _file(self, accession: str) -> Node:
        node = self.ds.by_accession.get(accession)
        if node is None:
            raise OdmError(404, f"File {accession} does not exist or is not accessible.")
        return node

    async def get_file(self, req: Request, m: re.Match[str]) -> Response:
        self._accepts(req, "application/json")
        return json_response(200, self.file_obj(self._file(m["id"]), self._include_contents(req)))

    async def download(self, req: Request, m: re.Match[str]) -> Response:
        node = self._file(m["id"])
        assert node.content is not None
        if req.method == "GET":
            self._accepts(req, "application/octet-stream")
        size = node.size
        headers = [  # A20
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", content_disposition(node.name, quoted=True)),
            ("Accept-Ranges", "bytes"),
            ("Last-Modified", _http_date(node.mtime)),
        ]
        if req.method == "HEAD":
            return Response(200, headers, stream=iter(()), length=size)
        outcome = parse_range(req.headers.get("range"), size)
        if outcome is None:
            return Response(200, headers, stream=node.content.iter_range(0, size), length=size)
        if not isinstance(outcome, ByteRange):  # A23: several, malformed or unsatisfiable
            raise OdmError(
                400,
                f"Invalid Range header {req.headers.get('range')!r}: "
                "one satisfiable byte range is supported.",
            )
        headers.append(("Content-Range", outcome.content_range(size)))
        return Response(
            206,
            headers,
            stream=node.content.iter_range(outcome.start, outcome.end + 1),
            length=outcome.length,
        )

    async def files_by_study(self, req: Request, m: re.Match[str]) -> Response:
        self._accepts(req, "application/json")
        study = self.ds.by_study_accession.get(m["id"])
        if study is None:
            raise OdmError(404, f"Study {m['id']} does not exist or is not accessible.")
        include = self._include_contents(req)
        return json_response(200, [self.file_obj(n, include) for n in study.files])

    async def list_studies(self, req: Request, m: re.Match[str]) -> Response:
        self._accepts(req, "application/json")
        limit, offset = self._paging(req)
        preds = self._predicates(req)
        data = [self.study_obj(s) for s in self.ds.studies]
        data = [d for d in data if all(p(d) for p in preds)]
        return self._list_response(data, limit, offset, lambda d: d)
