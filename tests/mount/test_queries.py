"""Issue 17: the platforms' own filters as folders (``.query/NAME``), filtered mounts, and
ODM's description of what a file holds (``user.odm.contents``).

Every listing a query folder shows is compared with what the emulator itself answers for
the same query over raw HTTP (and, for SB, through the official client too); request counts
come from the emulator's counters.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.mount.conftest import PROJECT, TOKEN, platform_mount
from tests.support.emulator import Emulator, start_emulator
from tests.support.expect import mount_files

SAMPLES = {  # name → (sample_id, tags, Data Class, path)
    "a.bam": ("S1", ["tumor"], "Bulk transcriptomics", "x/y"),
    "b.bam": ("S2", ["normal"], "Bulk transcriptomics", "z"),
    "c.txt": ("S1", ["notes"], "Document", "z"),
    "d.vcf.gz": ("S3", ["tumor", "normal"], "Other", "x/y"),
}


def write_data(root: Path) -> Path:
    """Files at the project's root and in ``run1/``, with metadata; ``many/``: 150 of one
    sample (two SB pages)."""
    for folder in ("", "run1"):
        for name, (sample, tags, data_class, path) in SAMPLES.items():
            target = root / folder / (name if not folder else f"r1-{name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(hashlib.sha256(str(target).encode()).digest() * 100)
            meta = {"sample_id": sample, "tags": tags, "Data Class": data_class, "path": path,
                    "note": f"gene TP53 in {name}" if sample == "S1" else "nothing"}  # fmt: skip
            target.with_name(target.name + ".meta.json").write_text(json.dumps(meta))
    (root / "many").mkdir()
    for i in range(150):
        (root / "many" / f"m{i:03d}.txt").write_text(f"{i}\n")
        (root / "many" / f"m{i:03d}.txt.meta.json").write_text(json.dumps({"batch": "B7"}))
    return root


@contextmanager
def emulated(data: Path, tmp_path: Path) -> Iterator[Emulator]:
    emu = start_emulator(["--data", str(data), "--project", PROJECT], tmp_path / "e.log", (TOKEN,))
    try:
        yield emu
    finally:
        emu.stop()


def sb_names(emu: Emulator, params: list[tuple[str, str]]) -> set[str]:
    """What SB's GET /files answers for ``params`` (raw HTTP, every page)."""
    names: set[str] = set()
    offset = 0
    while True:
        r = httpx.get(
            f"{emu.url}/v2/files",
            params=[*params, ("offset", str(offset)), ("limit", "100")],
            headers={"X-SBG-Auth-Token": TOKEN},
            timeout=30,
        )
        r.raise_for_status()
        items = r.json()["items"]
        names |= {item["name"] for item in items}
        offset += 100
        if offset >= int(r.headers["x-total-matching-query"]):
            return names


def odm_names(emu: Emulator, params: list[tuple[str, str]]) -> set[str]:
    r = httpx.get(
        f"{emu.url}/api/v1/as-user/files",
        params=[*params, ("pageLimit", "2000")],
        headers={"Genestack-API-Token": TOKEN},
        timeout=30,
    )
    r.raise_for_status()
    return {obj["genestack:name"] for obj in r.json()["data"]}


def folder_id(emu: Emulator, name: str) -> str:
    r = httpx.get(
        f"{emu.url}/v2/files",
        params={"project": PROJECT, "name": name},
        headers={"X-SBG-Auth-Token": TOKEN},
        timeout=30,
    )
    return str(r.json()["items"][0]["id"])


SB_QUERIES = [
    ("metadata.sample_id=S1", [("metadata.sample_id", "S1")]),
    ("tag=tumor&tag=normal", [("tag", "tumor"), ("tag", "normal")]),  # OR on one key
    ("metadata.sample_id=S1&tag=tumor", [("metadata.sample_id", "S1"), ("tag", "tumor")]),  # AND
    ("metadata.sample_id=NOPE", [("metadata.sample_id", "NOPE")]),  # nothing
    ("metadata.path=x\u2215y", [("metadata.path", "x/y")]),  # the escape of /
    ("metadata.path=x%2Fy", [("metadata.path", "x/y")]),
]


