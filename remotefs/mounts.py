"""What the kernel has mounted where: ``/proc/self/mountinfo``, read when asked.

One reader for every question the mount and the command line ask: is a remotefs mount
attached at a path (``remotefs umount`` refuses anything else; the mount notices its FUSE
loop ending while it is still attached), and is a path an automount trigger
(``x-systemd.automount``: listing it would wait for the very mount being made).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mounted:
    device: str
    """``major:minor``."""
    mountpoint: str
    fstype: str
    """``fuse.remotefs`` for a remotefs mount, ``autofs`` for an automount trigger, …"""


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)


def mounts() -> list[Mounted]:
    """Every mount this process can see, in mount order (later ones on top)."""
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, rest = before.split(), after.split()
        if len(fields) >= 5 and rest:
            found.append(Mounted(fields[2], _unescape(fields[4]), rest[0]))
    return found


def mount_at(path: Path) -> Mounted | None:
    """The topmost mount at ``path`` (absolute), or ``None``."""
    wanted = str(path)
    on_top = None
    for mounted in mounts():
        if mounted.mountpoint == wanted:
            on_top = mounted
    return on_top


def attached(path: Path, device: int) -> bool:
    """Whether the mount of ``device`` (an ``st_dev``) is still attached at ``path``."""
    import os

    wanted = f"{os.major(device)}:{os.minor(device)}"
    return any(m.device == wanted and m.mountpoint == str(path) for m in mounts())
