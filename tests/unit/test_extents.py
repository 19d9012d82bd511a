"""Chunk extents: merging, coverage and gaps, against a bitmap model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from remotefs.cache.extents import Extents

SIZE = 4096
SOURCE = bytes(range(256)) * (SIZE // 256)


def test_add_get_missing() -> None:
    e = Extents()
    e.add(100, SOURCE[100:200])
    e.add(300, SOURCE[300:400])
    assert e.get(120, 180) == SOURCE[120:180]
    assert e.get(150, 350) is None
    assert e.missing(0, 500) == [(0, 100), (200, 300), (400, 500)]
    e.add(200, SOURCE[200:300])  # touches both: one run
    assert e.starts == [100] and e.get(100, 400) == SOURCE[100:400]
    e.add(50, SOURCE[50:450])  # covers it all
    assert e.starts == [50] and e.runs == [SOURCE[50:450]]


@given(st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(1, 600)), max_size=25))
def test_any_sequence_of_adds_matches_a_bitmap(adds: list[tuple[int, int]]) -> None:
    e = Extents()
    held = [False] * SIZE
    for start, length in adds:
        end = min(SIZE, start + length)
        e.add(start, SOURCE[start:end])
        held[start:end] = [True] * (end - start)
    # runs are sorted, disjoint, non-touching, and hold the right bytes
    for i, (s, r) in enumerate(zip(e.starts, e.runs, strict=True)):
        assert r == SOURCE[s : s + len(r)]
        if i:
            assert e.starts[i - 1] + len(e.runs[i - 1]) < s
    gaps = e.missing(0, SIZE)
    expect = []
    pos = 0
    while pos < SIZE:
        if not held[pos]:
            end = pos
            while end < SIZE and not held[end]:
                end += 1
            expect.append((pos, end))
            pos = end
        else:
            pos += 1
    assert gaps == expect
