"""The protocol every platform backend implements, and nothing more.

The filesystem core calls only these methods; it never knows which platform it serves, and a
backend never knows about FUSE. All methods are trio-async and raise only
:mod:`remotefs.errors` exceptions (``NotFound``, ``AccessDenied``, ``Transient``,
``ProtocolError``) for remote failures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from remotefs.http.ratelimit import RateLimitState
from remotefs.model import RemoteEntry
from remotefs.query import Query

T = TypeVar("T")


class Memory(Protocol):
    """Small JSON values a backend keeps across mounts (ODM sizes), in the endpoint's cache
    directory (:class:`remotefs.cache.records.RecordStore`)."""

    def load_values(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values remembered under ``keys`` (blocking: call from a worker thread)."""
        ...

    def remember_value(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` (queued; does not block)."""
        ...


class SharedValues(Protocol):
    """Values one node computes for every mount of the same token in a cluster
    (``--shared-state``, :class:`remotefs.shared.SharedState`): listings, signed URLs, sizes."""

    async def fetch(
        self,
        kind: str,
        name: str,
        compute: Callable[[], Awaitable[T]],
        *,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        ttl: Callable[[T], float],
    ) -> T:
        """The stored value of ``kind``/``name`` (``decode``d; ``ValueError``: replaced), or
        ``compute()``'s, computed by one node while the others wait, and kept ``ttl(value)``
        seconds (0: not kept). Never fails for the store's sake: alone, it computes."""
        ...


class Backend(Protocol):
    xattr_namespace: str
    """``sbg`` or ``odm``: metadata is served as ``user.<xattr_namespace>.<key>``."""
    cache_scope: str
    """The endpoint the IDs belong to: cached bytes are kept per platform and scope."""
    api_url: str
    """The API's base URL (holds no secret): the mount keeps connections to it open."""
    user_key: str
    """A keyed hash of the credentials (never the token): what a user's listings are kept
    under in the record cache, so that two tokens never see each other's folders."""

    async def check(self) -> None:
        """Verify the credentials and the target (project…) before mounting.

        Raises:
            AccessDenied: the token is refused. NotFound: the project does not exist.
            Transient: the platform cannot be reached.
        """
        ...

    def root(self) -> RemoteEntry:
        """The entry of the mount's root directory (after :meth:`check`)."""
        ...

    rate_limit: RateLimitState | None
    """The platform's request budget as last seen (SB), for ``remotefs status``."""
    memory: Memory | None
    """Where the backend keeps small values across mounts (ODM sizes); set by the mount
    once the endpoint's cache directory is open (``None``: nothing is kept)."""
    shared: SharedValues | None
    """The cluster's shared values (signed URLs, sizes), set by the mount with
    ``--shared-state`` (``None``: each mount asks for its own)."""
    root_key: str
    """What names the root among this user's mounts of the endpoint (the SB project, or
    ``""``): a remount that cannot reach the platform starts from the root remembered
    under it."""

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        """All children of ``directory``, every page fetched; a size the listing does not
        say and nothing remembers is left unknown (``sized`` false: no request per file)."""
        ...

    async def sized(self, entries: Sequence[RemoteEntry]) -> list[RemoteEntry | None]:
        """``entries`` with their sizes known (concurrently; an entry already sized is
        returned as it is); ``None`` for a file that is gone."""
        ...

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        """Exactly ``min(size, entry.size - offset)`` bytes of ``entry`` from ``offset``.

        Raises ``ProtocolError`` rather than returning fewer or other bytes.
        """
        ...

    def queryable(self, directory: RemoteEntry) -> bool:
        """Whether ``directory`` offers ``.query/`` (the platform can filter its files)."""
        ...

    def parse_query(self, text: str) -> Query:
        """A query folder's name, parsed; ``InvalidQuery`` if malformed (``remotefs.query``)."""
        ...

    def query_folder(self, scope: RemoteEntry, query: Query, name: str) -> RemoteEntry:
        """The entry of a query folder over ``scope``; ``list_dir`` of it runs the query."""
        ...

    def filtered_root(self, root: RemoteEntry, query: Query) -> RemoteEntry:
        """The root of a mount of ``query``'s files only (``--filter``, ``--query``).

        Raises:
            InvalidQuery: the mount's root cannot be filtered (SB without ``--project``)."""
        ...

    def describes_contents(self, entry: RemoteEntry) -> bool:
        """Whether the platform can describe ``entry``'s insides (``user.odm.contents``)."""
        ...

    async def contents(self, entry: RemoteEntry) -> bytes | None:
        """That description, as JSON (one request); ``None`` when there is none."""
        ...

    def derive_key(self, purpose: str) -> bytes:
        """A 256-bit key derived from the credentials and the endpoint for ``purpose``: what
        seals this user's values in a cluster's shared store (never the token itself)."""
        ...

    def reachable_without_api(self, entry: RemoteEntry) -> bool:
        """Whether reading ``entry``'s bytes now costs no API request (SB: a signed URL is
        known and valid; ODM: always). What a sniffer may read (``fs.callers``)."""
        ...

    async def aclose(self) -> None: ...


def read_length(entry: RemoteEntry, offset: int, size: int) -> int:
    """How many bytes a ``read(entry, offset, size)`` returns (0: nothing to fetch)."""
    if offset < 0 or size < 0:
        raise ValueError(f"read of {size} bytes at {offset}")
    return max(0, min(size, entry.size - offset))
