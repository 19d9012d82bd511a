"""``remotefs warm`` and ``remotefs status``: the command-line side of the control channel.

Paths are files or folders inside running mounts. Each is traced to its mount (the nearest
``fuse.remotefs`` mount point above it, from ``/proc/self/mountinfo``), whose control socket
its root names (``user.remotefs.control``); the files are found by walking the tree through
the mount itself (listings as usual) and named to the mount by inode number. See
``remotefs.control`` for the protocol.

Progress: a bar on a terminal (``tqdm``: files, bytes, rate, ETA), a plain line per file
otherwise, nothing with ``--quiet``. Ctrl-C closes the connection: the mount stops the warm,
and what was fetched stays.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from remotefs.mounts import mount_at, mounts
from remotefs.units import format_size

CONTROL_XATTR = "user.remotefs.control"


class ClientError(Exception):
    """A one-line reason the command cannot do what was asked."""


def mount_of(path: Path) -> Path:
    """The remotefs mount point that ``path`` lies in."""
    absolute = Path(os.path.abspath(path))
    for candidate in (absolute, *absolute.parents):
        found = mount_at(candidate)
        if found is not None:
            if found.fstype == "fuse.remotefs":
                return candidate
            break
    raise ClientError(f"{path} is not inside a remotefs mount")


def control_socket(mountpoint: Path) -> Path:
    try:
        return Path(os.fsdecode(os.getxattr(mountpoint, CONTROL_XATTR)))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            raise ClientError(
                f"{mountpoint}: the mount has no control socket (its log says why), or it is "
                "an older remotefs"
            ) from None
        raise ClientError(
            f"{mountpoint}: the mount does not answer ({exc.strerror}); is it an older remotefs?"
        ) from None


def ask(socket_path: Path, request: dict[str, Any], last: str = "done") -> Iterator[dict[str, Any]]:
    """Send ``request`` to a mount; yield its events up to the ``last`` one (``done``, or
    ``status`` for a status). An answer that ends before it (the mount stopped, or closed
    the connection) is a ``ClientError``, never a quiet success."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(os.fsencode(socket_path))
            sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise ClientError(f"cannot reach the mount's control socket: {exc.strerror}") from None
        with sock.makefile("rb") as lines:
            try:
                for line in lines:
                    if not line.endswith(b"\n"):
                        break  # cut short: the connection ended mid-line
                    event = json.loads(line)
                    if event.get("event") == "error":
                        raise ClientError(event.get("message", "the mount refused"))
                    yield event
                    if event.get("event") == last:
                        return
            except (OSError, ValueError):  # reset, or a line that is not JSON
                pass
    finally:
        sock.close()
    raise ClientError(
        f"the mount stopped answering before the {request.get('op', 'request')} was done "
        "(did it stop? see its log)"
    )


@dataclass
class Target:
    mountpoint: Path
    files: dict[int, tuple[Path, int]] = field(default_factory=dict)
    """inode → (path, size)."""


def collect(paths: list[Path], recursive: bool) -> list[Target]:
    """The files named by ``paths`` (folders walked if ``recursive``), by mount."""
    targets: dict[Path, Target] = {}
    for path in paths:
        if not path.exists():
            raise ClientError(f"{path}: no such file or folder")
        target = targets.setdefault(mount_of(path), Target(mount_of(path)))
        if path.is_dir():
            if not recursive:
                raise ClientError(f"{path} is a folder: add --recursive to take all its files")
            for folder, _, names in os.walk(path):
                for name in names:
                    _add(target, Path(folder) / name)
        else:
            _add(target, path)
    return list(targets.values())


def _add(target: Target, path: Path) -> None:
    st = path.stat()
    target.files[st.st_ino] = (path, st.st_size)


def describe(size: int, held: int, pinned: bool) -> str:
    if held >= size:
        state = "full"
    elif held <= 0:
        state = "none"
    else:
        state = f"partial {min(99, max(1, held * 100 // size))}%"
    return state + (" pinned" if pinned else "")


def warm(
    paths: list[Path],
    *,
    recursive: bool,
    pin: bool,
    check: bool,
    evict: bool,
    jobs: int,
    quiet: bool,
    out: IO[str] = sys.stdout,
) -> int:
    targets = collect(paths, recursive)
    op = "check" if check else "evict" if evict else "warm"
    failed = 0
    for target in targets:
        socket_path = control_socket(target.mountpoint)
        request = {"op": op, "inodes": list(target.files), "pin": pin, "jobs": jobs}
        if op == "warm":
            failed += _warm(socket_path, request, target, quiet, out)
            continue
        for event in ask(socket_path, request):
            if event["event"] != "file":
                continue
            path = target.files.get(event["inode"], (Path(str(event["inode"])), 0))[0]
            if not event["ok"]:
                failed += 1
                print(f"{path}: {event['error']}", file=out)
            elif op == "check":
                print(
                    f"{describe(event['size'], event['held'], event['pinned']):<16} {path}",
                    file=out,
                )
            elif not quiet:
                print(f"evicted {path}", file=out)
    return 1 if failed else 0


