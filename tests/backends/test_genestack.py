"""GenestackBackend against the in-process emulator (httpx.ASGITransport: no sockets), plus a
few cases the fixed test data cannot show, against a scripted fake ODM (httpx.MockTransport).

Request counts come from the emulator's own counters (``app.stats``).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from remotefs.backends.genestack import GenestackBackend
from remotefs.credentials import Secret
from remotefs.emulator.app import EmulatorApp, create_app
from remotefs.emulator.content import CHUNK, GeneratedContent
from remotefs.emulator.control import Knobs
from remotefs.emulator.dataset import Dataset
from remotefs.errors import AccessDenied, NotFound, ProtocolError
from remotefs.http.client import make_client
from remotefs.http.wire import parse_iso8601_ns
from remotefs.model import RemoteEntry
from tests.conftest import TOKEN

HOST = "http://emu"
GEN = GeneratedContent(3_000_001, seed=5)


def client_for(app: Any) -> httpx.AsyncClient:
    return make_client(transport=httpx.ASGITransport(app=app))


def backend_for(
    client: httpx.AsyncClient, token: str = TOKEN, bearer: bool = False
) -> GenestackBackend:
    return GenestackBackend(client, api_url=HOST, token=Secret(token), bearer=bearer)


@pytest.fixture
def app(dataset: Dataset) -> EmulatorApp:
    return create_app(dataset, {TOKEN})


@pytest.fixture
async def backend(app: EmulatorApp) -> AsyncIterator[GenestackBackend]:
    async with client_for(app) as client:
        b = backend_for(client)
        await b.check()
        app.stats.reset()
        yield b
        await b.aclose()


async def child(backend: GenestackBackend, directory: RemoteEntry, name: str) -> RemoteEntry:
    return next(e for e in await backend.list_dir(directory) if e.name == name)


async def all_files(backend: GenestackBackend) -> dict[str, RemoteEntry]:
    """``all/``'s files, sized."""
    everything = await child(backend, backend.root(), "all")
    sized = await backend.sized(await backend.list_dir(everything))
    return {e.id: e for e in sized if e is not None}


# --- check() and the namespace -----------------------------------------------------------


async def test_check(app) -> None:
    async with client_for(app) as client:
        await backend_for(client).check()
        await backend_for(client, bearer=True).check()  # Authorization: Bearer
        with pytest.raises(AccessDenied, match="the Genestack token was refused") as info:
            await backend_for(client, token="wrong-token").check()
    assert "wrong-token" not in str(info.value)
    assert app.stats.requests["odm.files.list"] == 3


async def test_root_holds_studies_and_all(backend, app) -> None:
    root = backend.root()
    assert root.is_dir and root.id == "odm:root"
    entries = await backend.list_dir(root)
    assert [(e.name, e.id, e.is_dir) for e in entries] == [
        ("studies", "odm:studies", True),
        ("all", "odm:all", True),
    ]
    assert dict(app.stats.requests) == {}


async def test_studies(backend, app, dataset) -> None:
    studies = await backend.list_dir(await child(backend, backend.root(), "studies"))
    assert dict(app.stats.requests) == {"odm.studies.list": 1}
    assert [e.name for e in studies] == [f"{s.name} [{s.accession}]" for s in dataset.studies]
    assert all(e.is_dir and e.id == f"odm:study:{e.name[-10:-1]}" for e in studies)
    assert studies[0].metadata["Study Title"] == dataset.studies[0].name
    assert "genestack:accession" not in studies[0].metadata


async def test_names_cost_one_listing_and_sizes_one_head_per_file(backend, app, dataset) -> None:
    everything = await child(backend, backend.root(), "all")
    app.stats.reset()
    names = await backend.list_dir(everything)
    assert dict(app.stats.requests) == {"odm.files.list": 1}  # no HEAD for names alone
    assert [e.name for e in names] == [n.name for n in dataset.odm_files]
    assert not any(e.sized for e in names) and {e.size for e in names} == {0}
    app.stats.reset()
    files = await all_files(backend)
    assert dict(app.stats.requests) == {"odm.files.list": 1, "odm.head": len(dataset.odm_files)}
    assert list(files) == [n.accession for n in dataset.odm_files]  # listing order kept
    for source in dataset.odm_files:
        entry = files[source.accession]
        assert (entry.name, entry.size, entry.is_dir) == (source.name, source.size, False)
        assert entry.mtime_ns == int(source.mtime) * 10**9  # genestack:file.last-update (A19)
        assert entry.version == f"{source.size}-{entry.mtime_ns}"
        assert entry.record["genestack:accession"] == source.accession
        assert (
            "genestack:accession" not in entry.metadata and "genestack:name" not in entry.metadata
        )
    app.stats.reset()
    again = await backend.list_dir(everything)  # sizes remembered: listed sized, no HEAD
    assert dict(app.stats.requests) == {"odm.files.list": 1}
    assert {e.id: e for e in again} == files


