"""The pyfuse3 adapter: kernel requests in, attributes/bytes/errno out. Thin by design.

Every handler runs under :func:`fuse_handler`, which is the only place exceptions become
errno values: a :mod:`remotefs.errors` error → ``FUSEError(to_errno(exc))``; a deadline
overrun → EIO; anything unexpected is logged with its traceback and answered EIO, and the
mount keeps serving. ``trio.Cancelled`` (a ``BaseException``) passes through untouched.

Read-only: the mount is made with ``ro`` so the kernel answers most writes itself; every write
handler still answers EROFS. ``open`` for writing → EROFS.

Deadlines: every handler that may touch the network runs under ``trio.fail_after(deadline)``,
so a reader never waits longer than the deadline (README, "Promises").
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyfuse3
import trio

from remotefs.cache.blockcache import BlockCache, ReadAheadGroup
from remotefs.cache.hints import INDEX_BYTES, companion_names, open_ranges, seek_bytes
from remotefs.cache.prefetch import ReadAhead
from remotefs.errors import ReadOnly, RemoteError, to_errno
from remotefs.fs.namespace import Listing, Namespace, Node
from remotefs.fs.xattrs import xattrs
from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

ST_BLKSIZE = 1 << 20
"""htslib sizes its hFILE buffer from st_blksize: 1 MiB makes it read in large pieces."""
DIR_SIZE = 4096
"""What ext4 reports for a directory; tools that compare trees (find -printf %s, gio) expect it."""
LOOKUPS_REMEMBERED = 4096
"""(parent, name) of the most recent lookups: what ``open`` needs to find a file's index."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def fuse_handler(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            with trio.fail_after(self.deadline):
                return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except (RemoteError, ReadOnly) as exc:
            number = to_errno(exc)
            log.log(
                logging.WARNING if number == errno.EIO else logging.DEBUG,  # EIO: say why
                "%s: %s → %s",
                fn.__name__,
                exc,
                errno.errorcode.get(number, number),
            )
            raise pyfuse3.FUSEError(number) from None
        except trio.TooSlowError:
            log.warning("%s: no answer within the %.0f s deadline: EIO", fn.__name__, self.deadline)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly: EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _erofs(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    return wrapper  # type: ignore[return-value]


@dataclass(slots=True)
class _Open:
    inode: int
    entry: RemoteEntry
    readahead: ReadAhead = field(default_factory=ReadAhead)
    fetching_ahead: ReadAheadGroup = field(default_factory=ReadAheadGroup)


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False
    supports_dot_lookup = False

    def __init__(
        self, namespace: Namespace, cache: BlockCache, *, ttl: float, deadline: float
    ) -> None:
        super().__init__()
        self.ns = namespace
        self.cache = cache
        self.ttl = ttl
        self.deadline = deadline
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._handles: dict[int, _Open] = {}
        self._dir_handles: dict[int, Listing] = {}
        self._fh = itertools.count(1)
        self._looked_up: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self.xattr_namespace = namespace.backend.xattr_namespace

    # --- attributes ---------------------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        e = node.entry
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        a.entry_timeout = self.ttl
        a.attr_timeout = self.ttl
        a.st_mode = (stat.S_IFDIR | 0o555) if e.is_dir else (stat.S_IFREG | 0o444)
        a.st_nlink = 2 if e.is_dir else 1
        a.st_uid, a.st_gid = self.uid, self.gid
        a.st_rdev = 0
        a.st_size = DIR_SIZE if e.is_dir else e.size
        a.st_blksize = ST_BLKSIZE
        a.st_blocks = (a.st_size + 511) // 512
        # Synthetic directories (ODM's studies/ and all/) have no platform time: the mount's.
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = e.mtime_ns or self.started_ns
        return a

    @fuse_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._attrs(self.ns.node(parent_inode))
        node = await self.ns.lookup(parent_inode, name)
        if not node.entry.is_dir:
            self._looked_up[node.inode] = (parent_inode, name)
            self._looked_up.move_to_end(node.inode)
            if len(self._looked_up) > LOOKUPS_REMEMBERED:
                self._looked_up.popitem(last=False)
        return self._attrs(node)

    @fuse_handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(self.ns.node(inode))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        """Inodes are kept for the life of the mount (never reused): nothing to do."""

    @fuse_handler
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = ST_BLKSIZE
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # --- directories ----------------------------------------------------------------------

    @fuse_handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if not self.ns.node(inode).entry.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        self._dir_handles[fh] = await self.ns.listing(inode)
        return fh

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dir_handles[fh]
        for index in range(start_id, len(listing.names)):
            node = self.ns.node(listing.inodes[index])
            if not pyfuse3.readdir_reply(token, listing.names[index], self._attrs(node), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    # --- files ----------------------------------------------------------------------------

    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise ReadOnly()
        node = self.ns.node(inode)
        if node.entry.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        # the name it was looked up by (the POSIX one), else the platform name: for suffixes only
        parent, name = self._looked_up.get(inode) or (
            None,
            node.entry.name.encode(errors="replace"),
        )
        fh = next(self._fh)
        handle = self._handles[fh] = _Open(inode, node.entry)
        handle.readahead.seek_bytes = seek_bytes(name)
        self._prefetch_on_open(node, name, parent)
        # keep_cache: the page cache stays valid while the version is unchanged (the inode's
        # entry is only replaced by a listing refresh; the cache key carries the version).
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    def _prefetch_on_open(self, node: Node, name: bytes, parent: int | None) -> None:
        """Start fetching what every reader of this file reads first (``cache.hints``): its
        tail (or all of it, if small) and, from the cached listing of ``parent`` (the folder
        it was looked up in), its index."""
        for start, end in open_ranges(name, node.entry.size):
            self.cache.prefetch(node.entry, start, end)
        listing = self.ns.cached_listing(parent) if parent is not None else None
        if listing is None:
            return
        for candidate in companion_names(name):
            inode = listing.by_name.get(candidate)
            if inode is not None:
                index = self.ns.node(inode).entry
                if not index.is_dir and 0 < index.size <= INDEX_BYTES:
                    self.cache.prefetch(index, 0, index.size)
                    return

    @fuse_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles[fh]
        readahead = handle.readahead
        for start, end in readahead.plan(off, size, handle.entry.size):
            self.cache.prefetch(handle.entry, start, end, handle.fetching_ahead)
        return await self.cache.read(handle.entry, off, size, streaming=readahead.window > 0)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:  # its read-ahead ends with it (what open prefetched stays)
            handle.fetching_ahead.cancel()

    # --- extended attributes ------------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        # security.* and system.* (SELinux labels, POSIX ACLs) are not supported here, and
        # saying so (EOPNOTSUPP, not ENODATA) matters: ls -l asks for both on every file (4,000
        # requests for 2,000 files) but remembers "unsupported" per device and stops asking.
        # The kernel forwards every getxattr (it caches none), so this answer comes first,
        # without even the handler's deadline scope.
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return await self._user_xattr(inode, name)

    @fuse_handler
    async def _user_xattr(self, inode: int, name: bytes) -> bytes:
        value = xattrs(self.ns.node(inode).entry, self.xattr_namespace).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return list(xattrs(self.ns.node(inode).entry, self.xattr_namespace))

    # --- writes: all EROFS ------------------------------------------------------------------

    @_erofs
    async def setattr(self, *args: Any) -> None: ...

    @_erofs
    async def setxattr(self, *args: Any) -> None: ...

    @_erofs
    async def removexattr(self, *args: Any) -> None: ...

    @_erofs
    async def mknod(self, *args: Any) -> None: ...

    @_erofs
    async def mkdir(self, *args: Any) -> None: ...

    @_erofs
    async def unlink(self, *args: Any) -> None: ...

    @_erofs
    async def rmdir(self, *args: Any) -> None: ...

    @_erofs
    async def symlink(self, *args: Any) -> None: ...

    @_erofs
    async def rename(self, *args: Any) -> None: ...

    @_erofs
    async def link(self, *args: Any) -> None: ...

    @_erofs
    async def create(self, *args: Any) -> None: ...

    @_erofs
    async def write(self, *args: Any) -> None: ...
