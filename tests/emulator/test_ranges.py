"""Range semantics at the edges, on both byte routes, over real HTTP.

SB storage follows S3 (A6): one range → 206 with the end clamped; a start past EOF → 416
with ``Content-Range: bytes */size``; several ranges or a malformed header → 200 and the
whole object. ODM follows A23: one range → 206; several, malformed or unsatisfiable → 400.
"""

from __future__ import annotations

import httpx
import pytest

from remotefs.emulator.content import GeneratedContent
from remotefs.emulator.dataset import Dataset
from remotefs.emulator.ranges import (
    ByteRange,
    MalformedRange,
    MultipleRanges,
    Unsatisfiable,
    parse_range,
)
from tests.conftest import TOKEN
from tests.support.emulator import Emulator

SIZE = 3_000_001  # tests/support/data.py: big/gen.bin
SOURCE = GeneratedContent(SIZE, seed=5).read(0, SIZE)

# (Range header, expected (start, end) inclusive) for satisfiable single ranges
SATISFIABLE = [
    ("bytes=0-0", (0, 0)),  # first byte
    (f"bytes={SIZE - 1}-{SIZE - 1}", (SIZE - 1, SIZE - 1)),  # last byte
    (f"bytes={SIZE - 10}-{SIZE + 1000}", (SIZE - 10, SIZE - 1)),  # end past EOF: clamped
    ("bytes=1048570-", (1048570, SIZE - 1)),  # open end
    ("bytes=-1", (SIZE - 1, SIZE - 1)),  # suffix
    ("bytes=-4096", (SIZE - 4096, SIZE - 1)),
    (f"bytes=-{SIZE + 50}", (0, SIZE - 1)),  # suffix longer than the file
    ("bytes=1048575-1048576", (1048575, 1048576)),  # across a generator chunk boundary
]
UNSATISFIABLE = [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"]
MULTIPLE = ["bytes=0-1,5-6", "bytes=0-0, -1"]
MALFORMED = ["bytes=5-1", "bytes=abc", "items=0-1", "bytes=", "bytes=-", "0-1"]


@pytest.fixture(scope="module")
def sb_url(emulator: Emulator, dataset: Dataset) -> str:
    node = next(n for n in dataset.by_sb_id.values() if n.name == "gen.bin")
    r = httpx.get(
        f"{emulator.url}/v2/files/{node.sb_id}/download_info",
        headers={"X-SBG-Auth-Token": TOKEN},
    )
    return r.json()["url"]


@pytest.fixture(scope="module")
def odm(emulator: Emulator, dataset: Dataset) -> tuple[str, dict[str, str]]:
    node = next(n for n in dataset.odm_files if n.name == "gen.bin")
    url = f"{emulator.url}/api/v1/as-user/files/{node.accession}/download"
    return url, {"Genestack-API-Token": TOKEN}


def _get(url: str, headers: dict[str, str], range_: str | None) -> httpx.Response:
    h = dict(headers)
    if range_ is not None:
        h["Range"] = range_
    return httpx.get(url, headers=h, timeout=30)


@pytest.mark.parametrize(("header", "span"), SATISFIABLE)
@pytest.mark.parametrize("route", ["sb", "odm"])
def test_satisfiable_range(route, header, span, sb_url, odm) -> None:
    url, headers = (sb_url, {}) if route == "sb" else odm
    r = _get(url, headers, header)
    start, end = span
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert int(r.headers["content-length"]) == end - start + 1
    assert r.content == SOURCE[start : end + 1]


@pytest.mark.parametrize("route", ["sb", "odm"])
def test_no_range_is_the_whole_file(route, sb_url, odm) -> None:
    url, headers = (sb_url, {}) if route == "sb" else odm
    r = _get(url, headers, None)
    assert r.status_code == 200
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == SOURCE


@pytest.mark.parametrize("header", UNSATISFIABLE)
def test_unsatisfiable(header, sb_url, odm) -> None:
    r = _get(sb_url, {}, header)
    assert (r.status_code, r.headers["content-range"]) == (416, f"bytes */{SIZE}")
    assert b"<Code>InvalidRange</Code>" in r.content
    r = _get(*odm, header)
    assert r.status_code == 400
    assert "Range" in r.json()["error"]["message"]


@pytest.mark.parametrize("header", MULTIPLE + MALFORMED)
def test_several_or_malformed(header, sb_url, odm) -> None:
    r = _get(sb_url, {}, header)  # S3 ignores them: the whole object
    assert r.status_code == 200 and r.content == SOURCE
    r = _get(*odm, header)
    assert r.status_code == 400
    assert set(r.json()) == {"error"}


def test_parse_range_outcomes() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-", 10) == ByteRange(2, 9)
    assert parse_range("BYTES = 2 - 3", 10) == ByteRange(2, 3)
    assert isinstance(parse_range("bytes=0-0", 0), Unsatisfiable)
    assert isinstance(parse_range("bytes=0-1,2-3", 10), MultipleRanges)
    assert isinstance(parse_range("bytes=0-1,x", 10), MalformedRange)


def test_drop_every_cuts_the_body_midway(emulator: Emulator, sb_url: str) -> None:
    emulator.configure(drop_every=1)
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(sb_url, timeout=30)
    finally:
        emulator.configure(drop_every=0)
    assert httpx.get(sb_url, timeout=30).content == SOURCE