async def test_study_listing_reuses_cached_sizes(backend, app, dataset) -> None:
    await all_files(backend)
    studies = await backend.list_dir(await child(backend, backend.root(), "studies"))
    reads = next(s for s in studies if s.name.startswith("reads ["))
    app.stats.reset()
    files = await backend.list_dir(reads)
    assert dict(app.stats.requests) == {"odm.files.by_study": 1}
    study = next(s for s in dataset.studies if s.name == "reads")
    assert [e.name for e in files] == [n.name for n in study.files]
    sample = next(e for e in files if e.name == "sample.bin")
    assert sample.metadata["sample_id"] == "S1" and sample.metadata["Data Class"] == (
        "Bulk transcriptomics"
    )


async def test_concurrent_sizings_share_heads(backend, app, dataset) -> None:
    studies = await backend.list_dir(await child(backend, backend.root(), "studies"))
    everything = await child(backend, backend.root(), "all")
    listings = [await backend.list_dir(everything)]
    listings += [await backend.list_dir(study) for study in studies]
    app.stats.reset()
    async with trio.open_nursery() as nursery:
        for listing in listings:
            nursery.start_soon(backend.sized, listing)
    assert app.stats.requests["odm.head"] == len(dataset.odm_files)  # each file once


async def test_unknown_directory(backend) -> None:
    with pytest.raises(NotFound):
        await backend.list_dir(RemoteEntry(id="GSF000000", name="x", is_dir=False))


# --- reading --------------------------------------------------------------------------------


async def test_reads_are_byte_exact(backend, app, data_dir) -> None:
    files = {e.name: e for e in (await all_files(backend)).values()}
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    sample = files["sample.bin"]
    rng = random.Random(11)
    cases = [(rng.randrange(len(data)), rng.randrange(1, 300_000)) for _ in range(10)]
    cases += [(len(data) - 1, 1), (len(data) - 10, 4096), (0, len(data))]
    app.stats.reset()
    for offset, size in cases:
        assert await backend.read(sample, offset, size) == data[offset : offset + size]
    assert dict(app.stats.requests) == {"odm.download": len(cases)}
    assert app.stats.statuses["odm.download 206"] == len(cases)


async def test_generated_file_across_chunk_boundaries(backend) -> None:
    gen = {e.name: e for e in (await all_files(backend)).values()}["gen.bin"]
    assert gen.size == GEN.size
    cases = [(CHUNK - 10, 20), (2 * CHUNK - 1, CHUNK + 2), (GEN.size - 1, 1), (0, GEN.size)]
    cases += [(GEN.size - 100, 1000)]  # past EOF: clamped
    for offset, size in cases:
        got = await backend.read(gen, offset, size)
        assert got == GEN.read(offset, size) and len(got) == min(size, GEN.size - offset)


async def test_empty_and_past_eof_reads_cost_nothing(backend, app) -> None:
    files = {e.name: e for e in (await all_files(backend)).values()}
    app.stats.reset()
    assert await backend.read(files["empty.txt"], 0, 4096) == b""
    assert await backend.read(files["small.txt"], files["small.txt"].size, 10) == b""
    assert dict(app.stats.requests) == {}


async def test_faults_are_retried_to_exact_bytes(dataset, data_dir) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(fail_every=3))
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        files = {e.name: e for e in (await all_files(backend)).values()}
        assert len(files) == len({n.name for n in dataset.odm_files})
        for offset in (0, 999_999, len(data) - 5):
            assert (
                await backend.read(files["sample.bin"], offset, 300_000) == data[offset:][:300_000]
            )
    assert app.stats.requests["fault.503"] >= 10


async def test_rate_limit_retry_after_is_honoured(dataset) -> None:  # A24
    # Wall-clock limiter: a 1 s window keeps this short.
    app = create_app(dataset, {TOKEN}, Knobs(odm_rate_limit=4, odm_rate_window=1))
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        studies = await backend.list_dir(await child(backend, backend.root(), "studies"))
        nested = next(s for s in studies if s.name.startswith("nested ["))
        files = await backend.list_dir(nested)
        [deep] = await backend.sized([e for e in files if e.name == "deep.txt"])
        assert deep is not None
        assert await backend.read(deep, 0, 100) == b"deep\n"
    assert sum(v for k, v in app.stats.statuses.items() if k.endswith(" 429")) >= 1


