"""Seven Bridges / CAVATICA public API v2, as documented (spec part A, checklist §3.1).

Routes live under ``/v2``; signed storage URLs point at ``/sb-storage/…``, a stand-in for S3
that needs no token (spec 1.8), on the origin the request came to or on the ``storage_url``
knob's (S3 is another host than the API; a proxy there forwards to this emulator). Every
``/v2`` call but ``GET /v2/`` needs ``X-SBG-Auth-Token`` (or ``Authorization: Bearer``);
every authenticated call but ``/rate_limit`` spends one unit of the token's budget, and every
response to a known token carries ``X-RateLimit-Limit/Remaining/Reset`` (spec 1.9).

Assumptions adopted, by number (spec §3.2): A1 lower-case ``type``; A2 order of children;
A3 scroll tokens in ``links``; A4 ``limit`` outside 1..100 → 400/90000; A5 signed-URL
lifetime and the expiry 403; A6 storage Range edge cases; A7 ``parent`` always present;
A8 ``more_info``; A9 the 401 body; A10 project+parent → 400/5031; A11 unknown ``fields``
ignored; A12 no ETag; A14 ``prev`` link when ``offset > 0``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from remotefs.emulator.asgi import Request, Response, json_response
from remotefs.emulator.control import Knobs, RateLimiter
from remotefs.emulator.dataset import Dataset, Node, sb_timestamp
from remotefs.emulator.ranges import ByteRange, Unsatisfiable, parse_range

T = TypeVar("T")

MORE_INFO = "https://docs.sevenbridges.com/reference/api-status-codes"  # A8
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
BULK_MAX = 100
STORAGE_PREFIX = "/sb-storage/"

FILE_LIST_DEFAULT = ("href", "id", "name", "project")  # spec 1.6, GET /files without fields
FOLDER_LIST_DEFAULT = ("href", "id", "name", "project", "parent", "type")  # /files/{id}/list
PROJECT_LIST_DEFAULT = ("href", "id", "name")


class SbError(Exception):
    """An SB API error: rendered as ``{status, code, message, more_info}`` (spec 1.6)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        return json_response(
            self.status,
            {
                "status": self.status,
                "code": self.code,
                "message": self.message,
                "more_info": MORE_INFO,
            },
        )


def not_found_file() -> SbError:
    return SbError(404, 5002, "Requested file does not exist.")


def bad_request(message: str) -> SbError:
    return SbError(400, 90000, message)


# ---------------------------------------------------------------------------------------
# fields= selection (spec 1.3)


def _pick(obj: dict[str, Any], path: list[str], out: dict[str, Any]) -> None:
    head = path[0]
    if head not in obj:
        return  # A11: unknown names are ignored
    if len(path) == 1:
        out[head] = obj[head]
    elif isinstance(obj[head], dict):
        inner = out.setdefault(head, {})
        if isinstance(inner, dict):
            _pick(obj[head], path[1:], inner)


def _drop(obj: dict[str, Any], path: list[str]) -> dict[str, Any]:
    if path[0] not in obj:
        return obj
    out = dict(obj)
    if len(path) == 1:
        del out[path[0]]
    elif isinstance(out[path[0]], dict):
        out[path[0]] = _drop(out[path[0]], path[1:])
    return out


def select_fields(
    obj: dict[str, Any], spec: str | None, default: tuple[str, ...] | None
) -> dict[str, Any]:
    """Apply a ``fields`` value: ``_all``, allow-lists, ``!`` exclusions and dotted paths."""
    if spec is None:
        return {k: obj[k] for k in default if k in obj} if default else obj
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    include = [p for p in parts if not p.startswith("!") and p != "_all"]
    out: dict[str, Any] = {}
    if "_all" in parts or not include:
        out = obj
    else:
        for p in include:
            _pick(obj, p.split("."), out)
    for p in parts:
        if p.startswith("!") and len(p) > 1:
            out = _drop(out, p[1:].split("."))
    return out


# ---------------------------------------------------------------------------------------


Handler = Callable[[Request, re.Match[str]], Awaitable[Response]]


