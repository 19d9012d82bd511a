"""Reading a child process's one-line readiness report, with a deadline.

Both ``remotefs emulator`` (``listening on URL`` on stdout) and ``remotefs mount`` (``ready``
or ``error: …`` on the ``REMOTEFS_READY_FD`` pipe) announce readiness with one line. The fd is
read unbuffered, a byte at a time, so that a selector never waits on data a buffer already
holds and nothing after the line is consumed.
"""

from __future__ import annotations

import os
import selectors
import time


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
