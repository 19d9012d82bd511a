"""Queries as folders: the name syntax of ``.query/NAME`` and of ``--filter``/``--query``.

A query is written as the API's query string: ``key=value`` pairs joined by ``&``::

    metadata.sample_id=ERR315335                 SB: a metadata field
    tag=tumor&tag=normal                         SB: the same key twice is OR (spec 1.4)
    metadata.sample_id=ERR1&origin.task=<uuid>   SB: different keys are AND
    filter="Data Class"=Document                 ODM: the filter grammar (spec 2.4, A15)
    filter=species=human && "Data Class"=Document&query=TP53   ODM: filter and full text

- A single ``&`` separates pairs; ``&&`` inside a value is the ODM filter's AND. The first
  ``=`` of a pair ends its key; later ones belong to the value.
- A name cannot hold ``/``: write ``∕`` (U+2215, as the mount shows ``/`` in names) or
  ``%2F``. Percent escapes (``%XX``, UTF-8) are decoded in keys and values; ``+`` is a plus.
- **Seven Bridges** keys: ``tag``, ``name``, ``origin.task``, ``metadata.FIELD``. **ODM** keys:
  ``filter`` (its grammar checked here, the one the emulator serves:
  :mod:`remotefs.odm_filter`) and ``query`` (full text), each at most once.
- Anything else (an unknown key, an empty key or value, unbalanced quotes in a filter) is
  :class:`~remotefs.errors.InvalidQuery` (EINVAL): never a request with a broken parameter.

A parsed :class:`Query` is canonical (pairs sorted), what is sent whatever the spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from remotefs.errors import InvalidQuery
from remotefs.model import RemoteEntry, compact_json
from remotefs.odm_filter import QueryError, parse_filter, parse_query

QUERY_DIR = ".query"
"""The hidden folder under which any name is a query (a platform entry of that name is
shown as ``.query [ID]``, as the name rules do with duplicates)."""
SLASH = "\u2215"
_PAIRS = re.compile(r"(?<!&)&(?!&)")
SB_KEYS = frozenset({"tag", "name", "origin.task"})
ODM_KEYS = frozenset({"filter", "query"})


@dataclass(frozen=True)
class Query:
    params: tuple[tuple[str, str], ...]
    """``(key, value)`` pairs, sorted: the API's parameters, as sent."""

    def text(self) -> str:
        return "&".join(f"{k}={v}" for k, v in self.params)


def _pairs(name: str) -> list[tuple[str, str]]:
    if not name.strip():
        raise InvalidQuery("an empty query")
    pairs = []
    for part in _PAIRS.split(name.replace(SLASH, "/")):
        key, equals, value = part.partition("=")
        key, value = unquote(key, errors="strict"), unquote(value, errors="strict")
        if not equals:
            raise InvalidQuery(f"{part!r}: expected key=value")
        if not key:
            raise InvalidQuery(f"{part!r}: the key is empty")
        if not value:
            raise InvalidQuery(f"{part!r}: the value of {key} is empty")
        pairs.append((key, value))
    return pairs


def parse_sevenbridges(name: str) -> Query:
    """A Seven Bridges ``GET /files`` filter (spec 1.4); ``InvalidQuery`` if malformed."""
    try:
        pairs = _pairs(name)
    except UnicodeDecodeError:
        raise InvalidQuery(f"{name!r}: a %XX escape that is not UTF-8") from None
    for key, _ in pairs:
        field = key.removeprefix("metadata.")
        if key not in SB_KEYS and not (key.startswith("metadata.") and field):
            raise InvalidQuery(
                f"{key!r} is not a Seven Bridges file filter (tag, name, origin.task, "
                "metadata.FIELD)"
            )
    return Query(tuple(sorted(pairs)))


def parse_genestack(name: str) -> Query:
    """An ODM ``GET /files`` ``filter`` and/or ``query`` (spec 2.4); ``InvalidQuery`` if
    malformed (the filter's grammar is checked here, before any request)."""
    try:
        pairs = _pairs(name)
    except UnicodeDecodeError:
        raise InvalidQuery(f"{name!r}: a %XX escape that is not UTF-8") from None
    keys = [key for key, _ in pairs]
    for key, value in pairs:
        if key not in ODM_KEYS:
            raise InvalidQuery(f"{key!r} is not an ODM file query (filter, query)")
        if keys.count(key) > 1:
            raise InvalidQuery(f"{key} is given twice (join filters with && or ||)")
        try:
            (parse_filter if key == "filter" else parse_query)(value)
        except QueryError as exc:
            raise InvalidQuery(f"{key}={value}: {exc}") from None
    return Query(tuple(sorted(pairs)))


def from_options(platform: str, filters: tuple[str, ...], query: str | None) -> Query | None:
    """The query of ``--filter``/``--query`` (``None`` when neither is given).

    Seven Bridges: each ``--filter`` is one or more ``key=value`` pairs (``&``-joined), all of
    them together one query. ODM: ``--filter`` is one filter expression (its grammar, so
    ``&&``/``||`` inside it are operators) and ``--query`` the full text."""
    if not filters and query is None:
        return None
    if platform == "sevenbridges":
        if query is not None:
            raise InvalidQuery(
                "--query is Genestack's full-text search; on Seven Bridges use --filter"
            )
        return parse_sevenbridges("&".join(filters))
    if len(filters) > 1:
        raise InvalidQuery("give one --filter (join expressions with && or ||)")
    params = [("filter", filters[0])] if filters else []
    params += [("query", query)] if query is not None else []
    for key, value in params:
        try:
            (parse_filter if key == "filter" else parse_query)(value)
        except QueryError as exc:
            raise InvalidQuery(f"--{key} {value!r}: {exc}") from None
    return Query(tuple(sorted(params)))


QUERY_PREFIX = "query:"
QUERY_ROOT_PREFIX = "queries:"


def queries_entry(scope: RemoteEntry) -> RemoteEntry:
    """The ``.query`` folder of ``scope``: it lists nothing, any name in it is a query."""
    return RemoteEntry(id=QUERY_ROOT_PREFIX + scope.id, name=QUERY_DIR, is_dir=True)


def query_entry(scope: RemoteEntry, query: Query, name: str, **extra: str | None) -> RemoteEntry:
    """The folder of ``query`` over ``scope``, named ``name`` (how it was looked up). Its ID
    holds the name, not the canonical query: the kernel gives a directory one name, so two
    spellings of a query are two folders (holding the same files, the same inodes, the same
    cached bytes). Its record holds the query and the scope (and the backend's ``extra``)."""
    record = {"remotefs:query": [list(p) for p in query.params], "scope": scope.id, **extra}
    return RemoteEntry(
        id=f"{QUERY_PREFIX}{scope.id}?{name}",
        name=name,
        is_dir=True,
        version=f"0-{query.text()}",
        record_json=compact_json(record),
    )


def query_of(entry: RemoteEntry) -> Query | None:
    """The query a query folder lists (``None`` for any other entry)."""
    if not entry.id.startswith(QUERY_PREFIX):
        return None
    params = entry.record.get("remotefs:query")
    if not isinstance(params, list):
        return None
    return Query(tuple((str(k), str(v)) for k, v in params))
