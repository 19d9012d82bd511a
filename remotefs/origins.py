"""Which hosts the mount keeps connections open to, remembered across mounts.

At mount time the pool (:mod:`remotefs.pool`) is told to keep the API warm, and every host
the last mounts of this cache directory sent requests to: the storage hosts behind signed
URLs (S3 buckets, a platform's download host). So the first ``download_info`` of a cold
mount finds its connections already open, and the storage requests that follow it find
theirs, instead of each paying for a TCP connect and a TLS handshake after the URL is known.

The hosts are kept as one small record (``scheme://host:port``, the ``MAX_REMEMBERED`` most
recently first used) in the cache directory's record store: never a path, a query or a
signature, so no secret. A record that is not a list of such URLs is ignored.
"""

from __future__ import annotations

import logging

import httpx

from remotefs.cache.records import RecordStore
from remotefs.transport import ThreadedTransport

log = logging.getLogger(__name__)

RECORD_KEY = "origins"
MAX_REMEMBERED = 8


def keep_warm(transport: ThreadedTransport, api_url: str, records: RecordStore | None) -> None:
    """Warm ``api_url`` and the remembered hosts now; remember each new host from now on.
    Blocks briefly (one read of the record store): call it before serving."""
    known: list[str] = []
    if records is not None:
        known = _valid(records.load_values([RECORD_KEY]).get(RECORD_KEY))
    for url in (api_url, *known):
        try:
            transport.warm(url)
        except (ValueError, httpx.InvalidURL) as exc:  # never the mount's end: not warmed
            log.debug("not keeping %s warm: %s", url, exc)
    if records is None:
        return

    def remember(url: str) -> None:  # on the trio thread, after the origin's first answer
        known[:] = [url, *(u for u in known if u != url)][:MAX_REMEMBERED]
        records.remember_value(RECORD_KEY, list(known))

    transport.on_new_origin = remember


def _valid(value: object) -> list[str]:
    """The origins in a remembered record: ``scheme://host:port`` strings httpx parses, with
    no user, path or query; anything else is dropped."""
    if not isinstance(value, list):
        return []
    valid = []
    for item in value[:MAX_REMEMBERED]:
        if not isinstance(item, str):
            continue
        try:
            url = httpx.URL(item)
        except (ValueError, httpx.InvalidURL):
            continue
        if (
            url.scheme in ("http", "https")
            and url.host
            and not url.userinfo
            and url.raw_path == b"/"
            and not url.query
            and not item.endswith("/")
        ):
            valid.append(item)
    return valid
