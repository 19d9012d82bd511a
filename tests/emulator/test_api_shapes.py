"""Wire shapes both clients depend on: envelopes, fields, paging, headers, counters, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from remotefs.emulator.app import EmulatorApp, create_app
from remotefs.emulator.control import Knobs
from remotefs.emulator.dataset import Dataset
from tests.conftest import PROJECT, TOKEN
from tests.support.data import MANY

SB = {"X-SBG-Auth-Token": TOKEN}
ODM = {"Genestack-API-Token": TOKEN}


@pytest.fixture
def app(dataset: Dataset) -> EmulatorApp:
    return create_app(dataset, {TOKEN})


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://emu"
    ) as c:
        yield c


def _many(dataset: Dataset) -> str:
    return next(n.sb_id for n in dataset.root.children if n.name == "many")


async def test_sb_envelope_links_and_total(client, dataset) -> None:
    params = {"parent": _many(dataset), "fields": "_all", "limit": "100", "offset": "100"}
    r = await client.get("/v2/files", params=params, headers=SB)
    body = r.json()
    assert r.headers["x-total-matching-query"] == str(MANY)
    assert set(body) == {"href", "items", "links"}
    assert body["href"].startswith("http://emu/v2/files?") and "fields=_all" in body["href"]
    assert "offset=100" in body["href"] and "limit=100" in body["href"]
    rels = {link["rel"]: link for link in body["links"]}
    assert set(rels) == {"next", "prev"}  # A14
    assert "offset=200" in rels["next"]["href"] and "fields=_all" in rels["next"]["href"]
    assert rels["next"]["method"] == "GET"
    assert [i["name"] for i in body["items"]][:2] == ["file-0100.txt", "file-0101.txt"]
    item = body["items"][0]
    assert item["type"] == "file" and isinstance(item["size"], int)  # A1
    assert item["created_on"].endswith("Z") and "+" not in item["created_on"]
    last = (await client.get(rels["next"]["href"], headers=SB)).json()
    assert len(last["items"]) == MANY - 200 and [lk["rel"] for lk in last["links"]] == ["prev"]


async def test_sb_default_and_selected_fields(client, dataset) -> None:
    r = await client.get("/v2/files", params={"project": PROJECT}, headers=SB)
    assert all(set(i) == {"href", "id", "name", "project"} for i in r.json()["items"])
    r = await client.get(f"/v2/files/{_many(dataset)}/list", headers=SB)
    assert all(
        set(i) == {"href", "id", "name", "project", "parent", "type"} for i in r.json()["items"]
    )
    sample = next(n for n in dataset.by_sb_id.values() if n.name == "sample.bin")
    r = await client.get(
        f"/v2/files/{sample.sb_id}", params={"fields": "id,metadata.sample_id,bogus"}, headers=SB
    )
    assert r.json() == {"id": sample.sb_id, "metadata": {"sample_id": "S1"}}  # A11
    r = await client.get(
        f"/v2/files/{sample.sb_id}", params={"fields": "!metadata,!storage"}, headers=SB
    )
    assert (
        "metadata" not in r.json() and "storage" not in r.json() and r.json()["size"] == sample.size
    )


async def test_sb_filters(client, dataset) -> None:
    reads = next(n.sb_id for n in dataset.root.children if n.name == "reads")

    async def names(**params) -> list[str]:
        r = await client.get("/v2/files", params={"parent": reads, **params}, headers=SB)
        return sorted(i["name"] for i in r.json()["items"])

    assert await names(name=["small.txt", "sample.bin"]) == ["sample.bin", "small.txt"]
    assert await names(tag="reads") == ["sample.bin"]
    assert await names(**{"metadata.sample_id": ["S1", "S2"]}) == ["sample.bin", "small.txt"]
    assert (
        await names(**{"metadata.sample_id": "S1", "metadata.experimental_strategy": "WXS"}) == []
    )
    assert await names(**{"origin.task": "t"}) == []


async def test_sb_scroll_collects_everything(client, dataset) -> None:
    url = f"/v2/files/{_many(dataset)}/scroll?token=init&limit=100&fields=_all"
    names: list[str] = []
    for _ in range(10):
        r = await client.get(url, headers=SB)
        assert r.headers["x-total-matching-query"] == str(MANY)
        body = r.json()
        names += [i["name"] for i in body["items"]]
        if not body["links"]:
            break
        url = body["links"][0]["href"]  # A3
    assert names == [f"file-{i:04d}.txt" for i in range(MANY)]


async def test_sb_bulk_get(client, dataset) -> None:
    sample = next(n for n in dataset.by_sb_id.values() if n.name == "sample.bin")
    r = await client.post(
        "/v2/bulk/files/get", json={"file_ids": [sample.sb_id, "f" * 24]}, headers=SB
    )
    items = r.json()["items"]
    assert items[0]["resource"]["name"] == "sample.bin"
    assert items[1]["error"]["code"] == 5002 and items[1]["error"]["status"] == 404


async def test_sb_projects(client, dataset) -> None:
    for path in ("/v2/projects", "/v2/projects/", "/v2/projects/test-user"):
        r = await client.get(path, params={"fields": "_all"}, headers=SB)
        assert [p["id"] for p in r.json()["items"]] == [PROJECT]
        assert r.json()["items"][0]["root_folder"] == dataset.root.sb_id
    r = await client.get("/v2/projects/", params={"name": "PROJ"}, headers=SB)
    assert r.json()["items"][0]["id"] == PROJECT  # partial, case-insensitive
    r = await client.get(
        "/v2/projects/test-user/test-project/files", headers=SB, follow_redirects=False
    )
    assert r.status_code == 302 and "project=test-user%2Ftest-project" in r.headers["location"]


async def test_sb_rate_limit_headers_and_exempt_status(dataset) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(sb_rate_limit=2, sb_rate_window=100))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        r1 = await c.get("/v2/user", headers=SB)
        assert (r1.headers["x-ratelimit-limit"], r1.headers["x-ratelimit-remaining"]) == ("2", "1")
        reset = int(r1.headers["x-ratelimit-reset"])
        await c.get("/v2/user", headers=SB)
        r3 = await c.get("/v2/user", headers=SB)
        assert r3.status_code == 429 and r3.json()["code"] == 1000
        assert "retry-after" not in r3.headers and int(r3.headers["x-ratelimit-reset"]) == reset
        status = await c.get("/v2/rate_limit", headers=SB)
        assert status.status_code == 200
        assert status.json()["rate"] == {"limit": 2, "remaining": 0, "reset": reset}
        assert app.stats.requests["sb.user"] == 3


async def test_odm_pagination_meta(client, dataset) -> None:
    total = len(dataset.odm_files)
    r = await client.get(
        "/api/v1/as-user/files", params={"pageLimit": "100", "pageOffset": "200"}, headers=ODM
    )
    page = r.json()
    assert page["meta"]["pagination"] == {
        "count": total - 200,
        "total": total,
        "offset": 200,
        "limit": 100,
    }
    r = await client.get("/api/v1/as-user/files", params={"pageLimit": "0"}, headers=ODM)
    assert r.json()["data"] == [] and r.json()["meta"]["pagination"]["total"] == total  # A28
    r = await client.get("/api/v1/as-user/files", headers=ODM)
    assert r.json()["meta"]["pagination"]["limit"] == 2000 and len(r.json()["data"]) == total


async def test_odm_studies_and_files_by_study(client, dataset) -> None:
    r = await client.get("/api/v1/as-user/studies", headers=ODM)
    studies = {s["genestack:name"]: s["genestack:accession"] for s in r.json()["data"]}
    assert set(studies) == {"reads", "many", "nested", "big", "awkward"}
    r = await client.get(
        f"/api/v1/as-user/integration/link/files/by/study/{studies['nested']}", headers=ODM
    )
    assert sorted(f["genestack:name"] for f in r.json()) == ["deep.txt", "empty.txt"]  # bare array


async def test_odm_include_contents(client, dataset) -> None:
    gen = next(n for n in dataset.odm_files if n.name == "gen.bin")
    small = next(n for n in dataset.odm_files if n.name == "small.txt")
    r = await client.get(
        f"/api/v1/as-user/files/{small.accession}", params={"includeContents": "true"}, headers=ODM
    )
    assert "contents" not in r.json()  # not an .h5/.zip/.gz name
    assert gen.name.endswith(".bin")
    archive = next(n for n in dataset.odm_files if n.name == "archive.zip")
    r = await client.get(
        f"/api/v1/as-user/files/{archive.accession}",
        params={"includeContents": "true"},
        headers=ODM,
    )
    tree = r.json()["contents"]  # A21
    assert [(c["type"], c["name"], c["path"]) for c in tree["children"]] == [
        ("file", "b.txt", "/b.txt"),
        ("folder", "docs", "/docs"),
    ]
    assert tree["children"][1]["children"] == [
        {"type": "file", "name": "a.txt", "path": "/docs/a.txt"}
    ]
    h5 = next(n for n in dataset.odm_files if n.name == "tiny.h5")
    r = await client.get(
        f"/api/v1/as-user/files/{h5.accession}", params={"includeContents": "true"}, headers=ODM
    )
    tree = r.json()["contents"]
    assert tree["type"] == "group" and sorted(c["path"] for c in tree["children"]) == ["/X", "/obs"]
    r = await client.get("/api/v1/as-user/files", params={"includeContents": "false"}, headers=ODM)
    assert all("contents" not in d for d in r.json()["data"])
    r = await client.get(
        "/api/v1/as-user/files",
        params={"includeContents": "true", "filter": "genestack:name=gen.bin"},
        headers=ODM,
    )
    assert "contents" not in r.json()["data"][0]


async def test_fault_every_nth_request_is_503(dataset) -> None:
    app = create_app(dataset, {TOKEN}, Knobs(fail_every=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        statuses = [(await c.get("/v2/user", headers=SB)).status_code for _ in range(6)]
        assert statuses == [200, 200, 503, 200, 200, 503]
        r = await c.get("/api/v1/as-user/files", headers=ODM)
        assert r.status_code == 200
        r = await c.get("/api/v1/as-user/files", headers=ODM)
        assert r.status_code == 200
        r = await c.get("/api/v1/as-user/files", headers=ODM)
        assert r.status_code == 503 and r.json() == {
            "error": {"message": "Service unavailable, try again."}
        }
        assert app.stats.requests["fault.503"] == 3


async def test_odm_rate_limit_retry_after(dataset) -> None:  # A24
    app = create_app(dataset, {TOKEN}, Knobs(odm_rate_limit=1, odm_rate_window=30))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        assert (await c.get("/api/v1/as-user/files", headers=ODM)).status_code == 200
        r = await c.get("/api/v1/as-user/files", headers=ODM)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 31


async def test_control_routes(client, app) -> None:
    await client.get("/v2/user", headers=SB)
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["requests"] == {"sb.user": 1} and stats["statuses"] == {"sb.user 200": 1}
    r = await client.post(
        "/_emulator/config", json={"latency_ms": 0, "fail_every": 0, "revoked": ["x"]}
    )
    assert r.json()["revoked"] == ["x"]
    assert (await client.post("/_emulator/config", json={"nope": 1})).status_code == 400
    assert (await client.post("/_emulator/config", json={"latency_ms": "x"})).status_code == 400
    await client.post("/_emulator/reset")
    assert (await client.get("/_emulator/stats")).json()["total_requests"] == 0
