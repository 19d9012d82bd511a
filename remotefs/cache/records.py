"""Small records that outlive a mount: folder listings, the mount's root, ODM file sizes.

They sit in one diskcache store (SQLite) under the endpoint's cache directory, beside the
block store, so that a remount

- makes no listing request for a folder listed less than ``--ttl`` ago,
- makes no ``HEAD`` for an ODM file whose size was learned under the same metadata stamp,
- comes up, when the platform cannot be reached, from what the last mount knew: its root and
  the folders it had listed (served stale, with their cached bytes).

**Per user.** Listings and the root say what one token may see, so their keys carry the
backend's ``user_key`` (a keyed hash of the token, never the token): two tokens sharing a
cache directory never see each other's folders. A file's size is a fact of the endpoint and
is shared.

**Format.** Keys are strings; values are JSON bytes (never pickles: a record from another
version of remotefs, or a damaged one, is dropped, never executed). :data:`FORMAT` is part
of every key, so a change of layout starts afresh rather than misreading old records.

**Threads.** Every method here blocks (SQLite): the async layer calls them through
``trio.to_thread``. Writes are queued by the ``remember_*`` methods (which do not block)
and written by :meth:`RecordStore.run`, one batch per transaction in a worker thread; a
newer record of a key replaces an older one still queued. The store is bounded
(``size_limit``, least recently stored first out); a full or failing disk costs only these
records (logged), never a read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import trio

from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

FORMAT = "r1"
RECORDS_BYTES = 256 << 20
"""The store's bound. A listing costs ~0.5 KB per entry (the platform's record, JSON), so
this holds a few hundred thousand entries."""
RECORD_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)
"""What a store raises when its files cannot be opened, read or written."""
_DISK_ERRORS = RECORD_ERRORS


@dataclass(frozen=True)
class SavedListing:
    age: float
    """Seconds since it was listed (by the wall clock: the same in the next mount)."""
    entries: list[RemoteEntry]


def encode_entry(entry: RemoteEntry) -> list[Any]:
    """An entry as JSON; a size not known yet (``sized`` false) is written -1."""
    return [
        entry.id,
        entry.name,
        entry.is_dir,
        entry.size if entry.sized else -1,
        entry.mtime_ns,
        entry.version,
        entry.record_json.decode("utf-8", "surrogatepass"),
        entry.metadata_json.decode("utf-8", "surrogatepass"),
    ]


def decode_entry(item: Any) -> RemoteEntry:
    """The inverse of :func:`encode_entry`; ``ValueError`` for anything else."""
    if not isinstance(item, list) or len(item) != 8:
        raise ValueError("not an entry")
    ident, name, is_dir, size, mtime, version, record, metadata = item
    if not (
        isinstance(ident, str)
        and isinstance(name, str)
        and isinstance(is_dir, bool)
        and isinstance(size, int)
        and isinstance(mtime, int)
        and isinstance(version, str)
        and isinstance(record, str)
        and isinstance(metadata, str)
        and size >= -1
        and not (is_dir and size < 0)
    ):
        raise ValueError("not an entry")
    return RemoteEntry(
        id=ident,
        name=name,
        is_dir=is_dir,
        size=max(0, size),
        sized=size >= 0,
        mtime_ns=mtime,
        version=version,
        record_json=record.encode("utf-8", "surrogatepass"),
        metadata_json=metadata.encode("utf-8", "surrogatepass"),
    )


def _dumps(value: Any) -> bytes:
    # ensure_ascii: platform names may hold lone surrogates, which UTF-8 cannot carry.
    return json.dumps(value, separators=(",", ":")).encode("ascii")


class RecordStore:
    """The persistent records of one endpoint's cache directory, for one user."""

    def __init__(
        self,
        directory: Path,
        *,
        user_key: str,
        size_limit: int = RECORDS_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(directory), size_limit=size_limit, eviction_policy="least-recently-stored"
        )
        self._user = user_key
        self._clock = clock
        self._queued: dict[str, Callable[[], Any]] = {}
        """Key → what makes its JSON value: encoded in the writer's thread (a 100,000-entry
        listing is tens of MB of JSON: never on the trio thread)."""
        self._wake = trio.Event()

    # --- keys -----------------------------------------------------------------------------

    def _listing_key(self, folder_id: str) -> str:
        return f"{FORMAT}:listing:{self._user}:{folder_id}"

    def _root_key(self, scope: str) -> str:
        return f"{FORMAT}:root:{self._user}:{scope}"

    @staticmethod
    def _value_key(key: str) -> str:
        return f"{FORMAT}:value:{key}"

    # --- reading (blocking: call from a worker thread) ------------------------------------

    def _load(self, key: str) -> Any:
        """The decoded JSON under ``key``, or ``None`` (absent, unreadable: dropped)."""
        try:
            raw = self._cache.get(key)
        except _DISK_ERRORS as exc:
            log.warning("cannot read the record cache: %s", exc)
            return None
        if raw is None:
            return None
        try:
            if not isinstance(raw, bytes):
                raise ValueError("not bytes")
            return json.loads(raw)
        except ValueError:
            log.warning("dropping an unreadable cached record (%s)", key.split(":")[1])
            self._delete(key)
            return None

    def _delete(self, key: str) -> None:
        with contextlib.suppress(*_DISK_ERRORS):
            self._cache.delete(key)

    def load_listing(self, folder_id: str) -> SavedListing | None:
        key = self._listing_key(folder_id)
        value = self._load(key)
        if value is None:
            return None
        try:
            listed_at, items = value
            if not isinstance(listed_at, (int, float)) or not isinstance(items, list):
                raise ValueError("not a listing")
            age = max(0.0, self._clock() - float(listed_at))
            return SavedListing(age, [decode_entry(item) for item in items])
        except (TypeError, ValueError):
            log.warning("dropping a malformed cached listing of %s", folder_id)
            self._delete(key)
            return None

    def load_root(self, scope: str) -> RemoteEntry | None:
        key = self._root_key(scope)
        value = self._load(key)
        if value is None:
            return None
        try:
            return decode_entry(value)
        except ValueError:
            self._delete(key)
            return None

    def load_values(self, keys: Iterable[str]) -> dict[str, Any]:
        """The small JSON values remembered under ``keys`` (with :meth:`remember_value`)."""
        found = {}
        for key in keys:
            value = self._load(self._value_key(key))
            if value is not None:
                found[key] = value
        return found

    # --- writing --------------------------------------------------------------------------

    def remember_listing(self, folder_id: str, entries: list[RemoteEntry]) -> None:
        listed_at = self._clock()
        self._queue(
            self._listing_key(folder_id),
            lambda: [listed_at, [encode_entry(e) for e in entries]],  # entries are immutable
        )

    def remember_root(self, scope: str, entry: RemoteEntry) -> None:
        self._queue(self._root_key(scope), lambda: encode_entry(entry))

    def remember_value(self, key: str, value: Any) -> None:
        self._queue(self._value_key(key), lambda: value)

    def _queue(self, key: str, make: Callable[[], Any]) -> None:
        self._queued[key] = make
        self._wake.set()

    def _write(self, batch: dict[str, Callable[[], Any]]) -> None:
        if not batch:
            return
        encoded = {key: _dumps(make()) for key, make in batch.items()}
        try:
            with self._cache.transact():
                for key, raw in encoded.items():
                    self._cache.set(key, raw)
        except _DISK_ERRORS as exc:
            log.warning("cannot write the record cache: %s", exc)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued records in the background until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queued = self._queued, {}  # taken on the trio thread: no race
            with trio.CancelScope(shield=True):  # a batch taken is a batch written
                await trio.to_thread.run_sync(self._write, batch)

    def close(self) -> None:
        """Write what is still queued, then close the store (blocking)."""
        batch, self._queued = self._queued, {}
        self._write(batch)
        self._cache.close()
