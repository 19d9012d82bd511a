"""Genestack ODM "files as user" (spec part B) as a :class:`~remotefs.backends.base.Backend`.

Namespace (design.md §2): ODM files are flat and keyed by accession, so the directories are
derived. The root (``odm:root``) holds ``studies`` (``odm:studies``) and ``all``
(``odm:all``); ``studies`` holds one directory per study, ``<study name> [<accession>]``
(``odm:study:<accession>``), listing the files linked to it
(``GET …/integration/link/files/by/study/{accession}``, a bare JSON array); ``all`` lists
every file visible to the user (``GET …/files``, paged by ``meta.pagination.total``: after the
first page of 2000 the rest are fetched concurrently).

Sizes: no size is documented in ODM metadata (A19). A size key is used if one is present
(``genestack:file.size`` or ``size``, an integer); otherwise the size is the ``Content-Length``
of ``HEAD …/files/{accession}/download`` (A20). A listing sends **no** HEAD: a size it does
not say, and nothing remembers, is left unknown (the entry is not ``sized``), so a walk that
needs only names (``ls``, ``find -name``, a glob) costs the listing's pages alone;
:meth:`GenestackBackend.sized` sends the HEADs when something asks for attributes,
concurrently (at most :data:`HEAD_CONCURRENCY` at once), shared per accession by concurrent
callers (:class:`SingleFlight`). Sizes are cached per accession, with the metadata's update
time they were learned under: a re-listing says the size of a file whose
``genestack:file.last-update`` (or ``genestack:dateCreated``) is unchanged, for the life of
the backend, and across mounts when the mount gives the backend a ``memory`` (read for a
whole listing at once, in a worker thread), and across a cluster's nodes when it gives it
``shared`` (``--shared-state``: one HEAD per file and update time for every node).

Times: ``genestack:file.last-update`` or ``genestack:dateCreated`` when present and parseable
(A19), else the HEAD's ``Last-Modified`` when a HEAD was made, else 0.
``version`` is ``<size>-<mtime_ns>``.

Reading: ``GET …/files/{accession}/download`` with one ``Range`` and
``Accept: application/octet-stream``; a 206 must match the range exactly (A23; see
:func:`~remotefs.http.ranges.range_body`). The token travels in ``Genestack-API-Token`` or, for an
OAuth access token, ``Authorization: Bearer``; never both (spec 2.2). ODM documents no rate
limit; a 429's ``Retry-After`` is honoured by :func:`~remotefs.http.send.send` (A24). The client
belongs to the caller; :meth:`aclose` only drops the caches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import trio

from remotefs.backends.base import Memory, SharedValues, read_length
from remotefs.concurrency import SingleFlight, gather_limited
from remotefs.credentials import Secret, as_secret
from remotefs.errors import AccessDenied, NotFound, ProtocolError
from remotefs.http.ranges import range_body, range_header
from remotefs.http.ratelimit import RateLimitState
from remotefs.http.retry import DEFAULT_POLICY, RetryPolicy
from remotefs.http.send import Params, send
from remotefs.http.wire import parse_http_date_ns, parse_iso8601_ns
from remotefs.model import RemoteEntry, compact_json
from remotefs.query import Query, parse_genestack, query_entry, query_of

log = logging.getLogger(__name__)

API = "/api/v1/as-user"
PAGE_LIMIT = 2000
"""The API's maximum ``pageLimit`` (A27): fewest requests per listing."""
PAGE_CONCURRENCY = 8
"""Listing pages fetched at once after the first."""
SHARED_SIZE_SECONDS = 86400.0
"""How long a size learned by HEAD stays in the cluster's store (``--shared-state``); its
key names the metadata update time it was learned under, so a changed file is a new key."""
HEAD_CONCURRENCY = 28
"""HEADs in flight at once while sizing a folder (``ls -l`` of 10,000 files: 10,000 HEADs):
most of the transport's 32 connections, leaving a few for reads meanwhile."""

ROOT_ID = "odm:root"
STUDIES_ID = "odm:studies"
ALL_ID = "odm:all"
STUDY_PREFIX = "odm:study:"
ACCESSION = "genestack:accession"
NAME = "genestack:name"
SIZE_KEYS = ("genestack:file.size", "size")
"""Size keys accepted if a server has them (none is documented, A19)."""
TIME_KEYS = ("genestack:file.last-update", "genestack:dateCreated")
"""Modification time keys, most specific first (A19)."""
STUDY_NAME_KEYS = ("Study Title", NAME)
CONTENTS_SUFFIXES = (".h5", ".h5ad", ".zip", ".gz")
"""Files whose structure ODM can describe (``includeContents``, spec 2.4, A21)."""


