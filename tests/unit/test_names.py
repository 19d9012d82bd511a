"""The platform-name → POSIX-name mapping (README, "Names")."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from remotefs.fs.names import NAME_MAX, posix_names


def test_plain_names_are_unchanged() -> None:
    assert posix_names([("a1", "ex1.bam"), ("a2", "name with spaces.txt"), ("a3", "ünï.txt")]) == [
        b"ex1.bam",
        b"name with spaces.txt",
        "ünï.txt".encode(),
    ]


def test_slash_nul_dot_dotdot_empty() -> None:
    out = posix_names([("id1", "a/b"), ("id2", "x\0y"), ("id3", "."), ("id4", ".."), ("id5", "")])
    assert out == ["a∕b".encode(), "x␀y".encode(), b". [id3]", b".. [id4]", b"[id5]"]


def test_duplicates_keep_the_smallest_id_and_tag_the_others() -> None:
    ids = ["5f3a0c2100000000000000bb", "5f3a0c2100000000000000aa"]
    out = posix_names([(ids[0], "sample.bam"), (ids[1], "sample.bam")])
    assert out == [b"sample [000000bb].bam", b"sample.bam"]
    # order of the listing does not matter
    assert posix_names([(ids[1], "sample.bam"), (ids[0], "sample.bam")]) == out[::-1]


def test_long_names_are_cut_with_id_and_extension() -> None:
    name = "é" * 200 + ".bam"  # 404 bytes
    (out,) = posix_names([("GSF123456", name)])
    assert len(out) <= NAME_MAX and out.endswith(b" [GSF123456].bam")
    out.decode("utf-8")  # cut at a character boundary


names = st.text(min_size=0, max_size=300)
ids = st.text(alphabet="0123456789abcdef", min_size=24, max_size=24)


@given(st.lists(st.tuples(ids, names), max_size=30, unique_by=lambda p: p[0]))
def test_mapped_names_are_valid_and_unique(pairs: list[tuple[str, str]]) -> None:
    out = posix_names(pairs)
    assert len(out) == len(pairs)
    assert len(set(out)) == len(out)
    for name in out:
        assert 0 < len(name) <= NAME_MAX
        assert b"/" not in name and b"\0" not in name and name not in (b".", b"..")


@given(st.lists(st.tuples(ids, names), max_size=20, unique_by=lambda p: p[0]), st.randoms())
def test_mapping_does_not_depend_on_order(pairs, rnd) -> None:
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    mapped = dict(zip(pairs, posix_names(pairs), strict=True))
    assert [mapped[p] for p in shuffled] == posix_names(shuffled)
