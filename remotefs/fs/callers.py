"""Who is asking: file managers, thumbnailers and indexers, known by their program's name.

A file manager opening a folder reads the head of every file whose name does not settle its
type (twice, for pcmanfm); thumbnailers read whole images; desktop indexers and ``updatedb``
walk whole trees; ``file`` reads 7 MiB of each end. On a local disk that is cheap; here each
read is a download, and on Seven Bridges each file also costs a ``download_info`` from the
API budget. So a request whose process (the FUSE request's pid → ``/proc/PID/exe``, else
``/proc/PID/comm``) matches :data:`DEFAULT_SNIFFERS` (or the mount's own list) is a
*sniffer's*: ``remotefs.cache.reader`` serves it exact ranges only, with a byte cap per file,
and a small API allowance for all of them together.

Patterns are ``fnmatch`` globs on the program's file name, compiled into one expression when
the mount starts (compiled at the first ``open`` instead, they cost that open ~2.5 ms: a cold
region query waited for them). A pid's class is remembered for ``REMEMBER_SECONDS`` (pids
are reused, but not that fast).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Iterable

from remotefs.config import DEFAULT_SNIFFERS

REMEMBER_SECONDS = 10.0
REMEMBERED = 4096


def program_name(pid: int) -> str:
    """The file name of ``pid``'s executable (``/proc/PID/exe``), else its ``comm``; ``""``
    when the process is gone or hidden."""
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class Callers:
    """Tells a sniffer's pid from anyone else's."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_SNIFFERS) -> None:
        self.patterns = tuple(patterns)
        self._any = re.compile("|".join(fnmatch.translate(p) for p in self.patterns))
        self._known: dict[int, tuple[float, bool]] = {}

    def matches(self, name: str) -> bool:
        """``name`` matches one of the patterns (as ``fnmatch.fnmatchcase``)."""
        return bool(self.patterns) and bool(name) and self._any.match(name) is not None

    def is_sniffer(self, pid: int) -> bool:
        if not self.patterns or pid <= 0:
            return False
        now = time.monotonic()
        known = self._known.get(pid)
        if known is not None and known[0] > now:
            return known[1]
        verdict = self.matches(program_name(pid))
        if len(self._known) >= REMEMBERED:
            self._known.clear()
        self._known[pid] = (now + REMEMBER_SECONDS, verdict)
        return verdict
