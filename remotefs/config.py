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
DEFAULT_SNIFFERS: tuple[str, ...] = (
    # file managers: their own MIME sniffing (and in-process thumbnails)
    "pcmanfm", "pcmanfm-qt", "nautilus", "thunar", "Thunar", "dolphin", "nemo", "caja",
    "spacefm", "krusader",
    # thumbnailers
    "*thumbnailer*", "tumblerd", "ffmpegthumbnailer", "totem-video-thumbnailer",
    "gnome-desktop-thumbnailer",
    # desktop indexers and locate databases
    "tracker-miner-fs*", "tracker-extract*", "localsearch*", "baloo_file*", "baloorunner",
    "updatedb*", "mlocate", "plocate*",
    # content sniffers
    "file",
)  # fmt: skip
"""Programs whose reads are a sniffer's (``remotefs.fs.callers``), unless the mount is told
otherwise (``--sniffer``, ``--no-default-sniffers``)."""
SNIFFER_BYTES = 1 << 20
"""Bytes a sniffer may have fetched per file: a MIME sniff takes 4 KiB, ``file`` the first
1 MiB it reads (it reads up to 7 MiB of each end)."""


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
    filters: tuple[str, ...] = ()
    """``--filter``: the mount's root shows only the files that match (``remotefs.query``)."""
    query: str | None = None
    """``--query`` (ODM full text), likewise."""
    metrics_addr: str | None = None
    """``HOST:PORT`` for a Prometheus endpoint (``remotefs.prometheus``), or none."""
    sniffers: tuple[str, ...] = DEFAULT_SNIFFERS
    """Programs (globs) whose reads get exact ranges and ``sniffer_bytes`` per file."""
    sniffer_bytes: int = SNIFFER_BYTES
    shared_state: str | None = field(default=None, repr=False)
    """``--shared-state redis[s]://…``: the cluster's store (``remotefs.shared``); may hold a
    password, hence never in a repr."""
    shared_state_ca: Path | None = None
    """CA bundle for a ``rediss://`` store (default: the system's)."""
    shared_state_password_file: Path | None = None
    """A file whose first line is the store's password."""
