"""The pyfuse3 adapter: kernel requests in, attributes/bytes/errno out. Thin by design.

Every handler runs under :func:`fuse_handler`, the only place exceptions become errno
values, always through the one table (:func:`remotefs.errors.to_errno`):

- **One deadline per operation**: the handler opens ``trio.fail_after(deadline)``; every
  network call beneath it (listings, signed URLs, byte ranges, their retries) reads that
  deadline from the enclosing scope, so a reader never waits longer than ``--timeout``
  (README, "Promises"), and an overrun is EIO.
- a :mod:`remotefs.errors` error → its errno (EIO ones are logged at WARNING with why);
- anything unexpected is logged with its traceback and answered EIO; the mount keeps serving;
- every error that is the platform's or the mount's own failure (a platform error, a
  deadline, a bug) is counted in :data:`~remotefs.metrics.METRICS` (``remotefs status``:
  errors answered, the last error). Answers that are no failure are not: a name a listing
  does not hold (``X.bam.csi`` probes, ENOENT from memory) and what the mount refuses by
  design (:class:`~remotefs.errors.LocalError`: EROFS, ENODATA, EINVAL, a sniffer's EIO);
- a ``trio.Cancelled`` that reaches a handler is either the mount shutting down (then the
  handler's task is cancelled too, and it passes through) or a cancellation that leaked
  from another task: a bug, which would otherwise unwind the FUSE loop and end the mount.
  It is logged with its traceback and answered EIO.

Read-only: the mount is made with ``ro`` so the kernel answers most writes itself; every write
handler still answers EROFS, and ``open`` for writing → EROFS.

Reading is one call per request into :class:`remotefs.cache.reader.Reader` (open) and its
:class:`~remotefs.cache.reader.OpenFile` (read, release), which own the read policy.
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
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio
from pyfuse3 import FileHandleT, InodeT

from remotefs.cache.hints import companion_names
from remotefs.cache.reader import OpenFile, Reader
from remotefs.concurrency import SingleFlight
from remotefs.errors import (
    IsADirectory,
    LocalError,
    NoSuchAttribute,
    NotADirectory,
    NotFound,
    ReadOnly,
    RemoteError,
    Unsupported,
    to_errno,
)
from remotefs.fs.callers import Callers
from remotefs.fs.namespace import ROOT_INODE, Listing, Namespace, Node
from remotefs.fs.xattrs import xattrs
from remotefs.metrics import METRICS
from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

ST_BLKSIZE = 1 << 20
"""htslib sizes its hFILE buffer from st_blksize: 1 MiB makes it read in large pieces."""
DIR_SIZE = 4096
"""What ext4 reports for a directory; tools that compare trees (find -printf %s, gio) expect it."""
CACHE_XATTR = b"user.remotefs.cache"
"""What the cache holds of a file (``full``, ``partial 37%``, ``none``, ``pinned``) or a
folder (the same over its files): no network request."""
CONTENTS_XATTR = b"user.odm.contents"
"""ODM: the structure inside an .h5/.h5ad/.zip/.gz (``includeContents``, A21), fetched on
first ``getxattr`` of this one name and remembered."""
CONTROL_XATTR = b"user.remotefs.control"
"""On the root: the path of the mount's control socket (``remotefs warm``, ``status``)."""
LOOKUPS_REMEMBERED = 4096
"""(parent, name) of the most recent lookups: what ``open`` needs to find a file's index."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def cache_state(size: int, held: int) -> str:
    # A zero-byte file is "full" on purpose: it is complete, reading it costs no request, and
    # a folder of such files is as ready to read offline as one of held files (``remotefs
    # warm --check`` says the same: ``client.describe``). "none" would say there is
    # something left to fetch. The same goes for a folder with no files known.
    if held >= size:
        return "full"
    if held <= 0:
        return "none"
    return f"partial {min(99, max(1, held * 100 // size))}%"


def _pid(ctx: pyfuse3.RequestContext | None) -> int:
    return ctx.pid if ctx is not None else 0


def fuse_error(exc: BaseException) -> pyfuse3.FUSEError:
    """The ``FUSEError`` for a domain error (the errno table's, EIO for anything else)."""
    return pyfuse3.FUSEError(to_errno(exc))


def _only_cancellations(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return False


def fuse_handler(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            with trio.fail_after(self.deadline):
                return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except (RemoteError, LocalError) as exc:
            number = to_errno(exc)
            remote_eio = number == errno.EIO and isinstance(exc, RemoteError)
            name = errno.errorcode.get(number, str(number))
            log.log(
                logging.WARNING if remote_eio else logging.DEBUG,  # the platform's EIO: say why
                "%s: %s → %s",
                fn.__name__,
                exc,
                name,
            )
            if isinstance(exc, RemoteError) and not (
                isinstance(exc, NotFound) and fn.__name__ == "lookup"
            ):
                METRICS.error(f"{fn.__name__}: {exc} ({name})")
            raise pyfuse3.FUSEError(number) from None
        except trio.TooSlowError:
            log.warning("%s: no answer within the %.0f s deadline: EIO", fn.__name__, self.deadline)
            METRICS.error(
                f"{fn.__name__}: no answer within the {self.deadline:.0f} s deadline (EIO)"
            )
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception as exc:
            log.exception("%s failed unexpectedly: EIO", fn.__name__)
            METRICS.error(f"{fn.__name__}: failed unexpectedly: {type(exc).__name__}: {exc} (EIO)")
            raise pyfuse3.FUSEError(errno.EIO) from None
        except BaseException as exc:
            if not _only_cancellations(exc):
                raise
            # Our own deadline became TooSlowError above. If the mount is shutting down,
            # this task is cancelled too and the checkpoint raises that cancellation.
            await trio.lowlevel.checkpoint_if_cancelled()
            log.error(
                "%s: a cancellation that was not its own reached it (a bug; answered EIO, "
                "the mount goes on)",
                fn.__name__,
                exc_info=exc,
            )
            METRICS.error(f"{fn.__name__}: a stray cancellation (a bug; EIO)")
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False
    supports_dot_lookup = False

    def __init__(
        self,
        namespace: Namespace,
        reader: Reader,
        *,
        ttl: float,
        deadline: float,
        callers: Callers | None = None,
        control_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.callers = callers or Callers(())
        self.control_path = control_path
        self._contents_known: dict[tuple[str, str], bytes | None] = {}
        self._contents_flights: SingleFlight[tuple[str, str], bytes | None] = SingleFlight()
        self.ns = namespace
        self.reader = reader
        self.ttl = ttl
        self.deadline = deadline
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._handles: dict[int, OpenFile] = {}
        self._dir_handles: dict[int, Listing] = {}
        self._fh = itertools.count(1)
        self._looked_up: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self.xattr_namespace = namespace.backend.xattr_namespace

    # --- attributes ---------------------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        e = node.entry
        a = pyfuse3.EntryAttributes()
        a.st_ino = InodeT(node.inode)
        a.generation = 0
        # A file whose size is not known yet (ODM listings say none) is listed with size 0
        # and attributes the kernel may not keep: its next lookup asks, and sizes it.
        a.entry_timeout = a.attr_timeout = self.ttl if e.sized else 0
        a.st_mode = pyfuse3.ModeT((stat.S_IFDIR | 0o555) if e.is_dir else (stat.S_IFREG | 0o444))
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
        self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._attrs(self.ns.node(parent_inode))
        node = await self.ns.lookup(parent_inode, name)
        if not node.entry.sized:  # with its index (sized together: its reader opens it next)
            listing = self.ns.cached_listing(parent_inode)
            companions = [
                listing.by_name[c]
                for c in companion_names(name)
                if listing is not None and c in listing.by_name
            ]
            node = await self.ns.sized(node.inode, companions, folder=parent_inode)
        else:
            self.ns.looked_up(node.inode)
        if not node.entry.is_dir:
            self._looked_up[node.inode] = (parent_inode, name)
            self._looked_up.move_to_end(node.inode)
            if len(self._looked_up) > LOOKUPS_REMEMBERED:
                self._looked_up.popitem(last=False)
        return self._attrs(node)

    @fuse_handler
    async def getattr(
        self, inode: InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.ns.sized(inode))

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        """Inodes are kept for the life of the mount (never reused): nothing to do."""

    @fuse_handler
    async def statfs(self, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = ST_BLKSIZE
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # --- directories ----------------------------------------------------------------------

    @fuse_handler
    async def opendir(
        self, inode: InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> FileHandleT:
        if not self.ns.node(inode).entry.is_dir:
            raise NotADirectory(f"inode {inode}")
        fh = next(self._fh)
        self._dir_handles[fh] = await self.ns.listing(inode)
        return FileHandleT(fh)

    @fuse_handler
    async def readdir(self, fh: FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dir_handles[fh]
        for index in range(start_id, len(listing.names)):
            node = self.ns.node(listing.inodes[index])
            if not pyfuse3.readdir_reply(token, listing.names[index], self._attrs(node), index + 1):
                break

    async def releasedir(self, fh: FileHandleT) -> None:
        self._dir_handles.pop(fh, None)

    # --- files ----------------------------------------------------------------------------

    @fuse_handler
    async def open(
        self, inode: InodeT, flags: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise ReadOnly()
        node = await self.ns.sized(inode)
        if node.entry.is_dir:
            raise IsADirectory(f"inode {inode}")
        # the name it was looked up by (the POSIX one), else the platform name: for suffixes only
        parent, name = self._looked_up.get(inode) or (
            None,
            node.entry.name.encode(errors="replace"),
        )
        fh = next(self._fh)
        sniffer = self.reader.sniffers_limited and self.callers.is_sniffer(_pid(ctx))
        self._handles[fh] = self.reader.open(
            node.entry, name, self._sibling_finder(parent), sniffer=sniffer
        )
        # keep_cache: the page cache stays valid while the version is unchanged (the inode's
        # entry is only replaced by a listing refresh; the cache key carries the version).
        # A sniffer's handle is direct I/O: the kernel sends exactly what it reads, no more.
        # It keeps the cache too: an open without keep_cache drops the pages that other
        # readers of the file have cached (a file manager would make them fetch again).
        return pyfuse3.FileInfo(fh=FileHandleT(fh), keep_cache=True, direct_io=sniffer)

    def _sibling_finder(self, parent: int | None) -> Callable[[bytes], RemoteEntry | None]:
        """Names → entries in the folder a file was opened from, as far as memory knows."""
        listing = self.ns.cached_listing(parent) if parent is not None else None

        def sibling(name: bytes) -> RemoteEntry | None:
            inode = listing.by_name.get(name) if listing is not None else None
            entry = self.ns.node(inode).entry if inode is not None else None
            return entry if entry is not None and entry.sized else None  # hints cost nothing

        return sibling

    @fuse_handler
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        return await self._handles[fh].read(off, size)

    async def release(self, fh: FileHandleT) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.close()

    # --- extended attributes ------------------------------------------------------------------

    async def getxattr(
        self, inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> bytes:
        # security.* and system.* (SELinux labels, POSIX ACLs) are not supported here, and
        # saying so (EOPNOTSUPP, not ENODATA) matters: ls -l asks for both on every file (4,000
        # requests for 2,000 files) but remembers "unsupported" per device and stops asking.
        # The kernel forwards every getxattr (it caches none), so this answer comes first,
        # without even the handler's deadline scope.
        if not name.startswith(b"user."):
            raise fuse_error(Unsupported())
        return await self._user_xattr(inode, name)

    @fuse_handler
    async def _user_xattr(self, inode: InodeT, name: bytes) -> bytes:
        if name == CACHE_XATTR:
            return self._cache_status(inode).encode()
        if name == CONTROL_XATTR and inode == ROOT_INODE and self.control_path is not None:
            return os.fsencode(self.control_path)
        if name == CONTENTS_XATTR and self.ns.backend.describes_contents(self.ns.node(inode).entry):
            return await self._contents(inode)
        value = xattrs(self.ns.node(inode).entry, self.xattr_namespace).get(name)
        if value is None:
            raise NoSuchAttribute(name.decode(errors="replace"))
        return value

    @fuse_handler
    async def listxattr(
        self, inode: InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> list[bytes]:
        entry = self.ns.node(inode).entry
        names = [*xattrs(entry, self.xattr_namespace), CACHE_XATTR]
        if self.ns.backend.describes_contents(entry):
            names.append(CONTENTS_XATTR)
        if inode == ROOT_INODE and self.control_path is not None:
            names.append(CONTROL_XATTR)
        return names

    async def _contents(self, inode: int) -> bytes:
        """What the platform says a file holds: asked once, under this operation's deadline,
        then remembered for the file's version (the only xattr that may cost a request)."""
        entry = self.ns.node(inode).entry
        key = (entry.id, entry.version)
        if key not in self._contents_known:
            self._contents_known[key] = await self._contents_flights.run(
                key, partial(self.ns.backend.contents, entry)
            )
        value = self._contents_known[key]
        if value is None:
            raise NoSuchAttribute(f"{entry.name}: the platform describes nothing inside it")
        return value

    def _cache_status(self, inode: int) -> str:
        """``full``, ``partial N%`` or ``none`` (and ``pinned``) for a file; the same over
        the files a folder is known to hold (its listings in memory, all levels). No I/O."""
        cache = self.reader.cache
        entry = self.ns.node(inode).entry
        if not entry.is_dir:
            return cache_state(entry.size, cache.held_bytes(entry)) + (
                " pinned" if cache.pinned(entry) else ""
            )
        files = self.ns.known_files(inode)
        size = sum(f.size for f in files)
        held = [cache.held_bytes(f) for f in files]
        full = sum(1 for f, h in zip(files, held, strict=True) if f.sized and h >= f.size)
        pinned = sum(1 for f in files if cache.pinned(f))
        return (
            f"{cache_state(size, sum(held))} ({full} of {len(files)} files full, {pinned} pinned)"
        )

    # --- writes: all EROFS (the kernel answers most itself: the mount is ``ro``) -----------

    async def setattr(
        self,
        inode: InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise fuse_error(ReadOnly())

    async def setxattr(
        self, inode: InodeT, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise fuse_error(ReadOnly())

    async def removexattr(self, inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise fuse_error(ReadOnly())

    async def mknod(
        self, parent_inode: InodeT, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise fuse_error(ReadOnly())

    async def mkdir(
        self, parent_inode: InodeT, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise fuse_error(ReadOnly())

    async def unlink(self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise fuse_error(ReadOnly())

    async def rmdir(self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise fuse_error(ReadOnly())

    async def symlink(
        self, parent_inode: InodeT, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise fuse_error(ReadOnly())

    async def rename(
        self,
        parent_inode_old: InodeT,
        name_old: bytes,
        parent_inode_new: InodeT,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        raise fuse_error(ReadOnly())

    async def link(
        self,
        inode: InodeT,
        new_parent_inode: InodeT,
        new_name: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise fuse_error(ReadOnly())

    async def create(
        self, parent_inode: InodeT, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise fuse_error(ReadOnly())

    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        raise fuse_error(ReadOnly())