def test_sb_query_folders_list_what_the_api_answers(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        run1 = folder_id(emu, "run1")
        for name, params in SB_QUERIES:
            assert set(os.listdir(m.path / ".query" / name)) == sb_names(
                emu, [("project", PROJECT), *params]
            ), name
            # scoped to the folder it is opened under, as parent= scopes the API
            assert set(os.listdir(m.path / "run1" / ".query" / name)) == sb_names(
                emu, [("parent", run1), *params]
            ), name
        assert sorted(os.listdir(m.path / ".query" / "tag=tumor&tag=normal")) == [
            "a.bam", "b.bam", "d.vcf.gz"]  # fmt: skip
        assert os.listdir(m.path / ".query") == []  # lists nothing
        assert ".query" not in os.listdir(m.path)  # hidden

        import sevenbridges  # the official client's own encoding of the same query

        api = sevenbridges.Api(url=f"{emu.url}/v2", token=TOKEN, debug=True)  # http
        official = api.files.query(project=PROJECT, metadata={"sample_id": "S1"}, tags=["tumor"])
        assert {f.name for f in official.all()} == set(
            os.listdir(m.path / ".query" / "metadata.sample_id=S1&tag=tumor")
        )


def test_odm_query_folders_list_what_the_api_answers(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    queries = [
        ('filter="Data Class"=Document', [("filter", '"Data Class"=Document')]),
        ("query=TP53", [("query", "TP53")]),
        ('filter="Data Class"="Bulk transcriptomics"&query=TP53',
         [("filter", '"Data Class"="Bulk transcriptomics"'), ("query", "TP53")]),
        ("filter=sample_id=S1 || sample_id=S3", [("filter", "sample_id=S1 || sample_id=S3")]),
        ("filter=sample_id=S1 && NOT tags=notes", [("filter", "sample_id=S1 && NOT tags=notes")]),
        ("filter=path=x\u2215y", [("filter", "path=x/y")]),
        ("query=nowhere-to-be-found", [("query", "nowhere-to-be-found")]),
    ]  # fmt: skip
    with emulated(data, tmp_path) as emu, platform_mount("genestack", emu, tmp_path) as m:
        for name, params in queries:
            expected = odm_names(emu, params)
            assert set(os.listdir(m.path / ".query" / name)) == expected, name
            assert set(os.listdir(m.path / "all" / ".query" / name)) == expected, name
        assert len(os.listdir(m.path / ".query" / "query=TP53")) == 4  # c.txt and a.bam, twice


def test_a_file_seen_through_a_query_is_the_same_file(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        via_query = m.path / ".query" / "metadata.sample_id=S1" / "a.bam"
        st, sq = os.stat(m.path / "a.bam"), os.stat(via_query)
        assert (st.st_ino, st.st_size, st.st_mtime_ns) == (sq.st_ino, sq.st_size, sq.st_mtime_ns)
        assert os.listxattr(via_query) == os.listxattr(m.path / "a.bam")
        assert os.getxattr(via_query, "user.sbg.sample_id") == b"S1"


def test_query_folders_cost_one_listing_per_page_and_respect_the_ttl(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu:  # noqa: SIM117
        with platform_mount("sevenbridges", emu, tmp_path, "--ttl", "3") as m:
            folder = m.path / "many" / ".query" / "metadata.batch=B7"
            emu.reset()
            entries = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True)
            assert entries.stdout.count("m1") >= 50 and len(os.listdir(folder)) == 150
            stats = emu.stats()
            # 2 pages of the query, nothing per file (.query needs no listing of many/)
            assert stats["requests"] == {"sb.files.list": 2}, stats["requests"]
            emu.reset()
            os.listdir(folder)
            assert emu.stats()["total_requests"] == 0  # within --ttl: from memory
            time.sleep(3.5)  # the scenario: --ttl passes
            os.listdir(folder)
            deadline = time.monotonic() + 10
            while emu.stats()["requests"].get("sb.files.list", 0) < 2:  # refreshed
                assert time.monotonic() < deadline
                time.sleep(0.05)


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        ("sevenbridges", "colour=red"),  # an unknown SB parameter
        ("sevenbridges", "=x"),  # an empty key
        ("sevenbridges", "tag="),  # an empty value
        ("genestack", 'filter="Data Class=Document'),  # unbalanced quotes
        ("genestack", "filter=(a=b"),  # an unbalanced parenthesis
        ("genestack", "colour=red"),
    ],
)
def test_malformed_queries_are_einval_with_no_request(
    platform: str, name: str, tmp_path: Path
) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu, platform_mount(platform, emu, tmp_path) as m:
        before = (tmp_path / "m.log").read_text().count("(EINVAL)")
        emu.reset()
        with pytest.raises(OSError) as info:
            os.stat(m.path / ".query" / name)
        assert info.value.errno == errno.EINVAL
        assert emu.stats()["arrived"] == 0  # no request at all, broken or not
        log = (tmp_path / "m.log").read_text()
        assert log.count("(EINVAL)") == before + 1 and "Traceback" not in log


def test_query_folders_do_not_nest_and_their_names_are_utf8(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        assert (m.path / "run1").is_dir()
        emu.reset()
        for nested in (".query/.query", ".query/.query/tag=tumor", "run1/.query/.query"):
            with pytest.raises(FileNotFoundError):
                os.stat(m.path / nested)
        with pytest.raises(OSError) as info:
            os.stat(os.fsencode(m.path) + b"/.query/tag=\xff")
        assert info.value.errno == errno.EINVAL  # what any malformed query is
        assert emu.stats()["arrived"] == 0
        log = (tmp_path / "m.log").read_text()
        assert log.count("(EINVAL)") == 1 and "not UTF-8" in log and "Traceback" not in log


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_a_filtered_mount_shows_exactly_the_matching_files(platform: str, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    args = ("--filter", "metadata.sample_id=S1", "--filter", "tag=tumor")
    params: list[tuple[str, str]] = [("metadata.sample_id", "S1"), ("tag", "tumor")]
    if platform == "genestack":
        args = ("--filter", 'sample_id=S1 && "Data Class"!=Document', "--query", "TP53")
        params = [("filter", 'sample_id=S1 && "Data Class"!=Document'), ("query", "TP53")]
    with emulated(data, tmp_path) as emu, platform_mount(platform, emu, tmp_path, *args) as m:
        expected = (
            sb_names(emu, [("project", PROJECT), *params])
            if platform == "sevenbridges"
            else odm_names(emu, params)
        )
        assert set(os.listdir(m.path)) == expected and expected
        source = next(p for p in data.rglob(sorted(expected)[0]))
        assert (m.path / sorted(expected)[0]).read_bytes() == source.read_bytes()


def test_samtools_and_md5sum_through_a_query_and_the_cache_is_shared(
    demo_emulator: Emulator, demo_tree: Path, tmp_path: Path
) -> None:
    files = mount_files(demo_tree, "sevenbridges")
    with platform_mount("sevenbridges", demo_emulator, tmp_path) as m:
        query = m.path / "bam" / ".query" / "metadata.sample_id=ex1"
        assert sorted(os.listdir(query)) == ["ex1.bam", "ex1.bam.bai"]
        demo_emulator.reset()

        def count(path: Path) -> str:
            done = subprocess.run(["samtools", "view", "-c", str(path), "seq1:100-1000"],
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert count(query / "ex1.bam") == count(m.path / "bam" / "ex1.bam")
        md5 = subprocess.run(["md5sum", str(query / "ex1.bam")], capture_output=True, text=True)
        assert md5.stdout.split()[0] == files["bam/ex1.bam"].md5()
        demo_emulator.reset()
        assert (m.path / "bam" / "ex1.bam").read_bytes() == files["bam/ex1.bam"].read()
        assert demo_emulator.stats()["requests"].get("sb.storage", 0) == 0  # warm through both


def test_odm_contents_are_the_apis_and_cost_one_request_once(
    demo_emulator: Emulator, tmp_path: Path
) -> None:
    with platform_mount("genestack", demo_emulator, tmp_path) as m:
        for name in ("adata.h5ad", "chr22.vcf.gz"):
            path = m.path / "all" / name
            accession = os.getxattr(path, "user.remotefs.id").decode()
            assert "user.odm.contents" in os.listxattr(path)
            demo_emulator.reset()
            value = json.loads(os.getxattr(path, "user.odm.contents"))
            assert demo_emulator.stats()["requests"] == {"odm.files.get": 1}
            os.getxattr(path, "user.odm.contents")
            assert demo_emulator.stats()["total_requests"] == 1  # remembered
            expected = httpx.get(
                f"{demo_emulator.url}/api/v1/as-user/files/{accession}",
                params={"includeContents": "true"},
                headers={"Genestack-API-Token": TOKEN},
                timeout=30,
            ).json()["contents"]
            assert value == expected
        plain = m.path / "all" / "ex1.bam"
        assert "user.odm.contents" not in os.listxattr(plain)
        with pytest.raises(OSError) as info:
            os.getxattr(plain, "user.odm.contents")
        assert info.value.errno == errno.ENODATA