# --- cases the emulator's fixed data cannot show: a scripted fake ODM -----------------------


class FakeOdm:
    """``/files`` and HEADs for a handful of objects whose metadata the test edits."""

    def __init__(self, objects: list[dict[str, Any]], sizes: dict[str, int]) -> None:
        self.objects = objects
        self.sizes = sizes
        self.heads: list[str] = []
        self.seen_headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen_headers.append(request.headers)
        path = request.url.path
        if path == "/api/v1/as-user/files":
            body = {
                "meta": {"pagination": {"count": len(self.objects), "total": len(self.objects)}},
                "data": self.objects,
            }
            return httpx.Response(200, content=json.dumps(body).encode())
        accession = path.split("/")[-2]
        if request.method == "HEAD":
            self.heads.append(accession)
            if accession not in self.sizes:
                return httpx.Response(404)
            headers = {"Content-Length": str(self.sizes[accession])}
            headers["Last-Modified"] = "Wed, 07 Aug 2019 13:28:01 GMT"
            return httpx.Response(200, headers=headers)
        return httpx.Response(404)


async def list_all(fake: FakeOdm, backend: GenestackBackend) -> list[RemoteEntry]:
    """``all/``, sized; files gone by their HEAD left out."""
    listed = await backend.list_dir(RemoteEntry(id="odm:all", name="all", is_dir=True))
    return [e for e in await backend.sized(listed) if e is not None]


async def test_changed_update_time_heads_again(autojump_clock) -> None:
    fake = FakeOdm(
        [
            {
                "genestack:accession": "GSF1",
                "genestack:name": "a",
                "genestack:file.last-update": "2024-01-01T00:00:00Z",
            },
            {"genestack:accession": "GSF2", "genestack:name": "b"},
        ],
        {"GSF1": 10, "GSF2": 20},
    )
    async with make_client(transport=httpx.MockTransport(fake)) as client:
        backend = GenestackBackend(client, api_url="http://odm.test/", token="T", bearer=True)
        first = await list_all(fake, backend)
        assert sorted(fake.heads) == ["GSF1", "GSF2"]
        assert [e.size for e in first] == [10, 20]
        assert first[0].mtime_ns == parse_iso8601_ns("2024-01-01T00:00:00Z")
        assert first[1].mtime_ns == parse_iso8601_ns("2019-08-07T13:28:01Z")  # Last-Modified
        fake.heads.clear()
        await list_all(fake, backend)
        assert fake.heads == []
        fake.objects[0]["genestack:file.last-update"] = "2024-02-01T00:00:00Z"
        fake.sizes["GSF1"] = 11
        second = await list_all(fake, backend)
    assert fake.heads == ["GSF1"]
    assert second[0].size == 11 and second[0].version != first[0].version
    assert all(h["authorization"] == "Bearer T" for h in fake.seen_headers)
    assert not any("genestack-api-token" in h for h in fake.seen_headers)


async def test_size_in_metadata_needs_no_head_and_vanished_files_are_skipped(
    autojump_clock,
) -> None:
    fake = FakeOdm(
        [
            {"genestack:accession": "GSF1", "genestack:name": "a", "genestack:file.size": 5},
            {"genestack:accession": "GSF2", "genestack:name": "gone"},
            {"genestack:name": "no accession"},
        ],
        {},
    )
    async with make_client(transport=httpx.MockTransport(fake)) as client:
        backend = GenestackBackend(client, api_url="http://odm.test", token="T", bearer=False)
        entries = await list_all(fake, backend)
    assert [(e.name, e.size) for e in entries] == [("a", 5)]
    assert fake.heads == ["GSF2"]
    assert all(h["genestack-api-token"] == "T" for h in fake.seen_headers)


async def test_head_without_content_length_is_a_protocol_error(autojump_clock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, stream=httpx.ByteStream(b""))
        body = {
            "meta": {"pagination": {"total": 1}},
            "data": [{"genestack:accession": "GSF1", "genestack:name": "a"}],
        }
        return httpx.Response(200, content=json.dumps(body).encode())

    async with make_client(transport=httpx.MockTransport(handler)) as client:
        backend = GenestackBackend(client, api_url="http://odm.test", token="T", bearer=False)
        listed = await backend.list_dir(RemoteEntry(id="odm:all", name="all", is_dir=True))
        with pytest.raises(ProtocolError, match="Content-Length"):
            await backend.sized(listed)
