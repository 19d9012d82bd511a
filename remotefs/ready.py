"""Reading a child process's one-line readiness report, with a deadline.

Both ``remotefs emulator`` (``listening on URL`` on stdout) and ``remotefs mount`` (``ready``
or ``error: …`` on the ``REMOTEFS_READY_FD`` pipe) announce readiness with one line. The fd is
read unbuffered, a byte at a time, so that a selector never waits on data a buffer already
holds and nothing after the line is consumed.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO, Any


class NotReady(TimeoutError):
    """No complete line within the timeout."""


def read_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd`` (stripped), or ``""`` if it was closed before one.

    Raises:
        NotReady: no newline within ``timeout`` seconds.
    """
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise NotReady(f"no answer within {timeout:.0f} s")
            byte = os.read(fd, 1)
            if not byte:
                break
            line += byte
    return line.decode(errors="replace").strip()


READY_FD_ENV = "REMOTEFS_READY_FD"


def spawn_mount(
    args: list[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    log: IO[bytes] | None = None,
    **popen: Any,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``remotefs mount ARGS --foreground``; return it and its readiness line.

    The line is ``ready`` or ``error: …``, or ``""`` if the child exited without one.
    Credentials travel in ``env`` only, never in ``args``.

    Raises:
        NotReady: no line within ``timeout``; the child has then been killed (by its PID).
    """
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "remotefs", "mount", *args, "--foreground"]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env={**env, READY_FD_ENV: str(write_end)},
        pass_fds=(write_end,),
        **popen,
    )
    os.close(write_end)
    try:
        return proc, read_line(read_end, timeout)
    except NotReady:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(read_end)
