"""What both sub-commands use: errors, the generated big file, loopback HTTP, the emulator.

- ``BenchError``: something broke, the figures would be meaningless (one line, exit 1).
- The big file: the demo's generated ``big/random-1GiB.bin`` (seed 1), served by the emulator
  from a ``.generated`` stub, and a local copy of the same bytes for the references.
- Loopback HTTP with no proxy (``urllib``), and look-ups in an SB project as a client makes
  them (project → folder → file, signed URLs, listing pages).
- ``running_emulator``: ``python -m remotefs emulator`` on 127.0.0.1, started and stopped by
  the tests' helper (``tests.support.emulator``), with the bench's token.
- ``Summary`` (median, min, max of a figure) and ``print_rows`` (the tables).
"""

from __future__ import annotations

import json
import shutil
import statistics
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from remotefs.emulator.content import GeneratedContent
from remotefs.emulator.dataset import GENERATED_SUFFIX
from tests.support.emulator import Emulator, start_emulator

TOKEN = "bench-token"
HOST = "127.0.0.1"
BIG_DIR = "big"
BIG_NAME = "random-1GiB.bin"
BIG_PATH = f"{BIG_DIR}/{BIG_NAME}"
BIG_SEED = 1
DEFAULT_SIZE = 1 << 30

STOP_TIMEOUT = 10.0
API_TIMEOUT = 30.0
"""Seconds for one JSON API call."""
MIN_TRANSFER_RATE = 10e6
"""Bytes/s below which a transfer is called hung (sets its timeout, plus 60 s)."""

SB_HEADERS = {"X-SBG-Auth-Token": TOKEN}
ODM_HEADERS = {"Genestack-API-Token": TOKEN}


class BenchError(Exception):
    """Something broke; the figures would be meaningless. Printed as one line, exit 1."""


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / max(seconds, 1e-6) / 1e6


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values))

    def cell(self, fmt: str = ",.0f") -> str:
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"


def print_rows(header: list[str], rows: list[list[str]], right: set[int]) -> None:
    """A table: columns as wide as their widest cell, those in ``right`` right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


# --- the big file ---------------------------------------------------------------------------


def write_big_stub(data: Path, size: int) -> None:
    """``data/big/random-1GiB.bin.generated``: the emulator makes its bytes on demand."""
    (data / BIG_DIR).mkdir(parents=True)
    stub = data / BIG_DIR / f"{BIG_NAME}{GENERATED_SUFFIX}"
    stub.write_text(json.dumps({"size": size, "seed": BIG_SEED}) + "\n")


def write_big_copy(path: Path, size: int, *, headroom: int) -> None:
    """A local file of the same bytes, if its file system keeps ``headroom`` bytes free."""
    free = shutil.disk_usage(path.parent).free
    if free < size + headroom:
        raise BenchError(f"{path.parent}: {free:,} bytes free, the local copy needs {size:,}")
    with open(path, "wb") as f:
        for piece in GeneratedContent(size, seed=BIG_SEED).iter_range(0, size):
            f.write(piece)
    if path.stat().st_size != size:
        raise BenchError(f"{path}: wrote {path.stat().st_size} bytes, expected {size}")


# --- loopback HTTP --------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, headers: dict[str, str], byte_range: tuple[int, int] | None = None) -> bytes:
    if urlsplit(url).hostname != HOST:
        raise BenchError(f"refusing to fetch {url}: not on {HOST}")
    req = urllib.request.Request(url, headers=headers)
    if byte_range is not None:
        req.add_header("Range", f"bytes={byte_range[0]}-{byte_range[1]}")
    try:
        with _OPENER.open(req, timeout=API_TIMEOUT) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode(errors="replace")
        raise BenchError(f"GET {url}: HTTP {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"GET {url}: {exc}") from None


def get_json(url: str, headers: dict[str, str]) -> Any:
    body = http_get(url, headers)
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"GET {url}: not JSON: {body[:200]!r}") from None


def spot_check(url: str, headers: dict[str, str], local: Path, size: int) -> None:
    """The served bytes equal ``local`` at the start, middle and end (so the reference is fair)."""
    piece = min(size, 1 << 16)
    with open(local, "rb") as f:
        for start in sorted({0, size // 2 - piece // 2, size - piece}):
            start = max(start, 0)
            f.seek(start)
            want = f.read(piece)
            got = http_get(url, headers, (start, start + piece - 1))
            if got != want:
                raise BenchError(f"{url}: bytes at {start} differ from the local reference")


def _only(items: list[dict[str, Any]], what: str, **want: Any) -> dict[str, Any]:
    found = [i for i in items if all(i.get(k) == v for k, v in want.items())]
    if len(found) != 1:
        raise BenchError(f"expected exactly one {what} {want}, found {len(found)}")
    return found[0]


class SbProject:
    """Look-ups in one SB project of the emulator at ``base``, as a client makes them."""

    def __init__(self, base: str, project: str) -> None:
        self.base = base
        self.project = project

    @classmethod
    def the_one(cls, base: str) -> SbProject:
        """The emulator's only project (``--data`` without ``--project``: USER/<dir name>)."""
        projects = get_json(f"{base}/v2/projects/", SB_HEADERS)["items"]
        if len(projects) != 1:
            raise BenchError(f"expected one SB project, found {len(projects)}")
        return cls(base, str(projects[0]["id"]))

    def child(self, parent: dict[str, str], name: str) -> dict[str, Any]:
        query = urlencode({**parent, "fields": "_all", "limit": 100})
        items = get_json(f"{self.base}/v2/files?{query}", SB_HEADERS)["items"]
        return _only(items, "SB entry", name=name)

    def find(self, relpath: str) -> dict[str, Any]:
        """The SB item at ``relpath`` in the project, found folder by folder."""
        where = {"project": self.project}
        item: dict[str, Any] = {}
        for name in relpath.split("/"):
            item = self.child(where, name)
            where = {"parent": item["id"]}
        return item

    def find_big(self, size: int) -> dict[str, Any]:
        """The big file's SB item, checked to be ``size`` bytes."""
        big = self.find(BIG_PATH)
        if big.get("size") != size:
            raise BenchError(f"SB lists {BIG_NAME} at {big.get('size')} bytes, expected {size}")
        return big

    def signed_url(self, file_id: str) -> str:
        url = str(get_json(f"{self.base}/v2/files/{file_id}/download_info", SB_HEADERS)["url"])
        if urlsplit(url).hostname != HOST:
            raise BenchError(f"signed URL {url} is not on {HOST}")
        return url

    def page_url(self, folder_id: str, offset: int) -> str:
        query = urlencode({"parent": folder_id, "fields": "_all", "offset": offset, "limit": 100})
        return f"{self.base}/v2/files?{query}"


# --- the emulator ---------------------------------------------------------------------------


@contextmanager
def running_emulator(
    data: Path, work: Path, extra_args: tuple[str, ...] = (), name: str = "emulator"
) -> Iterator[Emulator]:
    """``python -m remotefs emulator --data DATA`` on loopback, logging to ``work/NAME.log``;
    stopped (SIGTERM, then SIGKILL) on the way out."""
    args = ["--data", str(data), "--host", HOST, *extra_args]
    try:
        emulator = start_emulator(args, work / f"{name}.log", (TOKEN,))
    except RuntimeError as exc:
        raise BenchError(str(exc)[-2000:]) from None
    try:
        yield emulator
    finally:
        emulator.stop()
