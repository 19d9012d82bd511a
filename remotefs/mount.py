"""Run one mount: credentials → backend check → FUSE session → serve until unmounted.

Order of events (each step fails with a one-line ``MountError`` before anything is mounted):

1. the mount point is checked (exists, is a directory, is empty; a dead FUSE mount left by a
   killed process is detached with ``fusermount3 -uz`` and reported);
2. the cache directory is opened (created 0700, and locked: one mount per cache directory);
3. the backend checks the credentials and the target (``check()``, under the deadline);
4. ``pyfuse3.init`` mounts read-only and ``pyfuse3.main`` starts serving;
5. once the kernel has taken the reply to FUSE_INIT (a ``stat`` of the mount point has been
   answered), the mount's read-ahead is raised to ``KERNEL_READAHEAD`` where we may (root),
   and only then ``on_ready`` is called (the daemonising parent is told, systemd gets
   ``READY=1``): a ready mount answers, and reads of it come in 1 MiB requests;
6. it serves until ``fusermount3 -u`` or SIGINT/SIGTERM, which call ``pyfuse3.terminate``;
   then the session is closed and the mount point released.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from remotefs.backends import open_backend
from remotefs.backends.base import Backend
from remotefs.cache.blockcache import BlockCache
from remotefs.cache.store import CacheDirError
from remotefs.errors import AccessDenied, NotFound, RemoteError
from remotefs.fs.namespace import ROOT_INODE, Namespace
from remotefs.fs.operations import Operations
from remotefs.http import make_client
from remotefs.memory import bound_malloc
from remotefs.systemd import notify

log = logging.getLogger(__name__)

KERNEL_READAHEAD = 1 << 20
"""Bytes the kernel reads ahead on a sequential stream (FUSE's default: 128 KiB). It is also
the size of the kernel's FUSE reads (libfuse allows up to 1 MiB): strace of a ``dd bs=1M`` of
300 MiB counted 2,401 replies at 128 KiB and 301 at 1 MiB; warm re-reads, where each page
the kernel dropped is a round trip through the mount, went from 0.24-0.59x to 0.86-0.95x of
a /dev/shm copy (``scripts/bench mount``). 4 and 16 MiB measured no better than 1 MiB."""


class MountError(Exception):
    """A problem found before mounting; printed as one line."""


@dataclass(frozen=True)
class MountConfig:
    mountpoint: Path
    platform: str  # "sevenbridges" | "genestack"
    api_url: str | None = None
    project: str | None = None
    profile: str | None = None
    token_file: Path | None = None
    cache_dir: Path = Path("~/.cache/remotefs")
    cache_size: int = 10 << 30
    allow_other: bool = False
    ttl: float = 60.0
    """Seconds a directory listing (and the kernel's attributes) are trusted."""
    deadline: float = 30.0
    """Seconds any one filesystem operation may wait for the network before EIO."""


def check_mountpoint(path: Path) -> None:
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except NotADirectoryError:
        raise MountError(f"mount point {path} is not a directory") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # a FUSE mount whose process died
            subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)
            log.warning("%s was a stale mount (its process died); detached it", path)
            return check_mountpoint(path)
        raise MountError(f"mount point {path}: {exc.strerror}") from None
    if entries:
        raise MountError(f"mount point {path} is not empty")


def fuse_options(config: MountConfig) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {"ro", "noatime", f"fsname=remotefs-{config.platform}", "subtype=remotefs"}
    if config.allow_other:
        options.add("allow_other")
    return options


async def serve(config: MountConfig, on_ready: Callable[[], None] = lambda: None) -> None:
    bound_malloc()
    check_mountpoint(config.mountpoint)
    async with make_client() as client:
        backend = open_backend(config, client)
        namespace = f"{backend.xattr_namespace}@{backend.cache_scope}"
        try:  # local checks first: they are instant, the platform's may take the deadline
            cache = BlockCache(
                cache_directory(config.cache_dir, namespace),
                size_limit=config.cache_size,
                fetch=backend.read,
                namespace=namespace,
            )
        except CacheDirError as exc:
            raise MountError(str(exc)) from None
        try:
            await _check(backend, config)
            ops = Operations(
                Namespace(backend, ttl=config.ttl), cache, ttl=config.ttl, deadline=config.deadline
            )
            pyfuse3.init(ops, str(config.mountpoint), fuse_options(config))
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(cache.run)
                    nursery.start_soon(_terminate_on_signal)
                    nursery.start_soon(_list_root, ops.ns, config.deadline)
                    nursery.start_soon(_announce_once_initialised, config, on_ready)
                    await pyfuse3.main()
                    nursery.cancel_scope.cancel()
            finally:
                notify("STOPPING=1")
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", config.mountpoint)
        finally:
            cache.close()
            await backend.aclose()


async def _check(backend: Backend, config: MountConfig) -> None:
    """The backend's own check (credentials, project), as one-line ``MountError``s."""
    try:
        with trio.fail_after(config.deadline):
            await backend.check()
    except (AccessDenied, NotFound) as exc:  # the backend's message names the problem
        raise MountError(str(exc)) from None
    except (RemoteError, trio.TooSlowError) as exc:
        raise MountError(
            f"cannot reach the platform at {config.api_url or 'its API'}: {exc}"
        ) from None


async def _list_root(namespace: Namespace, deadline: float) -> None:
    """List the root at once: the first ``ls`` (or path lookup) of a new mount is then free."""
    with trio.move_on_after(deadline):
        try:
            await namespace.listing(ROOT_INODE)
        except RemoteError as exc:  # the first real lookup will report it
            log.debug("listing the root in advance failed: %s", exc)


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


def cache_directory(root: Path, namespace: str) -> Path:
    """One directory per platform endpoint under ``root``: mounts of two platforms (the demo)
    can share a ``--cache-dir`` without sharing (or locking each other out of) a store."""
    platform = namespace.partition("@")[0] or "remote"
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:12]
    return root.expanduser() / f"{platform}-{digest}"


async def _announce_once_initialised(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Raise the kernel's read-ahead once the kernel has taken FUSE_INIT's reply; then ready.

    The reply caps the device's read-ahead at what libfuse offers back (the kernel's own
    128 KiB), so a value written before it is silently undone and every read stays 128 KiB.
    A ``stat`` of the mount point (from a worker thread: this thread answers it) returns
    only after INIT has been answered; then the value sticks and reads come in 1 MiB.
    """
    try:
        st = await trio.to_thread.run_sync(os.stat, config.mountpoint, abandon_on_cancel=True)
    except OSError as exc:  # the first real request will meet the same problem and say so
        log.warning("the new mount at %s does not answer: %s", config.mountpoint, exc.strerror)
    else:
        raise_kernel_readahead(st.st_dev)
    on_ready()
    notify("READY=1")
    log.info("mounted %s at %s", config.platform, config.mountpoint)


def read_ahead_file(device: int) -> Path:
    """The sysfs file of a FUSE mount's read-ahead, by its ``st_dev``."""
    return Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")


def raise_kernel_readahead(device: int, size: int = KERNEL_READAHEAD) -> None:
    """Set the read-ahead of the mount with ``st_dev`` ``device`` (only root may; others keep
    the kernel's 128 KiB)."""
    try:
        read_ahead_file(device).write_text(f"{size >> 10}\n")
    except OSError as exc:
        log.debug("kernel read-ahead stays at its default (%s)", exc.strerror)
        return
    log.debug("kernel read-ahead for device %#x: %d KiB", device, size >> 10)
