"""The ``--shared-state`` URL: ``redis[s]://[USER[:PASSWORD]@]HOST[:PORT][/DB]``.

Parsed, shown without its password (logs, errors, status) and split from it (a daemonised
mount gets the password through its environment, never its command line: ``ps`` shows that
to every user). Kept apart from :mod:`remotefs.shared` so that the command line can use it
without the cluster's dependencies installed.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

PASSWORD_ENV = "REMOTEFS_REDIS_PASSWORD"
"""Where the store's password may come from (after ``--shared-state-password-file`` and
the URL's own)."""


class SharedStateError(Exception):
    """The shared state cannot be used as configured; a one-line message."""


def redacted(url: str) -> str:
    """The URL without its password (for logs, status and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that does not parse)"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def parse_url(url: str) -> tuple[str, int, int, bool, str | None, str | None]:
    """``redis[s]://[user[:password]@]host[:port][/db]`` → host, port, db, tls, user, password."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise SharedStateError(f"--shared-state {redacted(url)}: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SharedStateError(
            f"--shared-state {redacted(url)}: expected redis://HOST[:PORT][/DB] or rediss://…"
        )
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or parts.query:
        raise SharedStateError(f"--shared-state {redacted(url)}: the path is a database number")
    password = unquote(parts.password) if parts.password is not None else None
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, port, int(db), parts.scheme == "rediss", user, password


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` with its password taken out, and that password (``None``: it had none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=user + host).geturl(), unquote(parts.password)


def has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False
