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

from remotefs.cache.records import RecordStore
from remotefs.transport import ThreadedTransport

RECORD_KEY = "origins"
MAX_REMEMBERED = 8


def keep_warm(transport: ThreadedTransport, api_url: str, records: RecordStore | None) -> None:
    """Warm ``api_url`` and the remembered hosts now; remember each new host from now on.
    Blocks briefly (one read of the record store): call it before serving."""
    transport.warm(api_url)
    known: list[str] = []
    if records is not None:
        known = _valid(records.load_values([RECORD_KEY]).get(RECORD_KEY))
    for url in known:
        transport.warm(url)
    if records is None:
        return

    def remember(url: str) -> None:
        known[:] = [url, *(u for u in known if u != url)][:MAX_REMEMBERED]
        records.remember_value(RECORD_KEY, list(known))

    transport.on_new_origin = remember


def _valid(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    urls = [u for u in value if isinstance(u, str) and u.startswith(("http://", "https://"))]
    return [u for u in urls if "/" not in u.split("://", 1)[1] and "?" not in u][:MAX_REMEMBERED]
