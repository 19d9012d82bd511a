"""What a mount is asked to do, and every default, in one place.

:class:`MountConfig` is built by the command line (``remotefs.cli``) and read by the mount
(``remotefs.mount``), the backends (``remotefs.backends``) and the demo. The defaults below
are the only ones: the CLI shows them in ``--help`` and the mount uses them when a caller
(the demo, a test) leaves a field unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TTL = 60.0
"""Seconds a directory listing (and the kernel's attributes of its entries) are trusted."""
DEFAULT_TIMEOUT = 30.0
"""Seconds any one filesystem operation may wait for the network before it answers EIO."""
DEFAULT_CACHE_SIZE = 10 << 30
"""Bytes of file blocks kept on disk."""
PLATFORMS = ("sevenbridges", "genestack")


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/remotefs``, else ``~/.cache/remotefs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "remotefs"


@dataclass(frozen=True)
class MountConfig:
    mountpoint: Path
    platform: str
    """One of :data:`PLATFORMS`."""
    api_url: str | None = None
    project: str | None = None
    profile: str | None = None
    token_file: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_root)
    cache_size: int = DEFAULT_CACHE_SIZE
    allow_other: bool = False
    ttl: float = DEFAULT_TTL
    """Seconds a directory listing (and the kernel's attributes) are trusted."""
    deadline: float = DEFAULT_TIMEOUT
    """Seconds any one filesystem operation may wait for the network before EIO."""
