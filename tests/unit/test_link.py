"""The link estimator: round trip, throughput and their product, from synthetic timings."""

from __future__ import annotations

from remotefs.cache.link import Link


def test_nothing_known_before_the_first_fetch() -> None:
    link = Link()
    assert (link.rtt, link.throughput, link.bdp) == (0.0, 0.0, 0)


def test_round_trip_is_the_quickest_request_and_throughput_all_of_them_together() -> None:
    link = Link()
    link.fetched(65536, 0.0, 0.0625)  # a small request: little more than the round trip
    assert (link.rtt, link.throughput, link.bdp) == (0.0625, 1048576.0, 65536)
    for _ in range(4):  # four 4 MiB requests in flight together
        link.fetched(4 << 20, 0.0625, 0.25)
    assert link.rtt == 0.0625
    assert link.throughput == (65536 + (16 << 20)) / 0.25
    assert link.bdp == (65536 + (16 << 20)) // 4


def test_round_trip_is_a_windowed_minimum() -> None:
    link = Link(rtt_samples=2)
    link.fetched(4096, 0.0, 0.03125)
    link.fetched(4096, 0.0, 0.0625)
    assert link.rtt == 0.03125
    link.fetched(4096, 0.0, 0.125)  # the quick one has left the window
    assert link.rtt == 0.0625


def test_throughput_forgets_fetches_older_than_its_span() -> None:
    link = Link(rate_span=1.0)
    link.fetched(1 << 20, 0.0, 0.5)
    link.fetched(1 << 20, 1.0, 1.25)  # within the span: the pause between counts
    assert link.throughput == (2 << 20) / 1.25
    link.fetched(1 << 20, 10.0, 10.5)  # after a long pause: measured afresh
    assert link.throughput == (1 << 20) / 0.5
    assert link.rtt == 0.25  # the round trip keeps its samples


def test_an_instant_fetch_is_measured_over_a_millisecond() -> None:
    link = Link()
    link.fetched(1000, 5.0, 5.0)
    assert (link.rtt, link.throughput, link.bdp) == (0.0, 1e6, 0)
