"""Byte-exact reads through a real mount, on both platforms."""

from __future__ import annotations

import errno
import mmap
import os
import random
import threading
from pathlib import Path

import pytest

from tests.support.expect import mount_files
from tests.support.fuse import Mount

BIG = "random-1GiB.bin"


def _platform(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["mounted"]


def test_every_file_md5(mounted: Mount, demo_tree: Path, request) -> None:
    import hashlib

    expected = mount_files(demo_tree, _platform(request))
    for rel, source in expected.items():
        if rel.endswith(BIG):
            continue  # streamed separately below
        data = (mounted.path / rel).read_bytes()
        assert len(data) == source.size, rel
        assert hashlib.md5(data).hexdigest() == source.md5(), rel


def test_random_preads(mounted: Mount, demo_tree: Path, request) -> None:
    expected = mount_files(demo_tree, _platform(request))
    big_rel = next(r for r in expected if r.endswith(BIG))
    source = expected[big_rel]
    rng = random.Random(1234)
    size = source.size
    block = 1 << 20
    fd = os.open(mounted.path / big_rel, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == size
        cases = [(size - 1, 1), (size - 10, 100), (size, 10), (size + 5, 10), (0, 1)]
        cases += [
            (block * k - rng.randrange(1, 5000), rng.randrange(2, 20000)) for k in range(1, 40)
        ]
        cases += [
            (rng.randrange(size), rng.randrange(1, 300_000)) for _ in range(1000 - len(cases))
        ]
        for offset, length in cases:
            got = os.pread(fd, length, offset)
            want = source.read(offset, max(0, min(length, size - offset))) if offset < size else b""
            assert got == want, (offset, length)
    finally:
        os.close(fd)


def test_mmap_and_threads(mounted: Mount, demo_tree: Path, request) -> None:
    expected = mount_files(demo_tree, _platform(request))
    rel = next(r for r in expected if r.endswith("ex1.bam"))
    source = expected[rel].read()
    with (
        open(mounted.path / rel, "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
    ):
        assert m[:] == source
        assert (
            m[len(source) // 3 : len(source) // 3 + 4096]
            == source[len(source) // 3 : len(source) // 3 + 4096]
        )
    big_rel = next(r for r in expected if r.endswith(BIG))
    big = expected[big_rel]
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with open(mounted.path / big_rel, "rb", buffering=0) as f:
            for _ in range(40):
                off = rng.randrange(big.size - 200_000)
                n = rng.randrange(1, 200_000)
                if os.pread(f.fileno(), n, off) != big.read(off, n):
                    errors.append(f"{seed}: {off}+{n}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_big_file_streams_exactly(mounted: Mount, demo_tree: Path, request) -> None:
    import hashlib

    expected = mount_files(demo_tree, _platform(request))
    big_rel = next(r for r in expected if r.endswith(BIG))
    h = hashlib.md5()
    with open(mounted.path / big_rel, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == expected[big_rel].md5()


def test_writes_are_erofs(mounted: Mount, demo_tree: Path, request) -> None:
    expected = mount_files(demo_tree, _platform(request))
    rel = next(iter(expected))
    with pytest.raises(OSError) as info:
        os.open(mounted.path / rel, os.O_RDWR)
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.mkdir(mounted.path / "new-dir")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.unlink(mounted.path / rel)
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.open(mounted.path / "new-file", os.O_WRONLY | os.O_CREAT, 0o644)
    assert info.value.errno == errno.EROFS


def test_directory_attributes(mounted: Mount) -> None:
    for path in [mounted.path, *[p for p in mounted.path.iterdir() if p.is_dir()]]:
        st = os.stat(path)
        assert st.st_size == 4096 and st.st_mode & 0o777 == 0o555, path
        assert st.st_mtime > 0, path  # synthetic directories carry the mount's time