@dataclass(frozen=True)
class _Sized:
    size: int
    last_modified_ns: int | None
    stamp: str | None
    """The metadata's update time when the size was learned; a new one invalidates it."""

    def as_json(self) -> list[Any]:
        return [self.size, self.last_modified_ns, self.stamp]

    @classmethod
    def from_json(cls, value: Any) -> _Sized | None:
        """The inverse of :meth:`as_json`; ``None`` for anything malformed."""
        if not isinstance(value, list) or len(value) != 3:
            return None
        size, modified, stamp = value
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return None
        if modified is not None and (isinstance(modified, bool) or not isinstance(modified, int)):
            return None
        if stamp is not None and not isinstance(stamp, str):
            return None
        return cls(size, modified, stamp)


class GenestackBackend:
    """All ODM files visible to one user, by study and all together."""

    xattr_namespace = "odm"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        token: Secret | str,
        bearer: bool,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self._client = client
        self._host = api_url.rstrip("/")
        self._token = as_secret(token)
        self._bearer = bearer
        self._policy = policy
        self._sizes: dict[str, _Sized] = {}
        self._asked_memory: set[str] = set()
        """Accessions whose sizes were looked for in ``memory`` (found or not)."""
        self._head_flights: SingleFlight[str, _Sized | None] = SingleFlight()
        self.api_url = self._host
        self.cache_scope = self._host
        """Where the accessions come from (the host root): keeps the block caches of two
        servers apart. Holds no secret."""
        self.user_key = self._token.fingerprint(f"remotefs user of {self._host}")
        self.root_key = ""
        self.memory: Memory | None = None
        self.shared: SharedValues | None = None
        self.rate_limit: RateLimitState | None = None  # ODM documents none (spec 2.9)

    # --- requests -------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self._bearer:
            return {"Authorization": f"Bearer {self._token.reveal()}"}
        return {"Genestack-API-Token": self._token.reveal()}

    async def _get_json(self, path: str, params: Params | None, kind: str = "listing") -> Any:
        response = await send(
            self._client,
            "GET",
            f"{self._host}{API}{path}",
            headers={**self._auth(), "Accept": "application/json"},
            params=params,
            policy=self._policy,
            kind=kind,
        )
        try:
            return response.json()
        except ValueError:
            raise ProtocolError(f"GET {API}{path}: the answer is not JSON") from None

    async def _paged(
        self, path: str, extra: tuple[tuple[str, str], ...] = ()
    ) -> list[dict[str, Any]]:
        """Every object of a ``ListResponse`` (spec 2.5): first page, then the rest at once.
        ``extra``: more parameters (``filter``, ``query``)."""
        first = await self._get_json(path, [*extra, ("pageLimit", PAGE_LIMIT), ("pageOffset", 0)])
        data, total = _page(first, path)
        offsets = range(PAGE_LIMIT, total, PAGE_LIMIT)

        async def page(offset: int) -> list[dict[str, Any]]:
            body = await self._get_json(
                path, [*extra, ("pageLimit", PAGE_LIMIT), ("pageOffset", offset)]
            )
            return _page(body, path)[0]

        for more in await gather_limited([partial(page, o) for o in offsets], PAGE_CONCURRENCY):
            data.extend(more)
        return data

    # --- Backend protocol -----------------------------------------------------------------

    async def check(self) -> None:
        try:
            await self._get_json("/files", {"pageLimit": 0}, "check")  # A28
        except AccessDenied as exc:
            raise AccessDenied(f"the Genestack token was refused ({exc})") from None

    def root(self) -> RemoteEntry:
        return RemoteEntry(id=ROOT_ID, name="", is_dir=True)

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        if directory.id == ROOT_ID:
            return [
                RemoteEntry(id=STUDIES_ID, name="studies", is_dir=True),
                RemoteEntry(id=ALL_ID, name="all", is_dir=True),
            ]
        if directory.id == STUDIES_ID:
            studies = await self._paged("/studies")
            return [entry for s in studies if (entry := _study_entry(s)) is not None]
        if directory.id == ALL_ID:
            return await self._file_entries(await self._paged("/files"))
        query = query_of(directory)
        if query is not None:  # a query folder: the user's files that match (spec 2.4)
            return await self._file_entries(await self._paged("/files", query.params))
        if directory.id.startswith(STUDY_PREFIX):
            accession = directory.id[len(STUDY_PREFIX) :]
            path = f"/integration/link/files/by/study/{quote(accession, safe='')}"
            files = await self._get_json(path, None)
            if not isinstance(files, list):
                raise ProtocolError(f"GET {API}{path}: expected a JSON array")
            return await self._file_entries(files)
        raise NotFound(f"{directory.id}: not an ODM directory")

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        length = read_length(entry, offset, size)
        if length == 0:
            return b""
        response = await send(
            self._client,
            "GET",
            self._download_url(entry.id),
            headers={
                **self._auth(),
                "Range": range_header(offset, length),
                "Accept": "application/octet-stream",
                "Accept-Encoding": "identity",
            },
            policy=self._policy,
            expected=(200, 206),
            raw=True,
            kind="download",
        )
        return range_body(response, offset, length, entry.size, f"file {entry.id} ({entry.name!r})")

    def queryable(self, directory: RemoteEntry) -> bool:
        """The root and ``all/`` (``GET /files`` searches every file the user sees)."""
        return directory.id in (ROOT_ID, ALL_ID)

    def parse_query(self, text: str) -> Query:
        return parse_genestack(text)

    def query_folder(self, scope: RemoteEntry, query: Query, name: str) -> RemoteEntry:
        return query_entry(scope, query, name)

    def filtered_root(self, root: RemoteEntry, query: Query) -> RemoteEntry:
        return self.query_folder(RemoteEntry(id=ALL_ID, name="all", is_dir=True), query, "")

    def describes_contents(self, entry: RemoteEntry) -> bool:
        return not entry.is_dir and entry.name.lower().endswith(CONTENTS_SUFFIXES)

    async def contents(self, entry: RemoteEntry) -> bytes | None:
        """The structure ODM parsed inside an ``.h5``/``.h5ad``/``.zip``/``.gz`` file
        (``includeContents=true``, A21), as compact JSON; ``None`` when it has none."""
        path = f"/files/{quote(entry.id, safe='')}"
        body = await self._get_json(path, [("includeContents", "true")], "other")
        value = body.get("contents") if isinstance(body, dict) else None
        return None if value is None else compact_json(value)

    def derive_key(self, purpose: str) -> bytes:
        return self._token.derive_key(f"{purpose} of {self._host}")

    def reachable_without_api(self, entry: RemoteEntry) -> bool:
        return True  # a download is one request, with no budget of its own (spec 2.9)

    async def aclose(self) -> None:
        self._sizes.clear()

    # --- entries and sizes ----------------------------------------------------------------

    def _download_url(self, accession: str) -> str:
        return f"{self._host}{API}/files/{quote(accession, safe='')}/download"

    async def _file_entries(self, objects: list[Any]) -> list[RemoteEntry]:
        """Entries for metadata objects, in order: sized when the metadata or memory says
        the size, else not (no HEAD here)."""
        files = []
        for obj in objects:
            if (
                isinstance(obj, dict)
                and isinstance(obj.get(ACCESSION), str)
                and obj[ACCESSION]
                and isinstance(obj.get(NAME), str)
            ):
                files.append(obj)
            else:
                log.warning("skipping an ODM object without an accession or name: %.200r", obj)
        if self.memory is not None:
            await self._recall_sizes(files)
        return [_file_entry(obj, self._known_size(obj)) for obj in files]

    async def sized(self, entries: Sequence[RemoteEntry]) -> list[RemoteEntry | None]:
        objects = {e.id: e.record for e in entries if not e.sized}
        if self.memory is not None and objects:
            await self._recall_sizes(list(objects.values()))

        async def one(entry: RemoteEntry) -> RemoteEntry | None:
            if entry.sized:
                return entry
            obj = objects[entry.id]
            info = await self._size_of(obj)
            if info is None:
                return None
            mtime = _metadata_mtime_ns(obj) or info.last_modified_ns or 0
            version = f"{info.size}-{mtime}"  # as _file_entry, its records reused as they are
            return replace(entry, size=info.size, sized=True, mtime_ns=mtime, version=version)

        if len(entries) == 1:  # a lookup's, or a walk's worker's: no nursery for one
            return [await one(entries[0])]
        return await gather_limited([partial(one, e) for e in entries], HEAD_CONCURRENCY)

    def _known_size(self, obj: Mapping[str, Any]) -> _Sized | None:
        """The size the metadata says, or one learned under the same update time."""
        stamp = _stamp(obj)
        for key in SIZE_KEYS:
            value = obj.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return _Sized(value, None, stamp)
        cached = self._sizes.get(obj[ACCESSION])
        return cached if cached is not None and cached.stamp == stamp else None

    async def _recall_sizes(self, files: list[dict[str, Any]]) -> None:
        """Sizes a previous mount learned (by HEAD) for ``files``, into memory: one
        worker-thread read for the whole listing, before any HEAD is sent."""
        assert self.memory is not None
        wanted = [
            f[ACCESSION]
            for f in files
            if f[ACCESSION] not in self._sizes and f[ACCESSION] not in self._asked_memory
        ]
        if not wanted:
            return
        self._asked_memory.update(wanted)  # what memory does not hold, it will not later
        for accession, value in (
            await trio.to_thread.run_sync(self.memory.load_values, wanted)
        ).items():
            sized = _Sized.from_json(value)
            if sized is not None:
                self._sizes[accession] = sized

    async def _size_of(self, obj: Mapping[str, Any]) -> _Sized | None:
        """The file's size from its metadata, the cache, or a HEAD; ``None``: it is gone."""
        known = self._known_size(obj)
        if known is not None:
            return known
        stamp, accession = _stamp(obj), obj[ACCESSION]

        async def head() -> _Sized | None:
            current = self._sizes.get(accession)
            if current is not None and current.stamp == stamp:
                return current
            if self.shared is None:
                info = await ask()
            else:  # one HEAD per file (and metadata update) for the whole cluster
                info = await self.shared.fetch(
                    "size",
                    f"{accession}\n{stamp}",
                    ask,
                    encode=lambda info: json.dumps(info.as_json() if info else None).encode(),
                    decode=partial(_shared_size, stamp),
                    ttl=lambda info: SHARED_SIZE_SECONDS if info is not None else 0.0,
                )
            if info is not None:
                self._sizes[accession] = info
                if self.memory is not None:
                    self.memory.remember_value(accession, info.as_json())
            return info

        async def ask() -> _Sized | None:
            try:
                response = await send(
                    self._client,
                    "HEAD",
                    self._download_url(accession),
                    headers=self._auth(),  # the client sets no Accept on HEAD (spec 2.3)
                    policy=self._policy,
                    kind="head",
                )
            except NotFound:
                log.debug("%s: listed but gone by its HEAD; not shown", accession)
                return None
            length = response.headers.get("content-length", "")
            if not length.strip().isdigit():
                raise ProtocolError(f"HEAD of file {accession}: no Content-Length (A20)")
            return _Sized(
                int(length), parse_http_date_ns(response.headers.get("last-modified")), stamp
            )

        return await self._head_flights.run(accession, head)


