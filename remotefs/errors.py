"""Domain errors and the one table that turns them into errno values.

::

    RemoteError                  anything that went wrong talking to a platform
    ├── NotFound                 the ID or name does not exist (any more)          ENOENT
    ├── AccessDenied             401/403 that is not an expired signed URL        EACCES
    ├── Stale                    the file changed under an open handle             ESTALE
    ├── Transient                network/5xx/429 that outlived retries            EIO
    │   └── DeadlineExceeded     the operation's deadline came first              EIO
    └── ProtocolError            the server answered something impossible          EIO
    LocalError                   what the filesystem itself refuses
    ├── ReadOnly                 any write                                         EROFS
    ├── NotADirectory            a directory operation on a file                  ENOTDIR
    ├── IsADirectory             a file operation on a directory                  EISDIR
    ├── NoSuchAttribute          an extended attribute the entry does not have     ENODATA
    ├── Unsupported              security.*/system.* extended attributes          EOPNOTSUPP
    ├── InvalidQuery             a malformed query (a name the mount must parse)   EINVAL
    └── Withheld                 a sniffer's read past what it may fetch           EIO

Only :func:`to_errno` maps exceptions to errno values; only ``pyfuse3.FUSEError`` leaves a
FUSE handler (see ``remotefs.fs.operations``). An unknown exception maps to EIO.

:class:`DeadlineExceeded` is the one outcome that is not a fact about the platform but about
the caller's time: a shared outcome (``remotefs.concurrency``) never hands it to another task,
which may have time left to succeed.

Messages never contain credentials: callers pass URLs through :func:`redact_url` first.
"""

from __future__ import annotations

import errno
import re


class RemoteError(Exception):
    """A failure talking to a platform."""


class NotFound(RemoteError):
    pass


class AccessDenied(RemoteError):
    pass


class Stale(RemoteError):
    pass


class Transient(RemoteError):
    pass


class DeadlineExceeded(Transient):
    """The operation's deadline passed before an answer (or the next retry would pass it)."""


class ProtocolError(RemoteError):
    pass


class LocalError(Exception):
    """Something the mount refuses by itself, with no platform involved."""


class ReadOnly(LocalError):
    pass


class NotADirectory(LocalError):
    pass


class IsADirectory(LocalError):
    pass


class NoSuchAttribute(LocalError):
    pass


class Unsupported(LocalError):
    pass


class InvalidQuery(LocalError):
    pass


class Withheld(LocalError):
    """Bytes a file manager, thumbnailer or indexer may not make the mount fetch."""


ERRNO_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (AccessDenied, errno.EACCES),
    (Stale, errno.ESTALE),
    (Transient, errno.EIO),
    (ProtocolError, errno.EIO),
    (ReadOnly, errno.EROFS),
    (NotADirectory, errno.ENOTDIR),
    (IsADirectory, errno.EISDIR),
    (NoSuchAttribute, errno.ENODATA),  # ENOATTR on Linux
    (Unsupported, errno.EOPNOTSUPP),
    (InvalidQuery, errno.EINVAL),
    (Withheld, errno.EIO),
)


def to_errno(exc: BaseException) -> int:
    for kind, number in ERRNO_BY_ERROR:
        if isinstance(exc, kind):
            return number
    return errno.EIO


_SECRET_PARAMS = re.compile(r"(?i)(Signature|X-Amz-Signature|X-Amz-Credential|token)=[^&\s]*")


def redact_url(url: str) -> str:
    """A URL fit for logs and messages: signatures and tokens replaced by ``***``."""
    return _SECRET_PARAMS.sub(r"\1=***", url)
