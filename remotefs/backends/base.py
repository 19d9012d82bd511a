"""The protocol every platform backend implements, and nothing more.

The filesystem core calls only these methods; it never knows which platform it serves, and a
backend never knows about FUSE. All methods are trio-async and raise only
:mod:`remotefs.errors` exceptions (``NotFound``, ``AccessDenied``, ``Transient``,
``ProtocolError``) for remote failures.
"""

from __future__ import annotations

from typing import Protocol

from remotefs.model import RemoteEntry


class Backend(Protocol):
    xattr_namespace: str
    """``sbg`` or ``odm``: metadata is served as ``user.<xattr_namespace>.<key>``."""
    cache_scope: str
    """The endpoint the IDs belong to: cached bytes are kept per platform and scope."""

    async def check(self) -> None:
        """Verify the credentials and the target (project…) before mounting.

        Raises:
            AccessDenied: the token is refused. NotFound: the project does not exist.
            Transient: the platform cannot be reached.
        """
        ...

    def root(self) -> RemoteEntry:
        """The entry of the mount's root directory."""
        ...

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        """All children of ``directory``, every page fetched, every size known."""
        ...

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        """Exactly ``min(size, entry.size - offset)`` bytes of ``entry`` from ``offset``.

        Raises ``ProtocolError`` rather than returning fewer or other bytes.
        """
        ...

    async def aclose(self) -> None: ...


def read_length(entry: RemoteEntry, offset: int, size: int) -> int:
    """How many bytes a ``read(entry, offset, size)`` returns (0: nothing to fetch)."""
    if offset < 0 or size < 0:
        raise ValueError(f"read of {size} bytes at {offset}")
    return max(0, min(size, entry.size - offset))
