"""The read-ahead window sized to the link: only streams get it, within ``MAX_WINDOW``."""

from __future__ import annotations

import random

from remotefs.cache.hints import SEEK_BYTES
from remotefs.cache.prefetch import MAX_WINDOW, ReadAhead

M = 1 << 20
BIG = 1 << 30


def _mib(plan: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a // M, b // M) for a, b in plan]


def test_a_stream_gets_twice_the_bandwidth_delay_product_from_its_fourth_mib() -> None:
    ra = ReadAhead()
    plans = [_mib(ra.plan(i * M, M, BIG, bdp=12 * M)) for i in range(6)]
    # The ramp of the streak first (2x what was read), as without the link...
    assert plans[:4] == [[], [(2, 4)], [(4, 7)], [(7, 10)]]
    # ...then, 4 MiB into the stream, 24 MiB ahead at once, in requests of 4 MiB.
    assert plans[4] == [(10, 14), (14, 18), (18, 22), (22, 26), (26, 29)]
    assert ra.window == 24 * M
    assert plans[5] == []  # topped up in large pieces only


def test_without_a_measured_link_the_window_grows_with_the_streak() -> None:
    ra = ReadAhead()
    windows = []
    for i in range(30):
        ra.plan(i * M, M, BIG, bdp=0)
        windows.append(ra.window // M)
    assert windows[:6] == [0, 2, 4, 6, 8, 10]
    assert windows[24:] == [48] * 6  # full from 24 MiB on


def test_the_window_never_passes_max_window() -> None:
    ra = ReadAhead()
    for i in range(6):
        ra.plan(i * M, M, BIG, bdp=1 << 30)
    assert ra.window == MAX_WINDOW


def test_a_stream_that_waits_for_its_read_ahead_doubles_its_window() -> None:
    ra = ReadAhead()
    for i in range(5):
        ra.plan(i * M, M, BIG)
    assert ra.window == 8 * M
    windows = []
    for i in range(5, 9):
        ra.waited()
        ra.plan(i * M, M, BIG)
        windows.append(ra.window // M)
    assert windows == [16, 32, 48, 48]
    assert ra.plan(700 * M, 4096, BIG) == [] and (ra.window, ra.boost) == (0, 0)  # a seek


def test_random_readers_fetch_nothing_more_for_the_link() -> None:
    """Scattered pages (HDF5, a random pread), some landing close together: the same plans,
    and the same windows, on a long link as on none."""
    rng = random.Random(7)
    offsets = [rng.randrange(BIG // 4096) * 4096 for _ in range(500)]
    offsets += [o + d for o in offsets[:50] for d in (0, 8192)]  # a few short streaks

    def reading(bdp: int) -> tuple[list[list[tuple[int, int]]], set[int]]:
        ra = ReadAhead()
        plans, windows = [], set()
        for offset in offsets:
            plans.append(ra.plan(offset, 4096, BIG, bdp))
            ra.waited()  # waiting does not matter to a reader that is not a stream
            windows.add(ra.window)
            assert ra.boost == 0
        return plans, windows

    plans, windows = reading(64 * M)
    assert (plans, windows) == reading(0)
    assert windows == {0, 1 << 20}  # nothing, or INITIAL_WINDOW for two reads close together
    assert sum(1 for p in plans if p) > 0  # the streaks did happen


def test_a_bgzf_region_fetches_the_same_whatever_the_link() -> None:
    """A samtools region: a seek, then ~830 KB read on in the kernel's growing reads."""
    sizes = [36864, 131072, 249856, 491520, 65536]

    def region(bdp: int) -> list[list[tuple[int, int]]]:
        ra = ReadAhead(seek_bytes=SEEK_BYTES)
        plans = [ra.plan(100 * M, sizes[0], BIG, bdp)]
        for size in sizes[1:]:
            plans.append(ra.plan(ra.reached, size, BIG, bdp))
            ra.waited()
        assert not ra.streaming
        return plans

    assert region(64 * M) == region(0)
