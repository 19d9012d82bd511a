"""Request economy, asserted with the emulator's counters, on fresh (cold) mounts."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotefs.emulator.content import GeneratedContent
from tests.mount.conftest import platform_mount
from tests.support.emulator import Emulator
from tests.support.expect import mount_files
from tests.support.fuse import Mount

STORAGE = {"sevenbridges": "sb.storage", "genestack": "odm.download"}


@pytest.fixture(params=["sevenbridges", "genestack"])
def platform(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def cold(platform: str, demo_emulator: Emulator, tmp_path: Path) -> Iterator[Mount]:
    with platform_mount(platform, demo_emulator, tmp_path) as mount:
        yield mount


def _ls_l(path: Path) -> str:
    done = subprocess.run(["ls", "-l", str(path)], capture_output=True, text=True, check=True)
    return done.stdout


def test_cold_ls_l_of_a_big_folder(
    platform: str, cold: Mount, demo_emulator: Emulator, demo_dataset
) -> None:
    folder = cold.path / ("many" if platform == "sevenbridges" else "all")
    os.listdir(cold.path)  # the root listing is not what is measured
    demo_emulator.reset()
    listing = _ls_l(folder)
    stats = demo_emulator.stats()["requests"]
    if platform == "sevenbridges":
        assert listing.count("\n") == 260 + 1  # "total" line
        assert stats == {"sb.files.list": 3}  # 260 entries, 100 per page, nothing per file
    else:
        files = len(demo_dataset.odm_files)
        assert stats == {"odm.files.list": 1, "odm.head": files}  # sizes: one HEAD per file
        sizes = {s.name: s.size for s in demo_dataset.odm_files}
        for line in listing.splitlines()[1:]:
            fields = line.split(maxsplit=8)
            assert int(fields[4]) == sizes[fields[8]], line  # exact, stat by stat
    demo_emulator.reset()
    assert _ls_l(folder) == listing
    os.stat(folder / listing.splitlines()[-1].split()[-1])
    assert demo_emulator.stats()["total_requests"] == 0  # within the TTL: nothing


def test_odm_names_alone_cost_only_the_listing(
    demo_emulator: Emulator, demo_dataset, tmp_path: Path
) -> None:
    """ODM lists no size (A19): ``ls``, ``find -name`` and a glob need names only, so they
    cost the listing's pages and no HEAD; a file read by name is sized on the way. (SB
    listings say every size.)"""
    with platform_mount("genestack", demo_emulator, tmp_path) as cold:
        _odm_names_alone(cold, demo_emulator, demo_dataset)


def _odm_names_alone(cold: Mount, demo_emulator: Emulator, demo_dataset) -> None:
    folder = cold.path / "all"
    os.listdir(cold.path)
    demo_emulator.reset()
    names = subprocess.run(["ls", "-1", str(folder)], capture_output=True, text=True, check=True)
    found = subprocess.run(
        ["find", str(folder), "-name", "*.bam"], capture_output=True, text=True, check=True
    )
    globbed = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {folder}/*.txt"], capture_output=True, text=True, check=True
    )
    assert demo_emulator.stats()["requests"] == {"odm.files.list": 1}
    assert sorted(names.stdout.splitlines()) == sorted(s.name for s in demo_dataset.odm_files)
    bams = sorted(str(folder / s.name) for s in demo_dataset.odm_files if s.name.endswith(".bam"))
    assert sorted(found.stdout.split()) == bams
    assert len(globbed.stdout.splitlines()) == sum(
        s.name.endswith(".txt") for s in demo_dataset.odm_files
    )
    source = next(s for s in demo_dataset.odm_files if s.name == "ex1.bam")
    data = (folder / "ex1.bam").read_bytes()
    assert len(data) == source.size and os.stat(folder / "ex1.bam").st_size == source.size
    assert demo_emulator.stats()["requests"]["odm.head"] >= 1


def test_missing_names_cost_nothing(platform: str, cold: Mount, demo_emulator: Emulator) -> None:
    folder = cold.path / ("bam" if platform == "sevenbridges" else "all")
    names = os.listdir(folder)
    assert "ex1.bam" in names
    os.stat(folder / "ex1.bam")  # ODM: its size (a HEAD, with its index's) is not measured
    demo_emulator.reset()
    for probe in ("ex1.bam.csi", "ex1.csi", ".hidden", ".Trash", ".Trash-0"):
        with pytest.raises(FileNotFoundError) as info:
            os.stat(folder / probe)
        assert info.value.errno == errno.ENOENT
    assert os.getxattr(folder / "ex1.bam", "user.remotefs.name") == b"ex1.bam"
    with pytest.raises(OSError) as info:
        os.getxattr(folder / "ex1.bam", "security.selinux")
    assert info.value.errno == errno.EOPNOTSUPP  # unsupported: ls -l stops asking
    with pytest.raises(OSError) as info:
        os.getxattr(folder / "ex1.bam", "user.no-such-name")
    assert info.value.errno == errno.ENODATA
    os.listxattr(folder / "ex1.bam")
    assert demo_emulator.stats()["total_requests"] == 0


def test_region_query_twice_then_after_remount(
    platform: str, demo_emulator: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "shared-cache"
    folder = "bam" if platform == "sevenbridges" else "all"
    cmd = ["samtools", "view", "-c"]
    outputs = []
    for round_ in range(2):
        with platform_mount(
            platform, demo_emulator, tmp_path, name=f"m{round_}", cache=cache
        ) as mount:
            bam = mount.path / folder / "ex1.bam"
            os.listdir(mount.path / folder)
            for run in range(2):
                demo_emulator.reset()
                done = subprocess.run(
                    [*cmd, str(bam), "seq1:100-1000"], capture_output=True, text=True
                )
                assert done.returncode == 0, done.stderr
                outputs.append(done.stdout)
                fetched = demo_emulator.requests(STORAGE[platform])
                if round_ == 0 and run == 0:
                    assert fetched > 0  # cold: bytes came from the platform
                else:
                    assert fetched == 0, (round_, run)  # page cache, memory, then the disk cache
    assert len(set(outputs)) == 1 and int(outputs[0]) > 0


def test_random_4k_reads_fetch_at_most_4x(
    platform: str, cold: Mount, demo_emulator: Emulator
) -> None:
    rel = "big/random-1GiB.bin" if platform == "sevenbridges" else "all/random-1GiB.bin"
    path = cold.path / rel
    size = os.stat(path).st_size
    rng = random.Random(77)
    source = GeneratedContent(size, seed=1)
    demo_emulator.reset()
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(1000):
            offset = rng.randrange(size - 4096)
            assert os.pread(fd, 4096, offset) == source.read(offset, 4096)
    finally:
        os.close(fd)
    fetched = demo_emulator.stats()["bytes"].get(STORAGE[platform], 0)
    assert 0 < fetched <= 4 * 1000 * 4096, fetched


def test_a_bam_and_its_index_cost_one_request_each(
    platform: str, cold: Mount, demo_emulator: Emulator, demo_tree: Path
) -> None:
    """Every htslib open reads the BAM's head, its EOF block, then the whole index. Both are
    under 1 MiB, so each is fetched whole in one request (SB: after one ``download_info``),
    and no byte is asked for twice although the BAM's open already asks for its index.
    (The counts are the same whether the index was asked for at the BAM's open or at its
    own: this does not show that the BAM's open asked first.)"""
    files = mount_files(demo_tree, platform)
    rel = "bam/ex1.bam" if platform == "sevenbridges" else "all/ex1.bam"
    bam_path = cold.path / rel
    os.listdir(bam_path.parent)  # the listing is not what is measured
    demo_emulator.reset()
    with open(bam_path, "rb") as bam:
        assert bam.read(4) == files[rel].read(0, 4)
        with open(cold.path / f"{rel}.bai", "rb") as bai:
            assert bai.read() == files[f"{rel}.bai"].read()
    requests = demo_emulator.stats()["requests"]
    if platform == "sevenbridges":
        assert requests == {"sb.download_info": 2, "sb.storage": 2}
    else:  # the BAM's size and its index's, asked for together at the BAM's lookup
        assert requests == {"odm.head": 2, "odm.download": 2}
