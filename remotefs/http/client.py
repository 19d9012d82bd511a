"""The mount's one HTTP client: timeouts and pool limits, no credentials, no redirects.

It carries **no auth header**: backends pass credentials per request, because a Seven Bridges
signed storage URL must never receive the platform token (spec 1.8). It never follows
redirects by default: httpx strips ``Authorization`` on a cross-origin redirect but not
``X-SBG-Auth-Token`` or ``Genestack-API-Token``, so a redirect on an API call could hand the
token to another host.
"""

from __future__ import annotations

import logging
import urllib.request

import httpcore
import httpx

from remotefs import __version__
from remotefs.transport import ThreadedTransport

log = logging.getLogger(__name__)

CONNECT_AND_READ_TIMEOUT = 15.0
"""Seconds for one connect or one socket read; the whole operation has its own deadline."""

# Behind a proxy the mount falls back to httpx's own transport (see make_client). httpcore
# reads response bodies 64 KiB per socket read; for the multi-MiB ranged bodies of
# read-ahead that is ~16 Python-level round trips per MiB on the mount's one busy thread.
# 1 MiB per read measured +30-40% for a 1 GiB stream (scripts/bench). A class attribute of
# httpcore's HTTP/1.1 connection: set only when it exists, so a newer httpcore degrades to
# its default instead of failing.
HTTP_READ_BYTES = 1 << 20
_http11 = getattr(httpcore, "_async", None)
_conn = getattr(getattr(_http11, "http11", None), "AsyncHTTP11Connection", None)
if _conn is not None and isinstance(getattr(_conn, "READ_NUM_BYTES", None), int):
    _conn.READ_NUM_BYTES = max(_conn.READ_NUM_BYTES, HTTP_READ_BYTES)


WARM_CONNECTIONS = 4
"""Connections kept open per host in use (:mod:`remotefs.pool`): a BAM's head, index and
tail at once, and one more."""


def make_client(
    *,
    timeout: float = CONNECT_AND_READ_TIMEOUT,
    max_connections: int = 32,
    warm: int = 0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The mount's one HTTP client.

    ``timeout`` bounds each connect and each socket read; the whole operation is bounded
    separately by :func:`~remotefs.http.send.send`'s deadline. Exchanges run in
    :class:`~remotefs.transport.ThreadedTransport` (bodies received off the trio thread)
    unless the environment names a proxy (``HTTPS_PROXY``, ``ALL_PROXY``, ...): httpx then
    keeps its own transport, which honours proxies and ``NO_PROXY`` (with a custom transport
    httpx would ignore them). ``transport`` is for tests (``httpx.MockTransport``,
    ``httpx.ASGITransport``). ``warm``: connections the threaded transport keeps open per
    host in use (the mount passes ``WARM_CONNECTIONS``).
    """
    if transport is None:
        if {"http", "https", "all"} & urllib.request.getproxies().keys():
            log.info("a proxy is configured: responses are received by httpx's own transport")
        else:
            transport = ThreadedTransport(
                max_connections=max_connections, warm=warm, connect_timeout=timeout
            )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": f"remotefs/{__version__}"},
        follow_redirects=False,
        transport=transport,
    )


def threaded_transport(client: httpx.AsyncClient) -> ThreadedTransport | None:
    """The client's :class:`~remotefs.transport.ThreadedTransport` (``None`` behind a proxy)."""
    transport = client._transport
    return transport if isinstance(transport, ThreadedTransport) else None
