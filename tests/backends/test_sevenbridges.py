"""SevenBridgesBackend against the in-process emulator (httpx.ASGITransport: no sockets).

Request counts come from the emulator's own counters (``app.stats``), so every test states
exactly what an operation costs on the wire.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from remotefs.backends.sevenbridges import SevenBridgesBackend, url_expiry
from remotefs.credentials import Secret
from remotefs.emulator.app import EmulatorApp, create_app
from remotefs.emulator.content import CHUNK, GeneratedContent
from remotefs.emulator.control import Knobs
from remotefs.emulator.dataset import Dataset, Node
from remotefs.errors import AccessDenied, NotFound
from remotefs.http.client import make_client
from remotefs.model import RemoteEntry
from tests.conftest import PROJECT, TOKEN
from tests.support.data import MANY

API = "http://emu/v2"
GEN = GeneratedContent(3_000_001, seed=5)


def node(dataset: Dataset, relpath: str) -> Node:
    return next(n for n in dataset.by_sb_id.values() if n.relpath == relpath)


def client_for(app: Any) -> httpx.AsyncClient:
    return make_client(transport=httpx.ASGITransport(app=app))


def backend_for(
    client: httpx.AsyncClient, project: str | None = PROJECT, token: str = TOKEN
) -> SevenBridgesBackend:
    return SevenBridgesBackend(client, api_url=API, token=Secret(token), project=project)


@pytest.fixture
def app(dataset: Dataset) -> EmulatorApp:
    return create_app(dataset, {TOKEN})


@pytest.fixture
async def backend(app: EmulatorApp) -> AsyncIterator[SevenBridgesBackend]:
    async with client_for(app) as client:
        b = backend_for(client)
        await b.check()
        app.stats.reset()
        yield b
        await b.aclose()


async def entry_at(backend: SevenBridgesBackend, path: str) -> RemoteEntry:
    entry = backend.root()
    for part in path.split("/"):
        entry = next(e for e in await backend.list_dir(entry) if e.name == part)
    return entry


def requests(app: EmulatorApp) -> dict[str, int]:
    return dict(app.stats.requests)


# --- check() and root() -------------------------------------------------------------------


async def test_check_and_root(app, dataset) -> None:
    async with client_for(app) as client:
        backend = backend_for(client)
        with pytest.raises(RuntimeError):
            backend.root()
        await backend.check()
        root = backend.root()
    assert root.id == dataset.root.sb_id and root.is_dir and root.name == "test-project"
    assert requests(app) == {"sb.user": 1, "sb.projects.get": 1}


async def test_refused_token(app) -> None:
    async with client_for(app) as client:
        with pytest.raises(AccessDenied, match="the Seven Bridges token was refused") as info:
            await backend_for(client, token="not-the-token").check()
    assert "not-the-token" not in str(info.value)


async def test_missing_project(app) -> None:
    async with client_for(app) as client:
        with pytest.raises(NotFound, match="project test-user/nope does not exist"):
            await backend_for(client, project="test-user/nope").check()
    with pytest.raises(ValueError, match="owner/name"):
        backend_for(client, project="no-slash")


# --- listing --------------------------------------------------------------------------------


async def test_list_root_is_one_request_with_everything(backend, app, dataset) -> None:
    entries = await backend.list_dir(backend.root())
    assert requests(app) == {"sb.files.list": 1}
    assert [e.name for e in entries] == [n.name for n in dataset.root.children]  # order kept
    for entry, source in zip(entries, dataset.root.children, strict=True):
        assert entry.id == source.sb_id and entry.is_dir == source.is_folder
        assert entry.size == source.size
        assert entry.mtime_ns == int(source.mtime) * 10**9  # SB times have whole seconds
        assert entry.record["id"] == source.sb_id


async def test_list_many_costs_exactly_its_three_pages(backend, app, dataset) -> None:
    many = next(e for e in await backend.list_dir(backend.root()) if e.name == "many")
    app.stats.reset()
    entries = await backend.list_dir(many)
    assert requests(app) == {"sb.files.list": 3}  # ceil(250 / 100), and nothing else
    assert len(entries) == MANY
    assert [e.name for e in entries] == [n.name for n in node(dataset, "many").children]
    assert all(not e.is_dir and e.size > 0 for e in entries)


async def test_entry_metadata_record_and_version(backend, dataset) -> None:
    sample = await entry_at(backend, "reads/sample.bin")
    source = node(dataset, "reads/sample.bin")
    assert sample.metadata["sample_id"] == "S1"
    assert sample.metadata["Data Class"] == "Bulk transcriptomics"
    assert sample.metadata["tags"] == '["reads", "demo"]'
    assert sample.record["metadata"]["sample_id"] == "S1" and "tags" in sample.record
    assert sample.version == f"{source.size}-{sample.record['modified_on']}-"
    folder = await entry_at(backend, "nested/a")
    assert folder.is_dir and folder.size == 0 and folder.metadata == {}


async def test_all_projects_namespace(app, dataset) -> None:
    async with client_for(app) as client:
        backend = backend_for(client, project=None)
        await backend.check()
        assert requests(app) == {"sb.user": 1}
        root = backend.root()
        owners = await backend.list_dir(root)
        assert [(o.name, o.id, o.is_dir) for o in owners] == [
            ("test-user", "sbg:owner:test-user", True)
        ]
        projects = await backend.list_dir(owners[0])
        assert [(p.name, p.id) for p in projects] == [("test-project", dataset.root.sb_id)]
        assert projects[0].metadata["project"] == PROJECT
        app.stats.reset()
        children = await backend.list_dir(projects[0])
    assert [c.name for c in children] == [n.name for n in dataset.root.children]
    assert requests(app) == {"sb.files.list": 1}


# --- reading --------------------------------------------------------------------------------


async def test_reads_share_one_signed_url(backend, app, data_dir) -> None:
    sample = await entry_at(backend, "reads/sample.bin")
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    app.stats.reset()
    assert await backend.read(sample, 0, 65536) == data[:65536]
    assert await backend.read(sample, 5_000_000, 1 << 20) == data[5_000_000 : 5_000_000 + (1 << 20)]
    assert requests(app) == {"sb.download_info": 1, "sb.storage": 2}


async def test_concurrent_reads_share_one_download_info(backend, app, data_dir) -> None:
    sample = await entry_at(backend, "reads/sample.bin")
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    app.stats.reset()
    got: dict[int, bytes] = {}

    async def read(offset: int) -> None:
        got[offset] = await backend.read(sample, offset, 100_000)

    async with trio.open_nursery() as nursery:
        for offset in range(0, 6_000_000, 1_000_000):
            nursery.start_soon(read, offset)
    assert all(got[o] == data[o : o + 100_000] for o in got) and len(got) == 6
    assert app.stats.requests["sb.download_info"] == 1


async def test_signed_url_never_gets_the_token(dataset) -> None:
    app = create_app(dataset, {TOKEN})
    storage_headers: list[dict[str, str]] = []

    async def spy(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/sb-storage/"):
            storage_headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    async with client_for(spy) as client:
        backend = backend_for(client)
        await backend.check()
        await backend.read(await entry_at(backend, "top.txt"), 0, 100)
    assert len(storage_headers) == 1
    assert not {"x-sbg-auth-token", "authorization"} & set(storage_headers[0])
    assert TOKEN not in str(storage_headers)


async def test_random_reads_are_byte_exact(backend, data_dir) -> None:
    rng = random.Random(7)
    sample = await entry_at(backend, "reads/sample.bin")
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    cases = [(rng.randrange(len(data)), rng.randrange(1, 300_000)) for _ in range(12)]
    cases += [(len(data) - 1, 1), (len(data) - 10, 4096), (0, len(data)), (0, 1)]
    for offset, size in cases:
        assert await backend.read(sample, offset, size) == data[offset : offset + size]


async def test_generated_file_across_chunk_boundaries(backend) -> None:
    gen = await entry_at(backend, "big/gen.bin")
    assert gen.size == GEN.size
    cases = [(CHUNK - 10, 20), (2 * CHUNK - 1, CHUNK + 2), (0, GEN.size), (GEN.size - 1, 1)]
    cases += [(GEN.size - 100, 1000)]  # past EOF: clamped
    for offset, size in cases:
        got = await backend.read(gen, offset, size)
        assert got == GEN.read(offset, size) and len(got) == min(size, GEN.size - offset)


async def test_empty_and_past_eof_reads_cost_nothing(backend, app, data_dir) -> None:
    empty = await entry_at(backend, "nested/empty.txt")
    small = await entry_at(backend, "reads/small.txt")
    app.stats.reset()
    assert await backend.read(empty, 0, 4096) == b""
    assert await backend.read(small, small.size, 10) == b""
    assert await backend.read(small, small.size + 5, 10) == b""
    assert await backend.read(small, 0, 0) == b""
    assert requests(app) == {}


async def test_expired_url_is_refreshed_once(dataset, data_dir) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(url_lifetime=-1))

    async def restore_after_first_url(scope, receive, send) -> None:
        await app(scope, receive, send)
        if app.stats.requests["sb.download_info"] >= 1:
            app.knobs.url_lifetime = 3600  # the platform issued one stale URL, then good ones

    async with client_for(restore_after_first_url) as client:
        backend = backend_for(client)
        await backend.check()
        sample = await entry_at(backend, "reads/sample.bin")
        app.stats.reset()
        got = await backend.read(sample, 1000, 5000)
    assert got == (data_dir / "reads" / "sample.bin").read_bytes()[1000:6000]
    assert app.stats.requests["sb.download_info"] == 2
    assert app.stats.statuses["sb.storage 403"] == 1 and app.stats.statuses["sb.storage 206"] == 1


async def test_url_that_stays_expired_is_access_denied(dataset) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(url_lifetime=-1))
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        small = await entry_at(backend, "reads/small.txt")
        app.stats.reset()
        with pytest.raises(AccessDenied, match="expired"):
            await backend.read(small, 0, 10)
    assert requests(app) == {"sb.download_info": 2, "sb.storage": 2}  # one refresh, no loop


async def test_url_near_expiry_is_refreshed_before_use(dataset, data_dir) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(url_lifetime=30))  # < the 60 s margin (A5)
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        small = await entry_at(backend, "reads/small.txt")
        app.stats.reset()
        assert await backend.read(small, 0, 5) == b"hello"
        assert await backend.read(small, 6, 8) == b"remotefs"
    assert requests(app) == {"sb.download_info": 2, "sb.storage": 2}
    assert app.stats.statuses["sb.storage 206"] == 2


async def test_revoked_access_is_denied_without_retrying(backend, app) -> None:
    small = await entry_at(backend, "reads/small.txt")
    app.knobs.revoked = (small.id,)
    app.stats.reset()
    with pytest.raises(AccessDenied, match="access denied") as info:
        await backend.read(small, 0, 10)
    assert "Signature" not in str(info.value)
    assert requests(app) == {"sb.download_info": 1, "sb.storage": 1}


async def test_faults_are_retried_to_exact_bytes(dataset, data_dir) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(fail_every=3))
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        many = await backend.list_dir(await entry_at(backend, "many"))
        assert [e.name for e in many] == [f"file-{i:04d}.txt" for i in range(MANY)]
        sample = await entry_at(backend, "reads/sample.bin")
        for offset in (0, 777_777, 3_000_000, len(data) - 3):
            assert await backend.read(sample, offset, 200_000) == data[offset : offset + 200_000]
        first_file = (data_dir / "many" / "file-0000.txt").read_bytes()
        assert await backend.read(many[0], 0, 4096) == first_file
    assert app.stats.requests["fault.503"] >= 4


async def test_rate_limit_waits_for_the_reset(dataset, data_dir) -> None:
    # Wall-clock rate limiter in the emulator: keep the window short (≤ 2 s).
    app = create_app(dataset, {TOKEN}, Knobs(sb_rate_limit=5, sb_rate_window=2))
    data = (data_dir / "reads" / "sample.bin").read_bytes()
    async with client_for(app) as client:
        backend = backend_for(client)
        await backend.check()
        root = await backend.list_dir(backend.root())
        folders = {e.name: e for e in root}
        listed = {
            name: await backend.list_dir(folders[name]) for name in ("many", "reads", "nested")
        }
        assert len(listed["many"]) == MANY
        sample = next(e for e in listed["reads"] if e.name == "sample.bin")
        assert await backend.read(sample, 100, 1000) == data[100:1100]
        assert await backend.read(sample, 4_000_000, 1000) == data[4_000_000:4_001_000]
    api_requests = sum(v for k, v in app.stats.requests.items() if k != "sb.storage")
    assert api_requests > 5  # more than one window's budget was needed...
    assert not [k for k in app.stats.statuses if k.endswith(" 429")]  # ...without a single 429


def test_url_expiry_formats() -> None:
    assert url_expiry("https://s3/x?AWSAccessKeyId=A&Expires=1452345802&Signature=S") == 1452345802
    sigv4 = "https://s3/x?X-Amz-Date=20240102T030405Z&X-Amz-Expires=600&X-Amz-Signature=S"
    assert url_expiry(sigv4) == 1704164645 + 600
    gcs = "https://gcs/x?X-Goog-Date=20240102T030405Z&X-Goog-Expires=60&X-Goog-Signature=S"
    assert url_expiry(gcs) == 1704164645 + 60
    assert url_expiry("https://s3/x?nothing=here") is None


async def test_token_is_not_in_the_backend_state_repr(app) -> None:
    async with client_for(app) as client:
        backend = backend_for(client)
        assert TOKEN not in repr(vars(backend))
