"""Run one mount: credentials → backend check → FUSE session → serve until unmounted.

Order of events (each step fails with a one-line ``MountError`` before anything is mounted):

1. the mount point is checked (exists, is a directory, is empty; a dead FUSE mount left by a
   killed process is detached with ``fusermount3 -uz`` and reported);
2. the cache directory is opened (created 0700, and locked: one mount per cache directory),
   with its block store and its record store (listings, root, sizes: ``cache.records``);
3. the backend checks the credentials and the target (``check()``, under the deadline; a
   platform that cannot be connected to at all is said within ``CONNECT_BUDGET``). If the
   platform cannot be reached but the record store holds the root a previous mount had,
   the mount comes up from what that mount knew (one WARNING): cached folders list, cached
   bytes read; the check is retried in the background and its outcome logged;
4. ``pyfuse3.init`` mounts read-only and ``pyfuse3.main`` starts serving;
5. once the kernel has taken the reply to FUSE_INIT (a ``stat`` of the mount point has been
   answered), the mount's read-ahead is raised to ``KERNEL_READAHEAD`` where we may (root),
   and only then ``on_ready`` is called (the daemonising parent is told, systemd gets
   ``READY=1``): a ready mount answers, and reads of it come in 1 MiB requests;
6. it serves until ``fusermount3 -u`` or SIGINT/SIGTERM, which call ``pyfuse3.terminate``;
   then the session is closed and the mount point released.

**The process never ends by accident.** The FUSE loop ends for two reasons only: the mount
was detached (``fusermount3 -u``, ``umount``) or a signal asked for it. If it ends while the
kernel still shows the mount attached and no signal came, or if anything escapes the
loop, :class:`UnexpectedStop` (or the escaping exception) leaves :func:`serve`; the command
line logs it at CRITICAL with its traceback and exits non-zero (``remotefs.cli``), and
systemd restarts the unit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyfuse3
import trio

from remotefs.backends import open_backend
from remotefs.backends.base import Backend
from remotefs.cache.blockcache import BlockCache
from remotefs.cache.reader import Reader, SnifferLimit
from remotefs.cache.records import RECORD_ERRORS, RecordStore
from remotefs.cache.store import CacheDirError
from remotefs.concurrency import running
from remotefs.config import MountConfig
from remotefs.control import ControlServer, Status, socket_path
from remotefs.errors import AccessDenied, InvalidQuery, NotFound, RemoteError, Transient
from remotefs.fs.callers import Callers
from remotefs.fs.namespace import ROOT_INODE, Namespace
from remotefs.fs.operations import Operations
from remotefs.http.client import WARM_CONNECTIONS, make_client, threaded_transport
from remotefs.http.send import give_up_connecting_after
from remotefs.memory import bound_malloc
from remotefs.model import RemoteEntry
from remotefs.mounts import attached, mount_at
from remotefs.origins import keep_warm
from remotefs.prometheus import serve_metrics
from remotefs.query import from_options
from remotefs.redis_url import SharedStateError
from remotefs.systemd import notify

if TYPE_CHECKING:  # the cluster's libraries are an extra: imported only when asked for
    from remotefs.shared import SharedState

log = logging.getLogger(__name__)

KERNEL_READAHEAD = 1 << 20
"""Bytes the kernel reads ahead on a sequential stream (FUSE's default: 128 KiB). It is also
the size of the kernel's FUSE reads (libfuse allows up to 1 MiB): strace of a ``dd bs=1M`` of
300 MiB counted 2,401 replies at 128 KiB and 301 at 1 MiB; warm re-reads, where each page
the kernel dropped is a round trip through the mount, went from 0.24-0.59x to 0.86-0.95x of
a /dev/shm copy (``scripts/bench mount``). 4 and 16 MiB measured no better than 1 MiB."""
CONNECT_BUDGET = 3.0
"""Seconds the first requests of a mount try to connect before the platform is said to be
unreachable (a mount that is up retries until each operation's deadline)."""
RECHECK_FIRST, RECHECK_MAX = 2.0, 60.0
"""Seconds between the background checks of a mount that came up without the platform:
doubling from the first to the last (with jitter), one request each."""


class MountError(Exception):
    """A problem found before mounting; printed as one line."""


class UnexpectedStop(Exception):
    """The FUSE loop ended while the mount was still attached and nobody asked it to stop."""


@dataclass
class _Session:
    """What the serving tasks learn about the mount they serve."""

    device: int | None = None
    """``st_dev`` of the mount, once the kernel answers for it."""
    stop_requested: bool = False
    """A signal asked the loop to end."""


def check_mountpoint(path: Path) -> None:
    on_top = mount_at(path)
    if on_top is not None and on_top.fstype == "autofs":
        return  # x-systemd.automount: listing it would wait for this very mount
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
    async with (
        make_client(warm=WARM_CONNECTIONS) as client,
        contextlib.AsyncExitStack() as services,
    ):
        backend = open_backend(config, client)
        shared = open_shared_state(config, backend)
        namespace = f"{backend.xattr_namespace}@{backend.cache_scope}"
        directory = cache_directory(config.cache_dir, namespace)
        fresh = not directory.exists()
        try:  # local checks first: they are instant, the platform's may take the deadline
            cache = BlockCache(
                directory,
                size_limit=config.cache_size,
                fetch=backend.read,
                namespace=namespace,
                timeout=config.deadline,
            )
        except CacheDirError as exc:
            raise MountError(str(exc)) from None
        records = open_records(directory / "records", backend.user_key)
        backend.memory = records
        transport = threaded_transport(client)
        mounted = False
        try:
            if transport is not None:
                await trio.to_thread.run_sync(keep_warm, transport, backend.api_url, records)
            if shared is not None:
                await _join(shared, backend)
                await services.enter_async_context(running(shared.run))
            root, reachable = await _root(backend, config, records)
            root = _filtered(backend, config, root)
            names = Namespace(
                backend,
                root,
                ttl=config.ttl,
                timeout=config.deadline,
                records=records,
                shared=shared,
            )
            sniffers = SnifferLimit(config.sniffer_bytes, backend.reachable_without_api)
            control = socket_path(directory)
            status = Status(
                config.mountpoint,
                config.platform,
                backend.cache_scope,
                cache,
                config.cache_size,
                backend.rate_limit,
                shared.snapshot if shared is not None else None,
                transport.pool.snapshot if transport is not None else None,
            )
            ops = Operations(
                names,
                Reader(cache, sniffers if config.sniffers else None),
                ttl=config.ttl,
                deadline=config.deadline,
                callers=Callers(config.sniffers),
                control_path=control,
            )
            stop_metrics = _serve_metrics(config, status)
            session = _Session()
            pyfuse3.init(ops, str(config.mountpoint), fuse_options(config))
            mounted = True
            try:
                async with trio.open_nursery() as nursery:
                    if control is not None:
                        server = ControlServer(control, names, cache, status, invalidate_pages)
                        await nursery.start(server.run)
                    await nursery.start(cache.run)
                    if records is not None:
                        await nursery.start(records.run)
                    await nursery.start(names.run)
                    nursery.start_soon(_terminate_on_signal, session)
                    nursery.start_soon(_list_root, names, config.deadline)
                    nursery.start_soon(_announce_once_initialised, config, session, on_ready)
                    if not reachable:
                        nursery.start_soon(_confirm_when_reachable, backend, config)
                    await pyfuse3.main()
                    nursery.cancel_scope.cancel()
                _check_stopped_on_purpose(config, session)
            finally:
                notify("STOPPING=1")
                pyfuse3.close(unmount=True)
                stop_metrics()
                log.info("unmounted %s", config.mountpoint)
        finally:
            cache.close()
            if records is not None:
                records.close()
            await backend.aclose()
            if fresh and not mounted:  # a failed first mount leaves no cache directory
                shutil.rmtree(directory, ignore_errors=True)


def open_shared_state(config: MountConfig, backend: Backend) -> SharedState | None:
    """The cluster's store ``--shared-state`` names (``None`` without it); a one-line
    ``MountError`` for a malformed URL, an unreadable password file, or the cluster's
    libraries not installed."""
    if config.shared_state is None:
        return None
    try:
        from remotefs.shared import SharedState
    except ImportError as exc:
        raise MountError(
            f"--shared-state needs remotefs's cluster extra ({exc.name} is missing): "
            "pip install 'remotefs[cluster]'"
        ) from None
    password = None
    if config.shared_state_password_file is not None:
        try:
            text = config.shared_state_password_file.read_text()
        except OSError as exc:
            raise MountError(
                f"--shared-state-password-file {config.shared_state_password_file}: {exc.strerror}"
            ) from None
        password = text.splitlines()[0].strip() if text.strip() else None
    try:
        return SharedState(
            config.shared_state,
            endpoint=backend.cache_scope,
            derive_key=backend.derive_key,
            password=password,
            ca_file=config.shared_state_ca,
        )
    except (SharedStateError, OSError) as exc:  # OSError: an unreadable CA file
        raise MountError(str(exc)) from None


async def _join(shared: SharedState, backend: Backend) -> None:
    """Check the store (a refusal is a one-line ``MountError``; a store that is down is not)
    and give the backend what the cluster shares."""
    try:
        await shared.check()
    except SharedStateError as exc:
        raise MountError(str(exc)) from None
    backend.shared = shared
    if backend.rate_limit is not None:
        backend.rate_limit.shared = shared
    log.info(
        "shared state at %s: %s",
        shared.url,
        "joined the cluster" if shared.up else "not answering; this mount starts alone",
    )


def _serve_metrics(config: MountConfig, status: Status) -> Callable[[], None]:
    """The Prometheus endpoint if asked for (a one-line ``MountError`` if it cannot listen);
    what stops it."""
    if config.metrics_addr is None:
        return lambda: None
    try:
        return serve_metrics(config.metrics_addr, status.snapshot)
    except (OSError, ValueError) as exc:
        raise MountError(f"--metrics-addr {config.metrics_addr}: {exc}") from None


def _filtered(backend: Backend, config: MountConfig, root: RemoteEntry) -> RemoteEntry:
    """The root itself, or, with ``--filter``/``--query``, the folder of its matching files."""
    try:
        query = from_options(config.platform, config.filters, config.query)
        return root if query is None else backend.filtered_root(root, query)
    except InvalidQuery as exc:
        raise MountError(str(exc)) from None


def open_records(directory: Path, user_key: str) -> RecordStore | None:
    """The endpoint's record store, or ``None`` (one WARNING) when it cannot be opened: a
    damaged or unwritable store costs what it remembers, never the mount."""
    try:
        return RecordStore(directory, user_key=user_key)
    except RECORD_ERRORS as exc:
        log.warning(
            "the record cache at %s cannot be opened (%s): folders are not remembered across "
            "mounts this time (remove it to start afresh)",
            directory,
            exc,
        )
        return None


async def _root(
    backend: Backend, config: MountConfig, records: RecordStore | None
) -> tuple[RemoteEntry, bool]:
    """The mount's root, and whether the platform answered for it (else it is the root a
    previous mount remembered)."""
    try:
        await _check(backend, config)
    except Transient as exc:
        saved = None
        if records is not None:
            saved = await trio.to_thread.run_sync(records.load_root, backend.root_key)
        if saved is None:
            raise MountError(
                f"cannot reach the platform at {config.api_url or 'its API'}: {exc}"
            ) from None
        log.warning(
            "cannot reach the platform at %s (%s); mounting from what the last mount knew "
            "(its folders and cached bytes); credentials are checked when it answers",
            config.api_url or "its API",
            exc,
        )
        return saved, False
    root = backend.root()
    if records is not None:
        records.remember_root(backend.root_key, root)
    return root, True


async def _check(backend: Backend, config: MountConfig) -> None:
    """The backend's own check (credentials, project), as one-line ``MountError``s, except
    for an unreachable platform: ``Transient``."""
    try:
        with trio.fail_after(config.deadline), give_up_connecting_after(CONNECT_BUDGET):
            await backend.check()
    except (AccessDenied, NotFound) as exc:  # the backend's message names the problem
        raise MountError(str(exc)) from None
    except trio.TooSlowError:
        raise Transient(f"no answer within {config.deadline:.0f} s") from None
    except Transient:
        raise
    except RemoteError as exc:
        raise MountError(
            f"cannot reach the platform at {config.api_url or 'its API'}: {exc}"
        ) from None


async def _confirm_when_reachable(backend: Backend, config: MountConfig) -> None:
    """For a mount that came up without the platform: check the credentials once it answers
    (one request per attempt, at most one a minute), and say how that went."""
    delay = RECHECK_FIRST
    while True:
        await trio.sleep(delay * random.uniform(0.8, 1.2))
        try:
            with trio.fail_after(config.deadline):
                await backend.check()
        except (AccessDenied, NotFound) as exc:
            log.error("the platform answers again but refuses this mount: %s", exc)
            return
        except (RemoteError, trio.TooSlowError) as exc:
            log.debug("the platform still cannot be reached: %s", exc)
            delay = min(RECHECK_MAX, delay * 2)
            continue
        except Exception:  # a bug here must not end a mount that serves what it knows
            log.exception("checking the credentials failed unexpectedly")
            return
        log.info("the platform answers again: credentials and target confirmed")
        return


async def _list_root(namespace: Namespace, deadline: float) -> None:
    """List the root at once: the first ``ls`` (or path lookup) of a new mount is then free."""
    with trio.move_on_after(deadline):
        try:
            await namespace.listing(ROOT_INODE)
        except RemoteError as exc:  # the first real lookup will report it
            log.debug("listing the root in advance failed: %s", exc)
        except Exception:  # nor a bug: the first real lookup meets it too, as EIO
            log.exception("listing the root in advance failed unexpectedly")


async def _terminate_on_signal(session: _Session) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            session.stop_requested = True
            pyfuse3.terminate()
            return


def _check_stopped_on_purpose(config: MountConfig, session: _Session) -> None:
    """Raise :class:`UnexpectedStop` if the FUSE loop ended while still attached, unasked."""
    if session.stop_requested:
        return
    if session.device is None:  # it never answered a stat: is a remotefs mount still there?
        on_top = mount_at(config.mountpoint)
        still = on_top is not None and on_top.fstype == "fuse.remotefs"
    else:
        still = attached(config.mountpoint, session.device)
    if still:
        raise UnexpectedStop(
            f"the FUSE loop ended while {config.mountpoint} was still mounted, and no signal "
            "asked for it"
        )


async def invalidate_pages(inode: int) -> None:
    """Drop the kernel's cached pages of ``inode`` (after an evict: its next read comes to
    the mount, and to the platform). From a worker thread: the call may block."""
    try:
        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, pyfuse3.InodeT(inode), False)
    except OSError as exc:  # ENOENT: the kernel holds nothing of it
        log.debug("invalidating inode %d: %s", inode, exc.strerror)


def cache_directory(root: Path, namespace: str) -> Path:
    """One directory per platform endpoint under ``root``: mounts of two platforms (the demo)
    can share a ``--cache-dir`` without sharing (or locking each other out of) a store."""
    platform = namespace.partition("@")[0] or "remote"
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:12]
    return root.expanduser() / f"{platform}-{digest}"


async def _announce_once_initialised(
    config: MountConfig, session: _Session, on_ready: Callable[[], None]
) -> None:
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
        session.device = st.st_dev
        raise_kernel_readahead(st.st_dev)
    on_ready()
    notify("READY=1")
    log.info("mounted %s at %s (pid %d)", config.platform, config.mountpoint, os.getpid())


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
