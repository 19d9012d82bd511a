"""Malformed input gets the platform's documented error: never a 500, never a traceback.

In-process through ``httpx.ASGITransport``: no sockets, the same app the server runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from remotefs.emulator.app import create_app
from remotefs.emulator.dataset import Dataset
from tests.conftest import PROJECT, TOKEN

SB = {"X-SBG-Auth-Token": TOKEN}
ODM = {"Genestack-API-Token": TOKEN}
MORE_INFO = "https://docs.sevenbridges.com/reference/api-status-codes"


@pytest.fixture
async def client(dataset: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(dataset, {TOKEN}))
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as c:
        yield c


def _sb_error(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["status"], body["code"], body["more_info"]) == (status, code, MORE_INFO)
    assert isinstance(body["message"], str) and "Traceback" not in body["message"]


def _folder(dataset: Dataset, name: str) -> str:
    return next(n.sb_id for n in dataset.by_sb_id.values() if n.name == name and n.is_folder)


def _file(dataset: Dataset, name: str) -> str:
    return next(n.sb_id for n in dataset.by_sb_id.values() if n.name == name)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-SBG-Auth-Token": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
    ],
)
async def test_sb_bad_token_is_401_90001(client, headers) -> None:
    r = await client.get("/v2/user", headers=headers)
    _sb_error(r, 401, 90001)  # A9
    assert "x-ratelimit-remaining" not in r.headers


async def test_sb_bearer_token_is_accepted(client) -> None:
    r = await client.get("/v2/user", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["username"] == "test-user"


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
async def test_sb_limit_out_of_range(client, limit) -> None:
    _sb_error(
        await client.get("/v2/files", params={"project": PROJECT, "limit": limit}, headers=SB),
        400,
        90000,
    )  # A4


async def test_sb_negative_offset(client) -> None:
    _sb_error(
        await client.get("/v2/files", params={"project": PROJECT, "offset": "-5"}, headers=SB),
        400,
        90000,
    )


async def test_sb_project_and_parent(client, dataset) -> None:
    params = {"project": PROJECT, "parent": dataset.root.sb_id}
    _sb_error(await client.get("/v2/files", params=params, headers=SB), 400, 5031)  # A10


async def test_sb_neither_project_nor_parent(client) -> None:
    _sb_error(await client.get("/v2/files", headers=SB), 400, 5005)


@pytest.mark.parametrize("project", ["nouser", "a/b/c", "/x", "x/"])
async def test_sb_malformed_project(client, project) -> None:
    _sb_error(await client.get("/v2/files", params={"project": project}, headers=SB), 400, 5005)


async def test_sb_unknown_project(client) -> None:
    _sb_error(await client.get("/v2/files", params={"project": "who/what"}, headers=SB), 404, 3002)
    _sb_error(await client.get("/v2/projects/who/what", headers=SB), 404, 3002)


@pytest.mark.parametrize("suffix", ["", "/download_info", "/metadata", "/list"])
async def test_sb_unknown_id(client, suffix) -> None:
    _sb_error(
        await client.get(f"/v2/files/0123456789abcdef01234567{suffix}", headers=SB), 404, 5002
    )


async def test_sb_unknown_parent(client) -> None:
    r = await client.get("/v2/files", params={"parent": "0123456789abcdef01234567"}, headers=SB)
    _sb_error(r, 404, 5002)


async def test_sb_parent_is_a_file(client, dataset) -> None:
    r = await client.get("/v2/files", params={"parent": _file(dataset, "top.txt")}, headers=SB)
    _sb_error(r, 400, 5022)


async def test_sb_folder_download_is_5017(client, dataset) -> None:
    r = await client.get(f"/v2/files/{_folder(dataset, 'many')}/download_info", headers=SB)
    _sb_error(r, 400, 5017)


@pytest.mark.parametrize("token", ["%%%notbase64", "bm90IGpzb24="])
async def test_sb_malformed_scroll_token(client, token) -> None:
    r = await client.get(
        "/v2/files/scroll", params={"project": PROJECT, "token": token}, headers=SB
    )
    _sb_error(r, 400, 57000)


async def test_sb_scroll_token_of_another_listing_is_57001(client, dataset) -> None:
    r = await client.get(
        "/v2/files/scroll", params={"project": PROJECT, "token": "init", "limit": "1"}, headers=SB
    )
    token = r.json()["links"][0]["href"].split("token=")[1].split("&")[0]
    r = await client.get(f"/v2/files/{_folder(dataset, 'many')}/scroll?token={token}", headers=SB)
    _sb_error(r, 400, 57001)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"file_ids": "x"}',
        b'{"file_ids": [1]}',
        b'{"file_ids": ' + str([str(i) for i in range(101)]).replace("'", '"').encode() + b"}",
    ],
)
async def test_sb_bulk_bad_body(client, body) -> None:
    _sb_error(await client.post("/v2/bulk/files/get", content=body, headers=SB), 400, 90000)


async def test_sb_write_is_405(client, dataset) -> None:
    _sb_error(await client.delete(f"/v2/files/{_file(dataset, 'top.txt')}", headers=SB), 405, 90006)


async def test_sb_unknown_route(client) -> None:
    _sb_error(await client.get("/v2/nothing/here", headers=SB), 404, 90003)


# --- ODM --------------------------------------------------------------------------------


def _odm_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"]["message"], str)  # A25


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Genestack-API-Token": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
    ],
)
async def test_odm_bad_token_is_401(client, headers) -> None:
    r = await client.get("/api/v1/as-user/files", headers=headers)
    _odm_error(r, 401)
    assert "Genestack-API-Token" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"pageLimit": "2001"},
        {"pageLimit": "-1"},
        {"pageOffset": "-1"},
        {"pageLimit": "x"},
        {"includeContents": "yes"},
        {"filter": '"Data Class"="Bulk'},
        {"filter": "a=1 AND"},
        {"filter": "(a=1"},
        {"filter": ""},
        {"query": '"unterminated'},
    ],
)
async def test_odm_malformed_parameters_are_400(client, params) -> None:  # A27, A15
    _odm_error(await client.get("/api/v1/as-user/files", params=params, headers=ODM), 400)


async def test_odm_unknown_accession_is_404(client) -> None:
    for path in (
        "files/GSF000000",
        "files/GSF000000/download",
        "integration/link/files/by/study/GSF1",
    ):
        _odm_error(await client.get(f"/api/v1/as-user/{path}", headers=ODM), 404)
    r = await client.head("/api/v1/as-user/files/GSF000000/download", headers=ODM)
    assert r.status_code == 404 and r.content == b""


async def test_odm_refused_accept_is_406(client, dataset) -> None:
    acc = dataset.odm_files[0].accession
    r = await client.get(
        f"/api/v1/as-user/files/{acc}/download", headers={**ODM, "Accept": "text/html"}
    )
    _odm_error(r, 406)  # A23


async def test_odm_both_headers_token_header_wins(client) -> None:  # A26
    r = await client.get("/api/v1/as-user/files", headers={**ODM, "Authorization": "Bearer wrong"})
    assert r.status_code == 200


async def test_handler_bug_is_a_500_body_not_a_traceback(client, dataset, monkeypatch) -> None:
    app = client._transport.app  # type: ignore[attr-defined]

    async def boom(req, m):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.sb, "user", boom)
    app.sb.routes = [(m, p, n, boom if n == "sb.user" else h) for m, p, n, h in app.sb.routes]
    r = await client.get("/v2/user", headers=SB)
    assert r.status_code == 500 and "secret internals" not in r.text
    assert r.json()["status"] == 500
