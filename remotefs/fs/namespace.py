"""The directory tree as the kernel sees it: inodes, lazy listings, name lookups.

- **Inodes**: one per remote ID for the life of the mount, allocated from a counter and never
  reused (``forget`` does not free them: the kernel may hold an inode number as long as it
  likes, and a number that meant another file would be a silent data bug). The same ID seen
  in two directories (ODM ``all/`` and ``studies/…``) is one inode.
- **Listings** are fetched on the first ``lookup``/``opendir`` of a directory and trusted for
  ``ttl`` seconds. One fetch at a time per directory (:class:`~remotefs.concurrency.SingleFlight`):
  concurrent callers share its outcome, never its cancellation or deadline.
- **Stale but served**: once a listing has expired, the next caller starts a refresh in the
  background (a task of the namespace's nursery registers and leads it before the caller
  goes on: the full operation timeout, owned by no caller) and waits for it at most
  ``STALE_GRACE`` seconds. If the refresh fails (unreachable, 5xx, 429, a malformed
  answer, the deadline) or is still running, the old listing is served, and the folder's
  files keep their cached bytes. One WARNING per folder says so, and while that folder's
  refreshes keep failing its callers get the old listing at once; the first refresh that
  succeeds replaces it (INFO). A folder the platform says is gone (404) or forbidden (403)
  is not served stale: those are answers, not failures; the old listing is dropped and the
  next caller gets ENOENT/EACCES. A refresh that fails unexpectedly (a bug, an answer no
  parser foresaw) is logged with its traceback and counts as a failed refresh.
- **Remembered across mounts** (``records``, optional): every fetched listing is written to
  the record store; a folder's first use in a mount recalls it from there (one worker-thread
  read), with its real age, so a remount within ``ttl`` costs no listing request, and a
  remount while the platform is unreachable serves what the last mount listed.
- **Sizes when asked**: a listing that does not say its files' sizes (ODM) installs them
  unsized; :meth:`Namespace.sized` asks for one when something needs its attributes, and
  once a walk shows (``WALK_AFTER`` files of one folder) asks for the folder's others
  ahead of it, in listing order, within an allowance that grows with the walk. A node's
  entry never goes back from sized to unsized for the same record.
- **Shared by a cluster** (``shared``, ``--shared-state``): a listing is fetched by one
  node of the cluster and stored (sealed) for what remains of its ``ttl``; the other nodes
  install it with its real age, so that every node's copy expires at once.
- **A folder that just failed to list** for lack of time (with no listing to serve) fails
  again at once for a moment (:class:`~remotefs.concurrency.RecentFailures`): the kernel
  queues concurrent lookups of one name behind the one it sent, and each would otherwise
  wait a whole deadline of its own after the first.
- **Negative lookups** are answered from the listing with no network call: htslib probes
  ``X.bam.csi`` on every open and file managers probe ``.hidden``; both are ENOENT from memory.
- **Names** are mapped per directory by :func:`remotefs.fs.names.posix_names`.

Invariant between awaits: ``_listings[inode]`` is replaced whole, never mutated, so a
``readdir`` that holds an old :class:`Listing` keeps stable offsets while a refresh runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from remotefs.backends.base import Backend, SharedValues
from remotefs.cache.records import RecordStore, decode_entry, encode_entry
from remotefs.concurrency import RecentFailures, SingleFlight, before_the_deadline
from remotefs.errors import (
    AccessDenied,
    DeadlineExceeded,
    InvalidQuery,
    NotADirectory,
    NotFound,
    RemoteError,
    Stale,
)
from remotefs.fs.names import posix_names
from remotefs.model import RemoteEntry
from remotefs.query import QUERY_DIR, QUERY_PREFIX, QUERY_ROOT_PREFIX, queries_entry

log = logging.getLogger(__name__)

ROOT_INODE = 1  # pyfuse3.ROOT_INODE; kept here so the core has no pyfuse3 import

_QUERY_NAME = QUERY_DIR.encode()
_QUERY_NAMES = frozenset({QUERY_DIR})

WALK_AFTER = 4
"""Files of one folder sized one by one before their sizing looks like a walk."""
WALK_AHEAD = 32
"""Sizes asked for ahead of a walk once it is seen (see :meth:`Namespace.sized`)."""
WALK_WORKERS = 32
"""Sizes asked for at once ahead of a walk: the transport's 32 connections. A read or a
lookup meanwhile waits for one ``HEAD`` at most (the transport's limiter is first come,
first served), and ``ls -l`` of 3,000 unsized ODM files took 6% less time than with 28."""
WALK_IDLE_SECONDS = 2.0
"""A walk that asks for nothing for this long is over: no more sizes are asked for."""
STALE_GRACE = 2.0
"""Seconds a caller holding an expired listing waits for its refresh before the old one is
served: long enough for a healthy platform to answer (a 2,000-entry folder lists in 0.25 s
at 40 ms), short enough that an unreachable one costs a file manager little."""
_ANSWERS = (NotFound, AccessDenied, Stale)
"""Outcomes of a refresh that are the platform's answer about the folder: never hidden
behind a stale listing."""


@dataclass(slots=True)
class _Walk:
    """A walk over one folder's unsized files (``ls -l``): what it asked, what may be
    asked for ahead of it, what was."""

    asked: set[int] = field(default_factory=set)
    last: float = 0.0
    """``trio.current_time()`` of the last ask."""
    allowance: int = 0
    issued: int = 0
    running: bool = False
    more: trio.Event = field(default_factory=trio.Event)


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
    """``trio.current_time()`` of the fetch (in the past for a recalled listing)."""


class Namespace:
    def __init__(
        self,
        backend: Backend,
        root: RemoteEntry,
        *,
        ttl: float,
        timeout: float,
        records: RecordStore | None = None,
        shared: SharedValues | None = None,
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self.timeout = timeout
        self._records = records
        self._shared = shared
        self._nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT_INODE, root)}
        self._inode_by_id: dict[str, int] = {root.id: ROOT_INODE}
        self._next_inode = ROOT_INODE + 1
        self._listings: dict[int, Listing] = {}
        self._fetches: SingleFlight[int, Listing] = SingleFlight()
        self._recent_failures: RecentFailures[int] = RecentFailures()
        self._recalls: SingleFlight[int, Listing | None] = SingleFlight()
        self._recalled: set[int] = set()
        self._failing: set[int] = set()  # folders whose last refresh failed (WARNING said)
        self._nursery: trio.Nursery | None = None
        self._unsized_in: dict[int, int] = {}  # a file whose size is unknown → its folder
        self._walks: dict[int, _Walk] = {}  # folders whose sizes are asked for ahead
        self._ahead_of: dict[int, int] = {}  # a file sized ahead of a walk → its folder

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background refreshes until cancelled (without it, refreshes run in the
        caller, and an expired listing is served only if that refresh fails)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- nodes ----------------------------------------------------------------------------

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
            node = self._nodes[inode]
            # newest record (size, version) wins, except that a listing which does not say
            # a size does not forget the one learned for the same record; and a new record
            # whose size is not known yet is shown with the old size meanwhile (the kernel
            # applies listed attributes to an inode a reader may have open: never 0 there)
            if entry.sized:
                node.entry = entry
            elif not (node.entry.sized and entry.record_json == node.entry.record_json):
                node.entry = dataclasses.replace(entry, size=node.entry.size)
        return inode

    # --- listings -------------------------------------------------------------------------

    def cached_listing(self, inode: int) -> Listing | None:
        """The listing held in memory, whatever its age (for hints, never for answers)."""
        return self._listings.get(inode)

    def _fresh(self, listing: Listing) -> bool:
        return trio.current_time() - listing.fetched_at < self.ttl

    async def listing(self, inode: int) -> Listing:
        """The listing of directory ``inode``: fresh, fetched, or (see the module docstring)
        stale when a refresh fails."""
        held = await self._held(inode)
        if held is not None and self._fresh(held):
            return held
        if held is None:
            if not self._fetches.running(inode):  # else: join the flight that is running
                self._recent_failures.check(inode)  # lookups queued behind a failure
            try:
                with before_the_deadline(lambda: f"{self._name(inode)}: no listing in time"):
                    return await self._fetches.run(inode, partial(self._fetch, inode))
            except RemoteError as exc:
                self._recent_failures.note(inode, exc)
                raise
        return await self._refresh_or_stale(inode, held)

    async def _held(self, inode: int) -> Listing | None:
        held = self._listings.get(inode)
        if held is not None or self._records is None or inode in self._recalled:
            return held
        return await self._recalls.run(inode, partial(self._recall, inode))

    async def _recall(self, inode: int) -> Listing | None:
        """The listing the record store holds for ``inode``, installed with its real age."""
        assert self._records is not None
        entry = self.node(inode).entry
        saved = await trio.to_thread.run_sync(self._records.load_listing, entry.id)
        self._recalled.add(inode)
        if saved is None or inode in self._listings:  # a fetch landed meanwhile: newer
            return self._listings.get(inode)
        log.debug("recalled the listing of %s (%.0f s old)", entry.id, saved.age)
        return self._install(inode, saved.entries, trio.current_time() - saved.age)

    async def _refresh_or_stale(self, inode: int, stale: Listing) -> Listing:
        if self._nursery is not None and not self._fetches.running(inode):
            # The background task registers and leads the flight before we go on: the
            # refresh is its own (full timeout), never this caller's.
            await self._nursery.start(self._refresh, inode)
        if inode in self._failing and self._nursery is not None:
            return stale  # its refreshes keep failing: do not make every caller wait
        remaining = trio.current_effective_deadline() - trio.current_time()
        grace = STALE_GRACE if self._nursery is not None else math.inf
        try:
            with trio.move_on_after(min(grace, max(0.0, remaining - 0.5))):
                return await self._fetches.run(inode, partial(self._fetch, inode))
        except _ANSWERS:
            raise
        except DeadlineExceeded:
            pass  # this caller's own patience (it led after the refresh was abandoned)
        except RemoteError as exc:
            self._refresh_failed(inode, str(exc))
        return stale

    async def _refresh(
        self, inode: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """A background refresh, under the full operation timeout. Whatever happens stays
        here: a failure is logged (and the old listing served), an answer (the folder is
        gone, or forbidden) drops the old listing, so that the next caller hears it."""
        with trio.move_on_after(self.timeout) as scope:
            try:
                await self._fetches.run(inode, partial(self._fetch, inode), task_status=task_status)
            except _ANSWERS as exc:
                log.info("%s: %s; its old listing is dropped", self._name(inode), exc)
                self._failing.discard(inode)
                self._listings.pop(inode, None)
            except RemoteError as exc:
                self._refresh_failed(inode, str(exc))
            except Exception as exc:  # a bug, or an answer no parser foresaw: never fatal
                log.exception("%s: refreshing its listing failed unexpectedly", self._name(inode))
                self._refresh_failed(inode, f"{type(exc).__name__}: {exc}")
        if scope.cancelled_caught:
            self._refresh_failed(inode, f"no answer within {self.timeout:.0f} s")

    def _name(self, inode: int) -> str:
        entry = self.node(inode).entry
        return f"folder {entry.name!r} ({entry.id})"

    def _refresh_failed(self, inode: int, reason: str) -> None:
        if inode in self._failing:
            return
        self._failing.add(inode)
        listing = self._listings.get(inode)
        age = trio.current_time() - listing.fetched_at if listing else 0.0
        entry = self.node(inode).entry
        log.warning(
            "folder %r (%s): the listing could not be refreshed (%s); serving the one from "
            "%.0f s ago until the platform answers",
            entry.name,
            entry.id,
            reason,
            age,
        )

    async def _fetch(self, inode: int) -> Listing:
        node = self.node(inode)
        if not node.entry.is_dir:
            raise NotADirectory(f"{node.entry.name} is not a directory")
        if node.entry.id.startswith(QUERY_ROOT_PREFIX):  # .query/ lists nothing, asks nothing
            return self._install(inode, [], trio.current_time())
        if self._shared is None:
            entries = await self.backend.list_dir(node.entry)
            age = 0.0
        else:  # one node of the cluster lists it; the others install its listing
            listed_at, entries = await self._shared.fetch(
                "listing",
                node.entry.id,
                partial(self._list_now, node.entry),
                encode=_encode_listing,
                decode=_decode_listing,
                ttl=lambda listed: self.ttl - (time.time() - listed[0]),
            )
            age = max(0.0, time.time() - listed_at)
        listing = self._install(inode, entries, trio.current_time() - age)
        if self._records is not None:
            self._records.remember_listing(node.entry.id, entries)
        if inode in self._failing:
            self._failing.discard(inode)
            log.info("folder %r (%s): listing refreshed", node.entry.name, node.entry.id)
        log.debug("listed %s: %d entries", node.entry.id, len(entries))
        return listing

    async def _list_now(self, entry: RemoteEntry) -> tuple[float, list[RemoteEntry]]:
        return time.time(), await self.backend.list_dir(entry)

    def _queryable(self, entry: RemoteEntry) -> bool:
        """Whether ``entry`` offers ``.query/``: never a query folder or ``.query`` itself
        (no ``.query/.query/…``, no query of a query), else as the backend says."""
        if entry.id.startswith((QUERY_ROOT_PREFIX, QUERY_PREFIX)):
            return False
        return self.backend.queryable(entry)

    def _install(self, inode: int, entries: list[RemoteEntry], fetched_at: float) -> Listing:
        reserved = _QUERY_NAMES if self._queryable(self.node(inode).entry) else frozenset()
        names = posix_names([(e.id, e.name) for e in entries], reserved)
        inodes = tuple(self._intern(e) for e in entries)
        listing = Listing(tuple(names), inodes, dict(zip(names, inodes, strict=True)), fetched_at)
        self._listings[inode] = listing
        for child in inodes:
            if not self._nodes[child].entry.sized:
                self._unsized_in[child] = inode
        return listing

    # --- sizes (ODM lists none: A19) ------------------------------------------------------

    async def sized(
        self, inode: int, companions: Sequence[int] = (), folder: int | None = None
    ) -> Node:
        """``inode``'s node with its size known: asked for now if the listing did not say
        it; its ``companions`` (a BAM's index: what its reader opens next) at the same time,
        in the background, whose failures are theirs. ``folder``: where it was looked up
        (else the folder that listed it last). ``NotFound``: it is gone.

        The ``WALK_AFTER``-th file of one folder sized this way, each within
        ``WALK_IDLE_SECONDS`` of the last, looks like a walk (``ls -l``, a file manager):
        from then on the folder's other sizes are asked for ahead, in listing order,
        ``WALK_AHEAD`` plus two for every file the walk has looked at (so a ``stat`` costs
        one HEAD, and a walk of the whole folder keeps the HEADs' concurrency busy without
        sizing much more than it looks at)."""
        node = self.node(inode)
        if node.entry.sized:
            return node
        self._walked(inode, folder)
        others = [c for c in companions if c != inode and not self.node(c).entry.sized]
        if others and self._nursery is not None:
            self._nursery.start_soon(self._size_quietly, others)
        [entry] = await self.backend.sized([node.entry])
        if entry is None:
            raise NotFound(f"{node.entry.name} (gone since it was listed)")
        self._learned(inode, entry)
        return node

    def _learned(self, inode: int, entry: RemoteEntry) -> None:
        """A size learned for ``entry``: kept unless a newer record came meanwhile (that one
        is sized on its own)."""
        node = self._nodes[inode]
        if not node.entry.sized and node.entry.record_json == entry.record_json:
            node.entry = entry
            self._unsized_in.pop(inode, None)

    async def _size_quietly(self, inodes: list[int]) -> None:
        """Sizes nobody waits for (a BAM's index, at the BAM's lookup): a failure is the
        index's own lookup's to report."""
        with trio.move_on_after(self.timeout):
            try:
                answers = await self.backend.sized([self._nodes[i].entry for i in inodes])
            except RemoteError as exc:
                log.debug("sizing %d companion file(s) failed: %s", len(inodes), exc)
                return
            except Exception:  # a bug, or an answer no parser foresaw: never fatal
                log.exception("sizing companion files failed unexpectedly")
                return
            for inode, entry in zip(inodes, answers, strict=True):
                if entry is not None:
                    self._learned(inode, entry)

    def _walked(self, inode: int, folder: int | None) -> None:
        if folder is None:
            folder = self._unsized_in.get(inode)
        if folder is None or self._nursery is None:
            return
        walk = self._walks.get(folder)
        now = trio.current_time()
        if walk is None or (not walk.running and now - walk.last > WALK_IDLE_SECONDS):
            walk = self._walks[folder] = _Walk()  # asks far apart are no walk
        walk.last = now
        walk.asked.add(inode)
        if len(walk.asked) < WALK_AFTER:
            return
        walk.allowance = WALK_AHEAD + 2 * len(walk.asked)
        walk.more.set()
        if not walk.running:
            walk.running = True
            self._nursery.start_soon(self._size_ahead, folder, walk)

    def looked_up(self, inode: int) -> None:
        """A lookup answered from memory: if a walk sized ``inode`` ahead of it, the walk
        goes on (its allowance grows with every file it looks at)."""
        folder = self._ahead_of.pop(inode, None)
        walk = self._walks.get(folder) if folder is not None else None
        if walk is not None:
            walk.asked.add(inode)
            walk.allowance = WALK_AHEAD + 2 * len(walk.asked)
            walk.more.set()

    async def _size_ahead(self, folder: int, walk: _Walk) -> None:
        """Size ``folder``'s files ahead of a walk, in listing order (``ls`` stats them as
        ``getdents`` gives them, and sorts afterwards), within its allowance,
        ``WALK_WORKERS`` at a time; ends when everything is sized or the walk has looked at
        nothing for ``WALK_IDLE_SECONDS``. A file that cannot be sized is left to its own
        lookup, which asks again (and reports)."""
        listing = self._listings.get(folder)
        order = iter(listing.inodes if listing is not None else ())

        async def worker() -> None:
            for child in order:
                node = self._nodes[child]
                if node.entry.sized:
                    continue
                while walk.issued >= walk.allowance:
                    walk.more = trio.Event() if walk.more.is_set() else walk.more
                    with trio.move_on_after(WALK_IDLE_SECONDS) as idle:
                        await walk.more.wait()
                    if idle.cancelled_caught:
                        return
                walk.issued += 1
                with trio.move_on_after(self.timeout):
                    try:
                        [entry] = await self.backend.sized([node.entry])
                    except RemoteError as exc:  # this file's lookup will ask (and say) again
                        log.debug("sizing %s ahead of a walk failed: %s", node.entry.id, exc)
                        continue
                    if entry is not None:
                        self._learned(child, entry)
                        self._ahead_of[child] = folder

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(WALK_WORKERS):
                    nursery.start_soon(worker)
        except* Exception:  # a bug, or an answer no parser foresaw: never fatal
            log.exception("sizing the files of folder %d failed unexpectedly", folder)
        finally:
            walk.running = False
            self._walks.pop(folder, None)
            self._ahead_of = {k: v for k, v in self._ahead_of.items() if v != folder}

    def _query_node(self, queries: RemoteEntry, name: bytes) -> Node:
        """``.query/NAME``: the folder of the query NAME spells over the folder that holds
        ``.query`` (parsed here: a malformed one is EINVAL, with no request)."""
        scope = self.node(self._inode_by_id[queries.id[len(QUERY_ROOT_PREFIX) :]]).entry
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:  # no platform query can hold it: malformed, as any other
            text = name.decode("utf-8", "backslashreplace")
            log.warning("query %r under %r: not UTF-8 (EINVAL)", text, scope.name or "/")
            raise InvalidQuery(f"{text!r}: a query name must be UTF-8") from None
        try:
            query = self.backend.parse_query(text)
        except InvalidQuery as exc:
            log.warning("query %r under %r: %s (EINVAL)", text, scope.name or "/", exc)
            raise
        return self._nodes[self._intern(self.backend.query_folder(scope, query, text))]

    def known_files(self, inode: int, limit: int = 1_000_000) -> list[RemoteEntry]:
        """The files below folder ``inode`` that listings in memory know of (no fetch)."""
        files: list[RemoteEntry] = []
        seen, todo = {inode}, [inode]
        while todo and len(files) < limit:
            listing = self._listings.get(todo.pop())
            for child in listing.inodes if listing is not None else ():
                if child in seen:
                    continue
                seen.add(child)
                entry = self._nodes[child].entry
                if entry.is_dir:
                    todo.append(child)
                else:
                    files.append(entry)
        return files

    async def lookup(self, parent: int, name: bytes) -> Node:
        scope = self.node(parent).entry
        if name == _QUERY_NAME and self._queryable(scope):
            return self._nodes[self._intern(queries_entry(scope))]
        if scope.id.startswith(QUERY_ROOT_PREFIX):
            if name == _QUERY_NAME:  # .query/.query: no query folder offers queries
                raise NotFound(QUERY_DIR)
            return self._query_node(scope, name)
        listing = await self.listing(parent)
        inode = listing.by_name.get(name)
        if inode is None:
            raise NotFound(name.decode("utf-8", "backslashreplace"))
        return self._nodes[inode]


def _encode_listing(listed: tuple[float, list[RemoteEntry]]) -> bytes:
    """A listing for the cluster's store: when it was listed (Unix seconds), its entries."""
    listed_at, entries = listed
    return json.dumps([listed_at, [encode_entry(e) for e in entries]]).encode()


def _decode_listing(value: bytes) -> tuple[float, list[RemoteEntry]]:
    """The inverse of :func:`_encode_listing`; ``ValueError`` for anything else."""
    listed_at, items = json.loads(value)
    if not isinstance(listed_at, int | float) or not isinstance(items, list):
        raise ValueError("not a listing")
    return float(listed_at), [decode_entry(item) for item in items]
