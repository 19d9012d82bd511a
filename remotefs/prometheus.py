"""``--metrics-addr HOST:PORT``: the mount's status as Prometheus metrics.

The exposition is ``prometheus_client``'s (the reference client library), served from its
own HTTP thread. A scrape asks the trio thread for a fresh ``control.Status`` snapshot
(``trio.from_thread``), so the numbers are the very ones ``remotefs status`` shows and are
read where they are written: no second bookkeeping, no lock. The endpoint has no
authentication: bind it to loopback unless a scraper elsewhere must reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import trio
from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Snapshot = Callable[[], dict[str, Any]]


class StatusCollector(Collector):
    def __init__(self, snapshot: Snapshot, token: trio.lowlevel.TrioToken) -> None:
        self._snapshot = snapshot
        self._token = token

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = trio.from_thread.run_sync(self._snapshot, trio_token=self._token)
        labels = {"platform": s["platform"], "mountpoint": s["mountpoint"]}
        names, values = list(labels), list(labels.values())

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"remotefs_{name}", doc, labels=names)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"remotefs_{name}", doc, labels=names)
            family.add_metric(values, value)
            return family

        for name, key, doc in (
            ("requests", "requests", "Logical requests to the platform, by kind"),
            ("request_retries", "retries", "Retries of requests, by kind"),
            ("request_errors", "errors", "Requests that failed after their retries, by kind"),
            ("response_bytes", "bytes", "Response body bytes received, by kind"),
        ):
            family = CounterMetricFamily(f"remotefs_{name}", doc, labels=[*names, "kind"])
            for kind, counts in s["requests"].items():
                family.add_metric([*values, kind], counts[key])
            yield family
        yield counter("bytes_fetched", "File bytes fetched from storage", s["bytes_fetched"])
        yield counter("bytes_served", "File bytes returned to readers", s["bytes_served"])
        yield counter("reads", "Reads answered", s["reads"])
        yield counter("read_hits", "Reads answered from the cache alone", s["read_hits"])
        yield counter("errors_answered", "Operations answered with an error", s["errors_answered"])
        yield gauge("uptime_seconds", "Seconds since the mount started", s["uptime_s"])
        yield gauge("disk_cache_bytes", "Bytes in the disk cache", s["disk_cache"]["used_bytes"])
        yield gauge("disk_cache_limit_bytes", "--cache-size", s["disk_cache"]["limit_bytes"])
        yield gauge("pinned_files", "Files pinned in the cache", s["pins"]["files"])
        yield gauge("pinned_bytes", "Bytes of the pinned files", s["pins"]["bytes"])
        yield gauge("memory_rss_bytes", "Resident memory of the mount", s["memory"]["rss_bytes"])
        yield gauge("in_flight_fetches", "Byte ranges being fetched", s["in_flight"]["fetches"])
        yield gauge("in_flight_bytes", "Bytes being fetched", s["in_flight"]["bytes"])
        conns = s.get("connections")
        if conns is not None:
            for key, doc in (
                ("connects", "Connections opened"),
                ("opened_ahead", "Connections opened ahead of any request"),
                ("tls_handshakes", "TLS handshakes"),
                ("tls_resumed", "TLS handshakes that resumed a session"),
                ("closed_idle", "Idle connections closed by the servers"),
            ):
                yield counter(f"connections_{key}", doc, conns[key])
            yield gauge("connections_idle", "Open connections waiting for a request", conns["idle"])
        shared = s.get("shared_state")
        if shared is not None:
            yield gauge("shared_state_up", "1 while the cluster's store answers", int(shared["up"]))
            yield gauge(
                "shared_state_members", "Mounts of the cluster, as last counted", shared["members"]
            )
            for key, doc in (
                ("hits", "Values served from the cluster's store"),
                ("misses", "Values this mount fetched for the cluster"),
                ("waits", "Waits for another mount's fetch"),
                ("rejected", "Values in the store that failed their check"),
                ("errors", "Calls to the store that failed"),
                ("rejoins", "Times this mount rejoined the store"),
            ):
                yield counter(f"shared_state_{key}", doc, shared[key])
        rate = s["rate_limit"]
        if rate is not None:
            yield gauge("rate_limit_remaining", "Requests left in the window", rate["remaining"])
            if rate["reset_in_s"] is not None:
                yield gauge(
                    "rate_limit_reset_seconds", "Seconds to the new window", rate["reset_in_s"]
                )


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → host, port; ``ValueError`` otherwise."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-addr {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9567")
    return host.strip("[]"), int(port)


def serve_metrics(address: str, snapshot: Snapshot) -> Callable[[], None]:
    """Start the endpoint (call from the trio thread); return what stops it."""
    host, port = parse_address(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot, trio.lowlevel.current_trio_token()))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