def _warm(
    socket_path: Path, request: dict[str, Any], target: Target, quiet: bool, out: IO[str]
) -> int:
    bar: Any = None
    done_files = failed = 0
    total_files = len(target.files)
    events = ask(socket_path, request)
    for event in events:
        kind = event["event"]
        if kind == "start" and not quiet and out.isatty():
            from tqdm import tqdm

            # A pty may report a 0x0 window (no terminal on its other side): tqdm then draws
            # nothing, so the size comes from shutil (80x24 where it is unknown).
            size = shutil.get_terminal_size()
            bar = tqdm(total=event["bytes"], unit="B", unit_scale=True, unit_divisor=1024,
                       file=out, ncols=size.columns, nrows=size.lines,
                       desc=f"0/{total_files} files")  # fmt: skip
        elif kind == "progress" and bar is not None:
            bar.update(event["bytes"])
        elif kind == "file":
            done_files += 1
            path = target.files.get(event["inode"], (Path(str(event["inode"])), 0))[0]
            if not event["ok"]:
                failed += 1
            if bar is not None:
                bar.set_description(f"{done_files}/{total_files} files")
                if not event["ok"]:
                    bar.write(f"{path}: {event['error']}")
            elif not quiet or not event["ok"]:
                state = "cached" if event["ok"] else f"failed: {event['error']}"
                print(f"{path}: {state}", file=out, flush=True)
    if bar is not None:
        bar.close()
    return failed


def status(mountpoints: list[Path], *, as_json: bool, out: IO[str] = sys.stdout) -> int:
    points = [mount_of(m) for m in mountpoints] or [
        Path(m.mountpoint) for m in mounts() if m.fstype == "fuse.remotefs"
    ]
    if not points:
        raise ClientError("no remotefs mount is mounted")
    started = time.monotonic()
    reports = []
    for point in points:
        (event,) = [e for e in ask(control_socket(point), {"op": "status"}, last="status")]
        event.pop("event", None)
        event["answered_in_ms"] = round((time.monotonic() - started) * 1000, 1)
        reports.append(event)
    if as_json:
        json.dump(reports if len(reports) > 1 else reports[0], out, indent=2)
        out.write("\n")
    else:
        for report in reports:
            out.write(render(report))
    return 0


def render(s: dict[str, Any]) -> str:
    size = format_size
    lines = [
        f"{s['mountpoint']}: {s['platform']} at {s['endpoint']} (pid {s['pid']}, up "
        f"{s['uptime_s']:.0f} s)",
        "  requests     "
        + (
            ", ".join(
                f"{kind} {c['requests']} ({c['retries']} retries, {c['errors']} errors)"
                for kind, c in s["requests"].items()
            )
            or "none"
        ),
        f"  bytes        fetched {size(s['bytes_fetched'])}, served {size(s['bytes_served'])}; "
        f"reads {s['reads']}, from the cache "
        + (f"{s['hit_ratio']:.0%}" if s["hit_ratio"] is not None else "-"),
        f"  disk cache   {size(s['disk_cache']['used_bytes'])} of "
        f"{size(s['disk_cache']['limit_bytes'])}; pinned {s['pins']['files']} files "
        f"({size(s['pins']['bytes'])}), taking {size(s['pins']['slot_bytes'])} of "
        f"{size(s['pins']['limit_bytes'])} allowed",
        f"  memory       {size(s['memory']['rss_bytes'])} resident, "
        f"{size(s['memory']['cache_bytes'])} of it cached bytes",
        f"  in flight    {s['in_flight']['fetches']} fetches, {size(s['in_flight']['bytes'])}",
    ]
    rate = s["rate_limit"]
    if rate is not None:
        reset = f", resets in {rate['reset_in_s']:.0f} s" if rate["reset_in_s"] is not None else ""
        lines.append(f"  API budget   {rate['remaining']} of {rate['limit']} left{reset}")
    shared = s.get("shared_state")
    if shared is not None:
        budget = shared["budget_remaining"]
        lines.append(
            f"  shared state {shared['url']}: "
            + (f"joined, {shared['members']} mounts" if shared["up"] else "not answering, alone")
            + (f", cluster budget {budget} left" if budget is not None and shared["up"] else "")
            + f"; shared {shared['hits']} hits, {shared['misses']} fetched here, "
            f"{shared['waits']} waits"
        )
    conns = s.get("connections")
    if conns is not None:
        tls = (
            f"; TLS {conns['tls_handshakes']} handshakes, {conns['tls_resumed']} resumed"
            if conns["tls_handshakes"]
            else ""
        )
        lines.append(
            f"  connections  opened {conns['connects']} ({conns['opened_ahead']} ahead of a "
            f"request), {conns['idle']} idle, {conns['closed_idle']} closed by servers while "
            f"idle{tls}"
        )
    error = s["last_error"]
    lines.append(
        f"  last error   {error['message']} ({time.time() - error['at']:.0f} s ago)"
        if error
        else "  last error   none"
    )
    return "\n".join(lines) + "\n"
