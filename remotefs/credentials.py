"""Where credentials come from, and the :class:`Secret` that keeps tokens out of logs.

Credentials are read from where each platform's users already keep them, never from a
command-line argument (``ps`` shows those; design.md §6):

- **Seven Bridges / CAVATICA** (spec 1.2), as sevenbridges-python reads them: with no
  profile named, ``SB_AUTH_TOKEN`` and ``SB_API_ENDPOINT`` from the environment, else the
  ``[default]`` section of ``~/.sevenbridges/credentials``; with ``--profile NAME``, that
  section of the file (an explicit profile wins over the environment, as in
  ``sevenbridges.Config(profile=...)``). Keys: ``api_endpoint``, ``auth_token``. ``--api-url``
  overrides the endpoint from any source. ``--token-file FILE`` (first non-empty line) is the
  token instead of any of those, with the endpoint from ``--api-url`` or ``SB_API_ENDPOINT``
  (for fstab and systemd, where no environment is at hand).
- **Genestack ODM** (spec 2.2): ``--token-file FILE`` (first non-empty line) is an API token;
  else ``GENESTACK_API_TOKEN`` (sent as ``Genestack-API-Token``); else
  ``GENESTACK_ACCESS_TOKEN`` (an OAuth access token, sent as ``Authorization: Bearer``). The
  host is ``--api-url``, else ``ODM_URL`` (the variable Genestack's own tools use).

Invariants: a token only ever travels inside a :class:`Secret`, whose ``repr``/``str`` are
``***``; :class:`CredentialsError` messages name the places looked at and never a token.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from remotefs.errors import redact_url

log = logging.getLogger(__name__)

SB_TOKEN_ENV = "SB_AUTH_TOKEN"
SB_ENDPOINT_ENV = "SB_API_ENDPOINT"
SB_CREDENTIALS_FILE = Path(".sevenbridges") / "credentials"
"""Relative to the home directory (sevenbridges-python's location)."""
SB_DEFAULT_PROFILE = "default"

ODM_API_TOKEN_ENV = "GENESTACK_API_TOKEN"
ODM_ACCESS_TOKEN_ENV = "GENESTACK_ACCESS_TOKEN"
ODM_URL_ENV = "ODM_URL"


class CredentialsError(ValueError):
    """No usable credentials: the message says where we looked (never what we found)."""


class Secret:
    """A token that does not print itself: ``repr``/``str``/f-strings give ``***``.

    Tracebacks with locals, log lines with ``%r`` and dataclass reprs all stay clean; only
    :meth:`reveal`, called where a header is built, gives the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self, purpose: str) -> str:
        """A keyed hash of the token (HMAC-SHA256 keyed by ``purpose``, 128 bits in hex):
        the same token gives the same fingerprint, which says nothing of the token. What
        names a user's records in a cache or a shared store, never the token itself."""
        digest = hmac.new(purpose.encode(), self._value.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def derive_key(self, purpose: str) -> bytes:
        """A 256-bit key derived from the token for ``purpose`` (HMAC-SHA256 keyed by the
        token, as HKDF-Expand does): what seals a user's values in a shared store, so that
        only holders of the token can read them."""
        return hmac.new(self._value.encode(), purpose.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str:
        raise TypeError("a Secret is not picklable")


def as_secret(token: Secret | str) -> Secret:
    return token if isinstance(token, Secret) else Secret(token)


def sevenbridges_credentials(
    profile: str | None,
    api_url: str | None,
    env: Mapping[str, str] = os.environ,
    home: Path | None = None,
    token_file: Path | str | None = None,
) -> tuple[str, Secret]:
    """``(api endpoint, token)`` for Seven Bridges / CAVATICA (see the module docstring)."""
    if token_file is not None:
        if profile is not None:
            raise CredentialsError("give --token-file or --profile, not both")
        endpoint = api_url or env.get(SB_ENDPOINT_ENV, "").strip()
        if not endpoint:
            raise CredentialsError(
                f"--token-file needs the API endpoint: pass --api-url or set {SB_ENDPOINT_ENV}"
            )
        return _endpoint(endpoint), Secret(_read_token_file(Path(token_file)))
    if profile is None and env.get(SB_TOKEN_ENV, "").strip():
        endpoint = api_url or env.get(SB_ENDPOINT_ENV, "").strip()
        if not endpoint:
            raise CredentialsError(
                f"{SB_TOKEN_ENV} is set but {SB_ENDPOINT_ENV} is not: set it, or pass --api-url"
            )
        return _endpoint(endpoint), Secret(env[SB_TOKEN_ENV].strip())
    path = (Path.home() if home is None else home) / SB_CREDENTIALS_FILE
    section = profile or SB_DEFAULT_PROFILE
    if profile is None:
        where = f"neither {SB_TOKEN_ENV} in the environment nor section [{section}] of {path}"
    else:
        where = f"no section [{section}] in {path}"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise CredentialsError(f"no Seven Bridges credentials: found {where}") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise CredentialsError(
            f"{path}: not a readable credentials file ({type(exc).__name__})"
        ) from None  # a ParsingError quotes the bad line, which may hold a token
    if not parser.has_section(section):
        raise CredentialsError(f"no Seven Bridges credentials: found {where}")
    token = parser.get(section, "auth_token", fallback="").strip()
    endpoint = api_url or parser.get(section, "api_endpoint", fallback="").strip()
    if not token:
        raise CredentialsError(f"{path}: section [{section}] has no auth_token")
    if not endpoint:
        raise CredentialsError(
            f"{path}: section [{section}] has no api_endpoint (or pass --api-url)"
        )
    return _endpoint(endpoint), Secret(token)


def genestack_credentials(
    api_url: str | None,
    token_file: Path | str | None,
    env: Mapping[str, str] = os.environ,
) -> tuple[str, Secret, bool]:
    """``(host root, token, bearer)`` for Genestack ODM (see the module docstring).

    ``bearer`` is true for an OAuth access token (``Authorization: Bearer``), false for an API
    token (``Genestack-API-Token``).
    """
    url = api_url or env.get(ODM_URL_ENV, "").strip()
    if not url:
        raise CredentialsError(f"no Genestack host: pass --api-url or set {ODM_URL_ENV}")
    host = _host_root(url)
    if token_file is not None:
        return host, Secret(_read_token_file(Path(token_file))), False
    if env.get(ODM_API_TOKEN_ENV, "").strip():
        return host, Secret(env[ODM_API_TOKEN_ENV].strip()), False
    if env.get(ODM_ACCESS_TOKEN_ENV, "").strip():
        return host, Secret(env[ODM_ACCESS_TOKEN_ENV].strip()), True
    raise CredentialsError(
        f"no Genestack token: pass --token-file FILE or set {ODM_API_TOKEN_ENV} "
        f"(API token) or {ODM_ACCESS_TOKEN_ENV} (OAuth access token)"
    )


def _read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"{path}: cannot read the token file ({type(exc).__name__})"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: the token file is readable by other users (chmod 600 it)", path)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise CredentialsError(f"{path}: the token file is empty")


def _endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CredentialsError(f"{redact_url(url)!r} is not an http(s) API endpoint")
    return url


def _host_root(url: str) -> str:
    """``https://host[:port]`` (plus any path prefix before ``/api/``): ODM paths are absolute
    from the host root (spec 2.1), so a pasted ``…/api/v1/as-user`` URL is cut back."""
    url = _endpoint(url)
    cut = url.find("/api/", len(urlsplit(url).scheme) + 3)
    return url[:cut] if cut >= 0 else url