# --- pure helpers ---------------------------------------------------------------------------


def _shared_size(stamp: str | None, value: bytes) -> _Sized:
    """A size from the cluster's store; ``ValueError`` unless it is one, learned under
    ``stamp``."""
    sized = _Sized.from_json(json.loads(value))
    if sized is None or sized.stamp != stamp:
        raise ValueError("not a size")
    return sized


def _page(body: Any, path: str) -> tuple[list[dict[str, Any]], int]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ProtocolError(f"GET {API}{path}: not a ListResponse")
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    total = pagination.get("total") if isinstance(pagination, dict) else None
    if isinstance(total, bool) or not isinstance(total, int):
        total = len(data)  # no total: this page is all there is
    return list(data), total


def _stamp(obj: Mapping[str, Any]) -> str | None:
    for key in TIME_KEYS:
        value = obj.get(key)
        if value is not None:
            return str(value)
    return None


def _metadata_mtime_ns(obj: Mapping[str, Any]) -> int | None:
    for key in TIME_KEYS:
        parsed = parse_iso8601_ns(obj.get(key))
        if parsed is not None:
            return parsed
    return None


def _file_entry(obj: Mapping[str, Any], info: _Sized | None) -> RemoteEntry:
    """The entry of a file; not ``sized`` when ``info`` is ``None``."""
    if info is None:
        mtime = _metadata_mtime_ns(obj) or 0
        size, version = 0, f"?-{mtime}"
    else:
        mtime = _metadata_mtime_ns(obj) or info.last_modified_ns or 0
        size, version = info.size, f"{info.size}-{mtime}"
    return RemoteEntry(
        id=obj[ACCESSION],
        name=obj[NAME],
        is_dir=False,
        size=size,
        sized=info is not None,
        mtime_ns=mtime,
        version=version,
        record_json=compact_json(obj),
        metadata_json=compact_json({k: v for k, v in obj.items() if k not in (ACCESSION, NAME)}),
    )


def _study_entry(study: Any) -> RemoteEntry | None:
    accession = study.get(ACCESSION) if isinstance(study, dict) else None
    if not isinstance(accession, str) or not accession:
        log.warning("skipping a study without an accession: %.200r", study)
        return None
    title = next(
        (str(study[k]) for k in STUDY_NAME_KEYS if isinstance(study.get(k), str) and study[k]),
        accession,
    )
    mtime = _metadata_mtime_ns(study) or 0
    return RemoteEntry(
        id=STUDY_PREFIX + accession,
        name=f"{title} [{accession}]",
        is_dir=True,
        mtime_ns=mtime,
        version=f"0-{mtime}",
        record_json=compact_json(study),
        metadata_json=compact_json({k: v for k, v in study.items() if k not in (ACCESSION, NAME)}),
    )