class SevenBridgesApi:
    def __init__(
        self, dataset: Dataset, knobs: Knobs, limiter: RateLimiter, tokens: set[str], secret: bytes
    ) -> None:
        self.ds = dataset
        self.knobs = knobs
        self.limiter = limiter
        self.tokens = tokens
        self.secret = secret
        get = "GET"
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = [
            (get, re.compile(r"/v2/?"), "sb.paths", self.paths),
            (get, re.compile(r"/v2/user/?"), "sb.user", self.user),
            (get, re.compile(r"/v2/rate_limit/?"), "sb.rate_limit", self.rate_limit),
            (get, re.compile(r"/v2/projects/?"), "sb.projects.list", self.projects),
            (
                get,
                re.compile(r"/v2/projects/(?P<owner>[^/]+)/?"),
                "sb.projects.list",
                self.projects,
            ),
            (
                get,
                re.compile(r"/v2/projects/(?P<owner>[^/]+)/(?P<name>[^/]+)/?"),
                "sb.projects.get",
                self.project,
            ),
            (
                get,
                re.compile(r"/v2/projects/(?P<owner>[^/]+)/(?P<name>[^/]+)/files/?"),
                "sb.projects.files",
                self.project_files,
            ),
            (get, re.compile(r"/v2/files/?"), "sb.files.list", self.list_files),
            (get, re.compile(r"/v2/files/scroll/?"), "sb.files.scroll", self.scroll_files),
            (
                get,
                re.compile(r"/v2/files/(?P<id>[^/]+)/list/?"),
                "sb.files.folder_list",
                self.folder_list,
            ),
            (
                get,
                re.compile(r"/v2/files/(?P<id>[^/]+)/scroll/?"),
                "sb.files.folder_scroll",
                self.folder_scroll,
            ),
            (
                get,
                re.compile(r"/v2/files/(?P<id>[^/]+)/download_info/?"),
                "sb.download_info",
                self.download_info,
            ),
            (
                get,
                re.compile(r"/v2/files/(?P<id>[^/]+)/metadata/?"),
                "sb.files.metadata",
                self.metadata,
            ),
            (get, re.compile(r"/v2/files/(?P<id>[^/]+)/?"), "sb.files.get", self.file_details),
            ("POST", re.compile(r"/v2/bulk/files/get/?"), "sb.bulk.get", self.bulk_get),
        ]

    # --- dispatch, auth, rate limit -------------------------------------------------------

    async def handle(self, req: Request) -> tuple[str, Response]:
        if req.path.startswith(STORAGE_PREFIX):
            return "sb.storage", self.storage(req)
        name, handler, match = "sb.unknown", None, None
        path_matched = False
        for method, pattern, route, fn in self.routes:
            m = pattern.fullmatch(req.path)
            if m:
                path_matched = True
                if method == req.method or (method == "GET" and req.method == "HEAD"):
                    name, handler, match = route, fn, m
                    break
        if handler is None or match is None:
            if path_matched:
                return "sb.write", SbError(
                    405, 90006, "Method not allowed: this emulator is read-only."
                ).response()
            return name, SbError(404, 90003, "Not found.").response()
        if name == "sb.paths":
            return name, await handler(req, match)
        token = self._token(req)
        if token is None:
            # A9
            return name, SbError(401, 90001, "Unauthorized.").response()
        if name == "sb.rate_limit":  # exempt from the budget (spec 1.9)
            window = self.limiter.peek(token, self.knobs.sb_rate_limit, self.knobs.sb_rate_window)
            response = await handler(req, match)
        else:
            allowed, window = self.limiter.take(
                token, self.knobs.sb_rate_limit, self.knobs.sb_rate_window
            )
            if not allowed:
                response = SbError(
                    429, 1000, "Rate limit exceeded! Check response headers."
                ).response()
            else:
                try:
                    response = await handler(req, match)
                except SbError as exc:
                    response = exc.response()
        response.headers += [
            ("X-RateLimit-Limit", str(window.limit)),
            ("X-RateLimit-Remaining", str(window.remaining)),
            ("X-RateLimit-Reset", str(window.reset)),
        ]
        return name, response

    def _token(self, req: Request) -> str | None:
        token = req.headers.get("x-sbg-auth-token")
        if token is None:
            scheme, _, value = req.headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        return token if token in self.tokens else None

    # --- object shapes (spec 1.6) -------------------------------------------------------------

    def file_obj(self, req: Request, node: Node) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "href": f"{req.base_url}/v2/files/{node.sb_id}",
            "id": node.sb_id,
            "name": node.name,
        }
        if not node.is_folder:
            obj["size"] = node.size
        obj["project"] = self.ds.project_id
        if node.parent is not None:
            obj["parent"] = node.parent.sb_id  # A7
        obj["type"] = "folder" if node.is_folder else "file"  # A1
        obj["created_on"] = obj["modified_on"] = sb_timestamp(node.mtime)
        if not node.is_folder:
            obj["storage"] = {"type": "PLATFORM", "hosted_on_locations": ["aws:us-east-1"]}
            obj["origin"] = {}
            obj["tags"] = node.tags
            obj["metadata"] = node.sb_metadata
        return obj

    def project_obj(self, req: Request) -> dict[str, Any]:
        owner, name = self.ds.project_id.split("/")
        stamp = sb_timestamp(self.ds.root.mtime)
        return {
            "href": f"{req.base_url}/v2/projects/{self.ds.project_id}",
            "id": self.ds.project_id,
            "name": name,
            "type": "v2",
            "description": "Served by the remotefs emulator.",
            "tags": [],
            "settings": {"locked": False, "use_interruptible_instances": True},
            "permissions": {
                "write": False,
                "read": True,
                "copy": True,
                "execute": False,
                "admin": False,
            },
            "billing_group": "00000000-0000-4000-8000-000000000000",
            "root_folder": self.ds.root.sb_id,
            "created_by": owner,
            "created_on": stamp,
            "modified_on": stamp,
            "category": "PRIVATE",
        }

    # --- collections ----------------------------------------------------------------------

    def _paging(self, req: Request) -> tuple[int, int]:
        try:
            offset = int(req.param("offset") or 0)
            limit = int(req.param("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise bad_request("offset and limit must be integers.") from None
        if offset < 0:
            raise bad_request("offset must be zero or more.")
        if not 1 <= limit <= MAX_LIMIT:  # A4
            raise bad_request(f"limit must be between 1 and {MAX_LIMIT}.")
        return offset, limit

    def _url(self, req: Request, changes: dict[str, str], path: str | None = None) -> str:
        query = [(k, v) for k, v in req.query if k not in changes]
        query += list(changes.items())
        return f"{req.base_url}{path or req.path}?{urlencode(query)}"

    def _collection(
        self,
        req: Request,
        items: list[dict[str, Any]],
        total: int,
        links: list[dict[str, str]],
        href: str,
    ) -> Response:
        body = {"href": href, "items": items, "links": links}
        return json_response(200, body, [("X-Total-Matching-Query", str(total))])

    def _offset_collection(
        self,
        req: Request,
        objs: Sequence[T],
        default: tuple[str, ...],
        render: Callable[[T], dict[str, Any]],
    ) -> Response:
        """One page of ``objs``; only the page's items are rendered (a folder may be huge)."""
        offset, limit = self._paging(req)
        page = objs[offset : offset + limit]
        items = [select_fields(render(o), req.param("fields"), default) for o in page]
        links = []
        if offset + limit < len(objs):
            links.append(
                {
                    "href": self._url(req, {"offset": str(offset + limit), "limit": str(limit)}),
                    "rel": "next",
                    "method": "GET",
                }
            )
        if offset > 0:  # A14
            links.append(
                {
                    "href": self._url(
                        req, {"offset": str(max(0, offset - limit)), "limit": str(limit)}
                    ),
                    "rel": "prev",
                    "method": "GET",
                }
            )
        href = self._url(req, {"offset": str(offset), "limit": str(limit)})
        return self._collection(req, items, len(objs), links, href)

    def _scroll_collection(
        self, req: Request, nodes: list[Node], key: str, default: tuple[str, ...]
    ) -> Response:
        token = req.param("token")
        if req.param("offset") is not None:
            raise bad_request("Continuation token paging cannot be combined with offset.")
        if any(k.startswith("metadata.") for k, _ in req.query):
            raise bad_request("Continuation token paging cannot be combined with metadata filters.")
        limit = self._paging(req)[1]
        start = 0 if token in (None, "init") else _decode_scroll(token, key, len(nodes))
        page = nodes[start : start + limit]
        items = [select_fields(self.file_obj(req, n), req.param("fields"), default) for n in page]
        links = []
        if start + limit < len(nodes):
            nxt = _encode_scroll(start + limit, key)
            links.append(
                {
                    "href": self._url(req, {"token": nxt, "limit": str(limit)}),
                    "rel": "next",
                    "method": "GET",
                }
            )  # A3
        href = self._url(req, {"token": token or "init", "limit": str(limit)})
        return self._collection(req, items, len(nodes), links, href)

    # --- handlers -------------------------------------------------------------------------

    async def paths(self, req: Request, m: re.Match[str]) -> Response:
        base = f"{req.base_url}/v2"
        return json_response(
            200,
            {
                "apps_url": f"{base}/apps",
                "billing_url": f"{base}/billing",
                "files_url": f"{base}/files",
                "projects_url": f"{base}/projects",
                "rate_limit_url": f"{base}/rate_limit",
                "tasks_url": f"{base}/tasks",
                "user_url": f"{base}/user",
            },
        )

    async def user(self, req: Request, m: re.Match[str]) -> Response:
        u = self.ds.user
        obj = {
            "href": f"{req.base_url}/v2/users/{u}",
            "username": u,
            "email": f"{u}@example.org",
            "first_name": "Demo",
            "last_name": "User",
            "affiliation": "remotefs",
            "phone": "",
            "address": "",
            "state": "",
            "country": "",
            "zip_code": "",
            "city": "",
            "role": "USER",
            "tags": [],
        }
        return json_response(200, select_fields(obj, req.param("fields"), None))

    async def rate_limit(self, req: Request, m: re.Match[str]) -> Response:
        token = self._token(req) or ""
        w = self.limiter.peek(token, self.knobs.sb_rate_limit, self.knobs.sb_rate_window)
        return json_response(
            200,
            {
                "rate": {"limit": w.limit, "remaining": w.remaining, "reset": w.reset},
                "instance_limit": {"limit": -1, "remaining": 0},
            },
        )

    async def projects(self, req: Request, m: re.Match[str]) -> Response:
        owner = m.groupdict().get("owner")
        objs = [self.project_obj(req)]
        name = (req.param("name") or "").lower()
        objs = [
            o
            for o in objs
            if (owner is None or o["id"].split("/")[0] == owner) and name in o["name"].lower()
        ]
        return self._offset_collection(req, objs, PROJECT_LIST_DEFAULT, lambda o: o)

    async def project(self, req: Request, m: re.Match[str]) -> Response:
        if f"{m['owner']}/{m['name']}" != self.ds.project_id:
            raise SbError(404, 3002, "Requested project does not exist.")
        return json_response(200, select_fields(self.project_obj(req), req.param("fields"), None))

    async def project_files(self, req: Request, m: re.Match[str]) -> Response:
        """Alias of ``GET /files?project=``: a redirect, as documented (spec 1.4)."""
        query = [("project", f"{m['owner']}/{m['name']}"), *req.query]
        return Response(302, [("location", f"{req.base_url}/v2/files?{urlencode(query)}")])

    def _listed_folder(self, req: Request) -> tuple[Node, str]:
        projects, parents = req.params("project"), req.params("parent")
        if projects and parents:
            raise SbError(400, 5031, "Providing both parent and project is not allowed.")  # A10
        if not projects and not parents:
            raise SbError(
                400, 5005, "Malformed project query parameter, expecting ?project=owner/project."
            )
        if projects:
            project = projects[0]
            if project.count("/") != 1 or not all(project.split("/")):
                raise SbError(
                    400,
                    5005,
                    "Malformed project query parameter, expecting ?project=owner/project.",
                )
            if project != self.ds.project_id:
                raise SbError(404, 3002, "Requested project does not exist.")
            return self.ds.root, f"p:{project}"
        node = self._node(parents[0])
        if not node.is_folder:
            raise SbError(400, 5022, "The parent specified is not a folder.")
        return node, f"f:{node.sb_id}"

    def _filtered(self, req: Request, folder: Node) -> list[Node]:
        names, tags = set(req.params("name")), set(req.params("tag"))
        tasks = req.params("origin.task")
        meta: dict[str, set[str]] = {}
        for key, value in req.query:
            if key.startswith("metadata."):
                meta.setdefault(key[len("metadata.") :], set()).add(value)
        out = []
        for node in folder.children:
            if names and node.name not in names:
                continue
            if tags and not tags.intersection(node.tags):
                continue
            if tasks:  # no emulated file was produced by a task
                continue
            if meta and any(node.sb_metadata.get(k) not in v for k, v in meta.items()):
                continue
            out.append(node)
        return out

    async def list_files(self, req: Request, m: re.Match[str]) -> Response:
        folder, _ = self._listed_folder(req)
        nodes = self._filtered(req, folder)
        return self._offset_collection(req, nodes, FILE_LIST_DEFAULT, partial(self.file_obj, req))

    async def scroll_files(self, req: Request, m: re.Match[str]) -> Response:
        folder, key = self._listed_folder(req)
        nodes = self._filtered(req, folder)
        return self._scroll_collection(req, nodes, _filter_key(key, req), FILE_LIST_DEFAULT)

    def _folder(self, node_id: str) -> Node:
        node = self._node(node_id)
        if not node.is_folder:
            raise SbError(400, 5022, "The parent specified is not a folder.")
        return node

    async def folder_list(self, req: Request, m: re.Match[str]) -> Response:
        folder = self._folder(m["id"])
        return self._offset_collection(
            req, folder.children, FOLDER_LIST_DEFAULT, partial(self.file_obj, req)
        )

    async def folder_scroll(self, req: Request, m: re.Match[str]) -> Response:
        folder = self._folder(m["id"])
        return self._scroll_collection(
            req, folder.children, f"f:{folder.sb_id}", FOLDER_LIST_DEFAULT
        )

    def _node(self, node_id: str) -> Node:
        if not node_id.strip():
            raise SbError(400, 5004, "File id must not be null or empty.")
        node = self.ds.by_sb_id.get(node_id)
        if node is None:
            raise not_found_file()
        return node

    async def file_details(self, req: Request, m: re.Match[str]) -> Response:
        node = self._node(m["id"])
        return json_response(
            200, select_fields(self.file_obj(req, node), req.param("fields"), None)
        )

    async def metadata(self, req: Request, m: re.Match[str]) -> Response:
        node = self._node(m["id"])
        return json_response(200, {} if node.is_folder else node.sb_metadata)

    async def download_info(self, req: Request, m: re.Match[str]) -> Response:
        node = self._node(m["id"])
        if node.is_folder:
            raise SbError(400, 5017, "Downloading folders is not supported.")
        return json_response(200, {"url": self.signed_url(req, node)})

    async def bulk_get(self, req: Request, m: re.Match[str]) -> Response:
        try:
            body = json.loads(await req.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("Request body is not valid JSON.") from None
        ids = body.get("file_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad_request('Expected {"file_ids": [...]}.')
        if len(ids) > BULK_MAX:
            raise bad_request(f"At most {BULK_MAX} file ids per request.")
        items = []
        for file_id in ids:
            node = self.ds.by_sb_id.get(file_id)
            if node is None:
                err = not_found_file()
                items.append(
                    {
                        "error": {
                            "status": err.status,
                            "code": err.code,
                            "message": err.message,
                            "more_info": MORE_INFO,
                        }
                    }
                )
            else:
                items.append({"resource": self.file_obj(req, node)})
        return json_response(200, {"items": items})

    # --- signed storage URLs (spec 1.8, A5, A6) ---------------------------------------------

    def _signature(self, file_id: str, expires: int) -> str:
        mac = hmac.new(self.secret, f"{file_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:20]).decode().rstrip("=")

    def signed_url(self, req: Request, node: Node) -> str:
        expires = int(time.time() + self.knobs.url_lifetime)
        query = urlencode(
            {
                "response-content-disposition": f"attachment;filename={node.name}",
                "response-content-type": "application/octet-stream",
                "AWSAccessKeyId": "EMULATOREXAMPLEKEY",
                "Expires": str(expires),
                "Signature": self._signature(node.sb_id, expires),
            }
        )
        # The name segment is decoration (like an S3 key's last part); "." and ".." would be
        # dot segments that clients resolve away, so those get a prefix.
        segment = quote(node.name, safe="", errors="backslashreplace")
        if not segment.strip("."):
            segment = f"_{segment}"
        base = self.knobs.storage_url or req.base_url
        return f"{base}{STORAGE_PREFIX}{node.sb_id}/{segment}?{query}"

    def storage(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _s3_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )
        file_id = req.path[len(STORAGE_PREFIX) :].split("/", 1)[0]
        try:
            expires = int(req.param("Expires") or "")
        except ValueError:
            return _s3_error(
                403, "AccessDenied", "Query-string authentication requires the Expires parameter"
            )
        if not hmac.compare_digest(req.param("Signature") or "", self._signature(file_id, expires)):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if time.time() > expires:  # A5
            return _s3_error(403, "AccessDenied", "Request has expired")
        node = self.ds.by_sb_id.get(file_id)
        if node is None or node.content is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if file_id in self.knobs.revoked:
            return _s3_error(403, "AccessDenied", "Access Denied")
        size = node.size
        headers = [
            ("Accept-Ranges", "bytes"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", content_disposition(node.name, quoted=False)),
            ("Last-Modified", _http_date(node.mtime)),
        ]
        outcome = parse_range(req.headers.get("range"), size)
        if isinstance(outcome, Unsatisfiable):  # A6
            resp = _s3_error(416, "InvalidRange", "The requested range is not satisfiable")
            resp.headers.append(("Content-Range", f"bytes */{size}"))
            return resp
        if isinstance(outcome, ByteRange):
            headers.append(("Content-Range", outcome.content_range(size)))
            return Response(
                206,
                headers,
                stream=node.content.iter_range(outcome.start, outcome.end + 1),
                length=outcome.length,
            )
        # No range, several ranges or a malformed one: the whole object (A6; S3 ignores them).
        return Response(200, headers, stream=node.content.iter_range(0, size), length=size)


def _filter_key(key: str, req: Request) -> str:
    filters = sorted((k, v) for k, v in req.query if k in ("name", "tag", "origin.task"))
    return key + "|" + hashlib.sha1(repr(filters).encode()).hexdigest()[:12]


def _encode_scroll(offset: int, key: str) -> str:
    raw = json.dumps({"o": offset, "k": hashlib.sha1(key.encode()).hexdigest()[:16]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_scroll(token: str, key: str, total: int) -> int:
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset, token_key = int(state["o"]), str(state["k"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SbError(
            400, 57000, "Provided continuation token is not formatted properly."
        ) from None
    if token_key != hashlib.sha1(key.encode()).hexdigest()[:16] or not 0 <= offset <= total:
        raise SbError(400, 57001, "Provided continuation token is not valid.")
    return offset


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>EMULATOR</RequestId></Error>"
    ).encode()
    return Response(status, [("Content-Type", "application/xml")], body)


def _http_date(epoch: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(epoch))


def content_disposition(name: str, *, quoted: bool) -> str:
    """``attachment; filename=…`` in Latin-1 with an RFC 5987 ``filename*`` for the rest."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    ascii_name = "".join(c if " " <= c < "\x7f" else "_" for c in ascii_name)  # no controls
    plain = f'"{ascii_name}"' if quoted else ascii_name.replace(";", "_")
    sep = "; " if quoted else ";"
    value = f"attachment{sep}filename={plain}"
    if ascii_name != name:
        value += f"{sep}filename*=UTF-8''{quote(name, safe='', errors='backslashreplace')}"
    return value
