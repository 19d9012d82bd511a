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


def _userinfo(url: str) -> tuple[str, str | None, str]:
    """``url`` as (``scheme://``, what stands before its host's last ``@``, the rest),
    split on the raw text: a password may hold ``/``, ``?`` or ``#``, which a URL parser
    takes for the end of the host and would show in full."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return scheme + sep, None, rest
    return scheme + sep, userinfo, host


def _password_of(userinfo: str | None) -> str | None:
    if userinfo is None or ":" not in userinfo:
        return None
    return unquote(userinfo.partition(":")[2])


def redacted(url: str) -> str:
    """The URL without its password (for logs, status and errors)."""
    prefix, userinfo, rest = _userinfo(url)
    if _password_of(userinfo) is None:
        return url
    assert userinfo is not None
    return f"{prefix}{userinfo.partition(':')[0]}:***@{rest}"


def parse_url(url: str) -> tuple[str, int, int, bool, str | None, str | None]:
    """``redis[s]://[user[:password]@]host[:port][/db]`` → host, port, db, tls, user, password."""
    prefix, userinfo, rest = _userinfo(url)
    try:
        parts = urlsplit(prefix + rest)  # no user information: it was split off above
        port = parts.port or 6379
    except ValueError as exc:
        raise SharedStateError(f"--shared-state {redacted(url)}: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SharedStateError(
            f"--shared-state {redacted(url)}: expected redis://HOST[:PORT][/DB] or rediss://…"
        )
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or parts.query or parts.fragment:
        raise SharedStateError(f"--shared-state {redacted(url)}: the path is a database number")
    user = unquote(userinfo.partition(":")[0]) if userinfo else None
    return (
        parts.hostname,
        port,
        int(db),
        parts.scheme == "rediss",
        user or None,
        _password_of(userinfo),
    )


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` with its password taken out, and that password (``None``: it had none)."""
    prefix, userinfo, rest = _userinfo(url)
    password = _password_of(userinfo)
    if password is None:
        return url, None
    assert userinfo is not None
    user = userinfo.partition(":")[0]
    return f"{prefix}{user + '@' if user else ''}{rest}", password


def has_password(url: str) -> bool:
    return _password_of(_userinfo(url)[1]) is not None
