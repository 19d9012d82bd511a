"""Seven Bridges / CAVATICA public API v2 as a :class:`~remotefs.backends.base.Backend`.

Namespace (design.md §2): with a project, the mount root is the project's root folder;
without one, a synthetic root lists owners (``sbg:owner:<owner>``), an owner lists its
projects, and a project is its root folder. Folders are listed with
``GET /files?parent=<id>&fields=_all&limit=100`` (``project=owner/name`` for a project's root
folder, the documented form, spec 1.5), which gives names, sizes and times of every child in
one call per 100 entries. After the first page, ``X-Total-Matching-Query`` says how many
pages remain and they are fetched concurrently: a cold listing of N entries costs exactly
``ceil(N / 100)`` requests. Items keep the server's order; ``type`` is compared
case-insensitively (A1).

Reading (spec 1.8): ``GET /files/{id}/download_info`` gives a signed storage URL, fetched
**without** the platform token. What is cached and shared:

- The signed URL, per file ID, with its expiry (``Expires``, A5). A cached URL is refreshed
  when less than :data:`URL_REFRESH_MARGIN` remains by our clock; a freshly issued one is always
  tried once, whatever our clock says (the server's clock decides).
- Concurrent reads of one file share one ``download_info`` call (:class:`SingleFlight`): the
  call spends the 1000-requests-per-5-minutes budget every listing also draws on.
- A storage 403 that says the request has expired (S3 ``<Message>Request has expired``), or
  one on a URL that is past its ``Expires`` or has no known expiry, gets one new URL and one
  retry. Any other 403 (revoked access: ``Access Denied``) is ``AccessDenied`` at once, never
  an endless refresh loop.

- In a cluster (``shared``, ``--shared-state``): the signed URL once per file per URL
  lifetime for every node (kept in the store until ``URL_REFRESH_MARGIN`` before it expires;
  one that storage refused, or that has no expiry, is never shared), and the mount's check
  (``SHARED_CHECK_SECONDS``).

Every API request spends the token's budget: :class:`RateLimitState` tracks it from the
``X-RateLimit-*`` headers so that requests wait for the window to reset rather than fail
(and asks the cluster's shared budget first, when there is one).
The client belongs to the caller; :meth:`aclose` only drops the caches.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from remotefs.backends.base import Memory, SharedValues, read_length
from remotefs.concurrency import SingleFlight, gather_limited
from remotefs.credentials import Secret, as_secret
from remotefs.errors import AccessDenied, InvalidQuery, NotFound, ProtocolError
from remotefs.http.ranges import range_body, range_header
from remotefs.http.ratelimit import RateLimitState
from remotefs.http.retry import DEFAULT_POLICY, RetryPolicy
from remotefs.http.send import Params, send
from remotefs.http.wire import parse_iso8601_ns
from remotefs.model import RemoteEntry, compact_json
from remotefs.query import QUERY_PREFIX, Query, parse_sevenbridges, query_entry, query_of

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_LIMIT = 100
"""The API's maximum ``limit`` (A4): fewest requests per listing."""
PAGE_CONCURRENCY = 8
"""Listing pages fetched at once after the first: fast, without bursting the budget."""
SHARED_CHECK_SECONDS = 60.0
"""How long another node's check of the same token and project stands for this node's
(``--shared-state``): a cluster starting at once checks once, not once per node."""
URL_REFRESH_MARGIN = 60.0
"""Seconds of validity a cached signed URL must still have to be reused (A5): a read that
starts with less may outlive it (reads retry for up to the 30 s operation deadline)."""
ROOT_ID = "sbg:root"
OWNER_PREFIX = "sbg:owner:"
_EXPIRED_403 = re.compile(
    r"<Message>[^<]*expired[^<]*</Message>|<Code>(ExpiredToken|TokenRefreshRequired)</Code>",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires: float | None
    """Unix seconds after which storage refuses the URL; ``None`` when the URL does not say."""

    def usable(self, now: float) -> bool:
        return self.expires is None or self.expires - now > URL_REFRESH_MARGIN

    def past_expiry(self, now: float) -> bool:
        return self.expires is None or now >= self.expires


class SevenBridgesBackend:
    """Files of one Seven Bridges / CAVATICA project, or of all the user's projects."""

    xattr_namespace = "sbg"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        token: Secret | str,
        project: str | None,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        if project is not None and (project.count("/") != 1 or not all(project.split("/"))):
            raise ValueError(f"project {project!r}: expected owner/name")
        self._client = client
        self._api = api_url.rstrip("/")
        self._token = as_secret(token)
        self._project = project
        self._policy = policy
        self._rate = RateLimitState()
        self._project_record: dict[str, Any] | None = None
        self._urls: dict[str, SignedUrl] = {}
        self._url_flights: SingleFlight[str, SignedUrl] = SingleFlight()
        self.api_url = self._api
        self.cache_scope = self._api
        """Where the IDs come from (the API base URL): keeps the block caches of two
        platforms apart. Holds no secret."""
        self.user_key = self._token.fingerprint(f"remotefs user of {self._api}")
        self.root_key = project or ""
        self.memory: Memory | None = None  # nothing of SB's is kept but its listings
        self.shared: SharedValues | None = None
        self.rate_limit: RateLimitState | None = self._rate

    # --- requests -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"X-SBG-Auth-Token": self._token.reveal(), "Accept": "application/json"}

    async def _get(self, path: str, params: Params | None, kind: str = "listing") -> httpx.Response:
        return await send(
            self._client,
            "GET",
            f"{self._api}{path}",
            headers=self._headers(),
            params=params,
            policy=self._policy,
            rate_limit=self._rate,
            kind=kind,
        )

    async def _get_json(
        self, path: str, params: Params | None, kind: str = "listing"
    ) -> tuple[Any, httpx.Response]:
        response = await self._get(path, params, kind)
        try:
            return response.json(), response
        except ValueError:
            raise ProtocolError(f"GET {self._api}{path}: the answer is not JSON") from None

    async def _collection(
        self,
        path: str,
        params: Sequence[tuple[str, str | int]],
        convert: Callable[[list[dict[str, Any]]], list[T]],
    ) -> list[T]:
        """Every item of a paged collection (spec 1.3): the first page, then the rest at once.

        ``convert`` turns each page's items into what the caller keeps as soon as the page
        arrives: a 100,000-entry folder never holds 100,000 decoded JSON records at once
        (they would cost ~160 MB, and fragment the heap for the rest of the mount's life).
        """
        first, response = await self._get_json(
            path, [*params, ("offset", 0), ("limit", PAGE_LIMIT)]
        )
        items = convert(_items(first, path))
        total_header = response.headers.get("x-total-matching-query", "")
        if not total_header.strip().isdigit():
            # Not seen from the real API or the emulator; follow the links rather than fail.
            log.debug("GET %s: no X-Total-Matching-Query; following next links", path)
            return _unique(items + convert(await self._follow_links(first, path)))
        total = int(total_header)
        offsets = range(PAGE_LIMIT, total, PAGE_LIMIT)

        async def page(offset: int) -> list[T]:
            body, _ = await self._get_json(
                path, [*params, ("offset", offset), ("limit", PAGE_LIMIT)]
            )
            return convert(_items(body, path))

        pages = await gather_limited([partial(page, o) for o in offsets], PAGE_CONCURRENCY)
        for more in pages:
            items.extend(more)
        if len(items) != total:
            log.debug(
                "GET %s: %d items for a total of %d (changed while listing)",
                path,
                len(items),
                total,
            )
        return _unique(items)

    async def _follow_links(self, body: Any, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while (url := _next_link(body)) is not None:
            response = await send(
                self._client,
                "GET",
                url,
                headers=self._headers(),
                policy=self._policy,
                rate_limit=self._rate,
                kind="listing",
            )
            try:
                body = response.json()
            except ValueError:
                raise ProtocolError(f"GET {path}: a next page is not JSON") from None
            items.extend(_items(body, path))
        return items

    # --- Backend protocol -----------------------------------------------------------------

    async def check(self) -> None:
        if self.shared is None:
            self._project_record = await self._verify()
            return
        # The same token's check by another node of the cluster, moments ago, is as good
        # as ours (the value is sealed with a key only holders of the token have).
        self._project_record = await self.shared.fetch(
            "check",
            self._project or "",
            self._verify,
            encode=_encode_json,
            decode=partial(_project_record, self._project),
            ttl=lambda _: SHARED_CHECK_SECONDS,
        )

    async def _verify(self) -> dict[str, Any]:
        """The token works (``GET /user``), and the project's record (``{}`` without one)."""
        try:
            await self._get("/user", None, "check")
        except AccessDenied as exc:
            raise AccessDenied(f"the Seven Bridges token was refused ({exc})") from None
        except NotFound:
            hint = "" if self._api.endswith("/v2") else f"; {self._api} lacks the /v2"
            raise NotFound(
                f"{self._api} is not a Seven Bridges API endpoint (GET /user: HTTP 404{hint}): "
                "it ends in /v2, e.g. https://cavatica-api.sbgenomics.com/v2"
            ) from None
        if self._project is None:
            return {}
        owner, name = self._project.split("/")
        try:
            record, _ = await self._get_json(
                f"/projects/{quote(owner, safe='')}/{quote(name, safe='')}", None, "check"
            )
        except NotFound:
            raise NotFound(f"project {self._project} does not exist") from None
        except AccessDenied:
            raise AccessDenied(f"no access to project {self._project}") from None
        if not isinstance(record, dict) or not isinstance(record.get("root_folder"), str):
            raise ProtocolError(f"project {self._project}: the answer has no root_folder")
        return record

    def root(self) -> RemoteEntry:
        if self._project is None:
            return RemoteEntry(id=ROOT_ID, name="", is_dir=True)
        if not self._project_record:
            raise RuntimeError("SevenBridgesBackend.check() must run before root()")
        return _project_entry(self._project_record)

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        if directory.id == ROOT_ID:
            projects = await self._collection("/projects/", [("fields", "_all")], _records)
            owners = dict.fromkeys(_owner(p) for p in projects if _owner(p))
            return [RemoteEntry(id=OWNER_PREFIX + o, name=o, is_dir=True) for o in owners]
        if directory.id.startswith(OWNER_PREFIX):
            owner = directory.id[len(OWNER_PREFIX) :]
            projects = await self._collection(
                f"/projects/{quote(owner, safe='')}", [("fields", "_all")], _records
            )
            entries = []
            for record in projects:
                if _owner(record) != owner or not isinstance(record.get("root_folder"), str):
                    log.warning("skipping a malformed project of %s: %.200r", owner, record)
                    continue
                entries.append(_project_entry(record))
            return entries
        query = query_of(directory)
        if query is not None:  # a query folder: its scope's files that match (spec 1.4)
            record = directory.record
            project, scope = record.get("project"), str(record.get("scope", ""))
            where = ("project", str(project)) if project else ("parent", scope)
            params = [where, ("fields", "_all"), *query.params]
            return await self._collection("/files", params, _file_entries)
        project = _project_of(directory)
        where = ("project", project) if project else ("parent", directory.id)
        return await self._collection("/files", [where, ("fields", "_all")], _file_entries)

    def queryable(self, directory: RemoteEntry) -> bool:
        """Folders and project roots (``GET /files`` takes ``parent`` or ``project``)."""
        return directory.is_dir and not (
            directory.id == ROOT_ID
            or directory.id.startswith(OWNER_PREFIX)
            or directory.id.startswith(QUERY_PREFIX)
        )

    def parse_query(self, text: str) -> Query:
        return parse_sevenbridges(text)

    def query_folder(self, scope: RemoteEntry, query: Query, name: str) -> RemoteEntry:
        return query_entry(scope, query, name, project=_project_of(scope))

    def filtered_root(self, root: RemoteEntry, query: Query) -> RemoteEntry:
        if not self.queryable(root):
            raise InvalidQuery("--filter needs --project (GET /files filters one project)")
        return self.query_folder(root, query, "")

    def describes_contents(self, entry: RemoteEntry) -> bool:
        return False

    async def contents(self, entry: RemoteEntry) -> bytes | None:
        return None

    async def sized(self, entries: Sequence[RemoteEntry]) -> list[RemoteEntry | None]:
        return list(entries)  # SB listings say every size

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        length = read_length(entry, offset, size)
        if length == 0:
            return b""
        what = f"file {entry.id} ({entry.name!r})"
        signed = await self._signed_url(entry.id)
        refreshed = False
        while True:
            response = await send(
                self._client,
                "GET",
                signed.url,
                # No auth header: the signature is the credential (spec 1.8).
                headers={"Range": range_header(offset, length), "Accept-Encoding": "identity"},
                policy=self._policy,
                expected=(200, 206, 403),
                raw=True,
                follow_redirects=True,  # safe: nothing secret in the headers
                kind="storage",
            )
            if response.status_code != 403:
                return range_body(response, offset, length, entry.size, what)
            expired = bool(_EXPIRED_403.search(response.text)) or signed.past_expiry(time.time())
            if not expired:
                raise AccessDenied(f"{what}: storage refused the download (access denied)")
            if refreshed:
                raise AccessDenied(
                    f"{what}: storage refused a freshly issued download URL as expired "
                    "(is this machine's clock right?)"
                )
            log.debug("%s: the signed URL expired; asking for a new one", what)
            signed = await self._signed_url(entry.id, stale=signed.url)
            refreshed = True

    def derive_key(self, purpose: str) -> bytes:
        return self._token.derive_key(f"{purpose} of {self._api}")

    def reachable_without_api(self, entry: RemoteEntry) -> bool:
        cached = self._urls.get(entry.id)
        return cached is not None and cached.usable(time.time())

    async def aclose(self) -> None:
        self._urls.clear()

    # --- signed URLs ------------------------------------------------------------------------

    async def _signed_url(self, file_id: str, stale: str | None = None) -> SignedUrl:
        """The cached URL if still good, else one shared ``download_info`` call.

        ``stale``: a URL storage just refused as expired; a different cached URL (another
        reader refreshed it meanwhile) is used instead of asking again.
        """
        cached = self._urls.get(file_id)
        if cached is not None and cached.url != stale and cached.usable(time.time()):
            return cached

        async def fetch() -> SignedUrl:
            current = self._urls.get(file_id)
            if current is not None and current.url != stale and current.usable(time.time()):
                return current
            if self.shared is None:
                signed = await self._download_info(file_id)
            else:  # one download_info per file per URL lifetime, for the whole cluster
                signed = await self.shared.fetch(
                    "url",
                    file_id,
                    partial(self._download_info, file_id),
                    encode=lambda signed: signed.url.encode(),
                    decode=partial(_shared_url, stale),
                    ttl=_shared_url_seconds,
                )
            self._urls[file_id] = signed
            return signed

        return await self._url_flights.run(file_id, fetch)

    async def _download_info(self, file_id: str) -> SignedUrl:
        body, _ = await self._get_json(
            f"/files/{quote(file_id, safe='')}/download_info", None, "signed-url"
        )
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ProtocolError(f"file {file_id}: download_info has no usable url")
        return SignedUrl(url, url_expiry(url))


# --- pure helpers ---------------------------------------------------------------------------


def _shared_url_seconds(signed: SignedUrl) -> float:
    """How long a signed URL may live in the cluster's store: until shortly before it is no
    longer worth handing out (never, when it does not say when it expires)."""
    if signed.expires is None:
        return 0.0
    return signed.expires - URL_REFRESH_MARGIN - time.time()


def _shared_url(stale: str | None, value: bytes) -> SignedUrl:
    """A signed URL from the cluster's store; ``ValueError`` if it is not one worth using
    (malformed, the one storage just refused, or too close to its expiry)."""
    url = value.decode()
    if not url.startswith(("http://", "https://")) or url == stale:
        raise ValueError("not a usable signed URL")
    signed = SignedUrl(url, url_expiry(url))
    if signed.expires is None or not signed.usable(time.time()):
        raise ValueError("not a usable signed URL")
    return signed


def _encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _project_record(project: str | None, value: bytes) -> dict[str, Any]:
    """A shared check's outcome: the project's record (``{}`` without a project);
    ``ValueError`` for anything else."""
    record = json.loads(value)
    if not isinstance(record, dict):
        raise ValueError("not a record")
    if project is not None and not isinstance(record.get("root_folder"), str):
        raise ValueError("not a project record")
    return record


def url_expiry(url: str) -> float | None:
    """Unix seconds a signed URL expires at: SigV2 ``Expires`` (A5), or SigV4/GCS
    ``X-Amz-Date``/``X-Goog-Date`` + ``…-Expires``; ``None`` when the URL says neither."""
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    expires = query.get("expires", "")
    if expires.isdigit():
        return float(expires)
    for vendor in ("amz", "goog"):
        date, seconds = query.get(f"x-{vendor}-date", ""), query.get(f"x-{vendor}-expires", "")
        if date and seconds.isdigit():
            try:
                start = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                return None
            return start.timestamp() + int(seconds)
    return None


def _items(body: Any, path: str) -> list[dict[str, Any]]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ProtocolError(f"GET {path}: the answer is not a collection")
    return items


def _next_link(body: Any) -> str | None:
    links = body.get("links") if isinstance(body, dict) else None
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == "next":
            href = link.get("href")
            if isinstance(href, str):
                return href
    return None


def _unique(items: list[T]) -> list[T]:
    """Drop repeats of an ID (entries shifting between pages of a changing folder)."""
    seen: set[Any] = set()
    out = []
    for item in items:
        key = item.id if isinstance(item, RemoteEntry) else item.get("id")  # type: ignore[attr-defined]
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _file_entries(items: list[dict[str, Any]]) -> list[RemoteEntry]:
    return [entry for entry in map(_file_entry, items) if entry is not None]


def _project_of(directory: RemoteEntry) -> str | None:
    """``owner/name`` when ``directory`` is a project's root folder (its record is the
    project's, whose ``root_folder`` is the entry's ID), else ``None``: its files are listed
    with ``project=`` (the documented form, spec 1.5), a folder's with ``parent=``."""
    if b'"root_folder"' in directory.record_json:  # cheap: most folders are not projects
        record = directory.record
        if record.get("root_folder") == directory.id and isinstance(record.get("id"), str):
            return str(record["id"])
    return None


def _owner(project: Mapping[str, Any]) -> str:
    pid = project.get("id")
    return pid.split("/", 1)[0] if isinstance(pid, str) and pid.count("/") == 1 else ""


def _mtime_ns(record: Mapping[str, Any]) -> int:
    return (
        parse_iso8601_ns(record.get("modified_on"))
        or parse_iso8601_ns(record.get("created_on"))
        or 0
    )


def _project_entry(record: Mapping[str, Any]) -> RemoteEntry:
    """A project as a directory: its root folder, named by the project's short name."""
    pid = str(record["id"])
    modified = record.get("modified_on", "")
    return RemoteEntry(
        id=str(record["root_folder"]),
        name=pid.split("/", 1)[1],
        is_dir=True,
        mtime_ns=_mtime_ns(record),
        version=f"0-{modified}-",
        record_json=compact_json(record),
        metadata_json=compact_json({"project": pid, "project_name": str(record.get("name", ""))}),
    )


def _file_entry(item: dict[str, Any]) -> RemoteEntry | None:
    """A listing item (``fields=_all``, spec 1.6) as an entry; ``None`` if it is malformed."""
    item_id, name = item.get("id"), item.get("name")
    if not isinstance(item_id, str) or not isinstance(name, str) or not item_id:
        log.warning("skipping a listing item without an id or name: %.200r", item)
        return None
    is_dir = str(item.get("type", "")).lower() == "folder"  # A1: case varies in the docs
    size = 0
    if not is_dir:
        listed = item.get("size")
        if isinstance(listed, bool) or not isinstance(listed, int) or listed < 0:
            log.warning("skipping file %s (%r): no valid size in its listing", item_id, name)
            return None
        size = listed
    raw_metadata = item.get("metadata")
    metadata: dict[str, Any] = dict(raw_metadata) if isinstance(raw_metadata, dict) else {}
    tags = item.get("tags")
    if tags:
        metadata["tags"] = json.dumps(tags, ensure_ascii=False)
    md5 = metadata.get("md5_sum") or ""
    return RemoteEntry(
        id=item_id,
        name=name,
        is_dir=is_dir,
        size=size,
        mtime_ns=_mtime_ns(item),
        version=f"{size}-{item.get('modified_on', '')}-{md5}",
        record_json=compact_json(item),
        metadata_json=compact_json(metadata),
    )
