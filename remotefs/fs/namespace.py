"""The directory tree as the kernel sees it: inodes, lazy listings, name lookups.

- **Inodes**: one per remote ID for the life of the mount, allocated from a counter and never
  reused (``forget`` does not free them: the kernel may hold an inode number as long as it
  likes, and a number that meant another file would be a silent data bug). The same ID seen
  in two directories (ODM ``all/`` and ``studies/…``) is one inode.
- **Listings** are fetched on the first ``lookup``/``opendir`` of a directory and kept for
  ``ttl`` seconds. One fetch at a time per directory: concurrent callers wait on the same
  :class:`trio.Event` and share its result (or its error), never issuing a second request.
- **Negative lookups** are answered from a fresh listing with no network call: htslib probes
  ``X.bam.csi`` on every open and file managers probe ``.hidden``; both are ENOENT from memory.
- **Names** are mapped per directory by :func:`remotefs.fs.names.posix_names`.

Invariant between awaits: ``_listings[inode]`` is replaced whole, never mutated, so a
``readdir`` that holds an old :class:`Listing` keeps stable offsets while a refresh runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from remotefs.backends.base import Backend
from remotefs.errors import NotFound
from remotefs.fs.names import posix_names
from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

ROOT_INODE = 1  # pyfuse3.ROOT_INODE; kept here so the core has no pyfuse3 import


@dataclass(slots=True)
class Node:
    inode: int
    entry: RemoteEntry


@dataclass(frozen=True, slots=True)
class Listing:
    """One directory's children at one moment: POSIX name → inode, in listing order."""

    names: tuple[bytes, ...]
    inodes: tuple[int, ...]
    by_name: dict[bytes, int]
    fetched_at: float


@dataclass(slots=True)
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


class Namespace:
    def __init__(self, backend: Backend, *, ttl: float) -> None:
        self.backend = backend
        self.ttl = ttl
        root = backend.root()
        self._nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT_INODE, root)}
        self._inode_by_id: dict[str, int] = {root.id: ROOT_INODE}
        self._next_inode = ROOT_INODE + 1
        self._listings: dict[int, Listing] = {}
        self._fetches: dict[int, _Fetch] = {}

    def node(self, inode: int) -> Node:
        try:
            return self._nodes[inode]
        except KeyError:
            raise NotFound(f"inode {inode}") from None

    def _intern(self, entry: RemoteEntry) -> int:
        inode = self._inode_by_id.get(entry.id)
        if inode is None:
            inode = self._next_inode
            self._next_inode += 1
            self._inode_by_id[entry.id] = inode
            self._nodes[inode] = Node(inode, entry)
        else:
            self._nodes[inode].entry = entry  # newest record (size, version) wins
        return inode

    def cached_listing(self, inode: int) -> Listing | None:
        listing = self._listings.get(inode)
        if listing is not None and trio.current_time() - listing.fetched_at < self.ttl:
            return listing
        return None

    async def listing(self, inode: int) -> Listing:
        """The fresh listing of directory ``inode``, fetching it if needed (single-flight)."""
        while True:
            listing = self.cached_listing(inode)
            if listing is not None:
                return listing
            fetch = self._fetches.get(inode)
            if fetch is None:
                break
            await fetch.done.wait()
            if fetch.error is not None:
                raise fetch.error
        fetch = self._fetches[inode] = _Fetch()
        try:
            listing = await self._fetch(inode)
        except BaseException as exc:
            fetch.error = exc
            raise
        finally:
            del self._fetches[inode]
            fetch.done.set()
        return listing

    async def _fetch(self, inode: int) -> Listing:
        node = self.node(inode)
        if not node.entry.is_dir:
            raise NotFound(f"{node.entry.name} is not a directory")
        entries = await self.backend.list_dir(node.entry)
        names = posix_names([(e.id, e.name) for e in entries])
        inodes = tuple(self._intern(e) for e in entries)
        listing = Listing(
            tuple(names), inodes, dict(zip(names, inodes, strict=True)), trio.current_time()
        )
        self._listings[inode] = listing
        log.debug("listed %s: %d entries", node.entry.id, len(entries))
        return listing

    async def lookup(self, parent: int, name: bytes) -> Node:
        listing = await self.listing(parent)
        inode = listing.by_name.get(name)
        if inode is None:
            raise NotFound(name.decode("utf-8", "backslashreplace"))
        return self._nodes[inode]
