"""The origin of signed storage URLs: the request's own, or the ``storage_url`` knob's.

Real signed URLs name another host (S3) than the API; the benchmarks put a proxy there that
forwards to the emulator, whose storage route answers on every origin it listens on. Set at
start (``--storage-url``, over real HTTP) or at run time (``POST /_emulator/config``,
in-process through ``httpx.ASGITransport``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from remotefs.emulator.app import create_app
from remotefs.emulator.dataset import Dataset
from tests.conftest import PROJECT, TOKEN
from tests.support.emulator import start_emulator

SB = {"X-SBG-Auth-Token": TOKEN}


@pytest.fixture
async def client(dataset: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(dataset, {TOKEN}))
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as c:
        yield c


def _small(dataset: Dataset) -> str:
    return next(n.sb_id for n in dataset.by_sb_id.values() if n.name == "small.txt")


async def _signed(client: httpx.AsyncClient, file_id: str) -> str:
    r = await client.get(f"/v2/files/{file_id}/download_info", headers=SB)
    assert r.status_code == 200, r.text
    return str(r.json()["url"])


async def test_signed_urls_name_the_configured_origin(client, dataset) -> None:
    file_id = _small(dataset)
    assert (await _signed(client, file_id)).startswith(f"http://emu/sb-storage/{file_id}/")

    r = await client.post("/_emulator/config", json={"storage_url": "https://127.0.0.1:9/"})
    assert r.status_code == 200 and r.json()["storage_url"] == "https://127.0.0.1:9"
    url = await _signed(client, file_id)
    assert url.startswith(f"https://127.0.0.1:9/sb-storage/{file_id}/small.txt?")
    # The storage route answers the same path and query on any origin (a proxy forwards it).
    parts = urlsplit(url)
    got = await client.get(f"{parts.path}?{parts.query}")
    assert (got.status_code, got.content) == (200, b"hello remotefs\n")

    r = await client.post("/_emulator/config", json={"storage_url": ""})
    assert r.status_code == 200 and r.json()["storage_url"] == ""
    assert (await _signed(client, file_id)).startswith("http://emu/sb-storage/")


@pytest.mark.parametrize(
    "value", ["ftp://127.0.0.1:9", "127.0.0.1:9", "http://127.0.0.1:9/s3", "http://h/?a=1", 9]
)
async def test_a_storage_url_that_is_not_an_origin_is_refused(client, value) -> None:
    r = await client.post("/_emulator/config", json={"storage_url": value})
    assert r.status_code == 400
    assert (await client.get("/_emulator/config")).json()["storage_url"] == ""


def test_the_storage_url_option_over_real_http(data_dir: Path, tmp_path: Path) -> None:
    args = ["--data", str(data_dir), "--user", "test-user", "--project", PROJECT]
    emu = start_emulator([*args, "--storage-url", "http://127.0.0.1:9"], tmp_path / "emu.log")
    try:

        def get(path: str, **params: object) -> httpx.Response:
            return httpx.get(
                f"{emu.url}{path}", params=params, headers=SB, timeout=10, trust_env=False
            )

        files = get("/v2/files", project=PROJECT, limit=100).json()["items"]
        reads = next(f["id"] for f in files if f["name"] == "reads")
        listed = get("/v2/files", parent=reads, limit=100).json()["items"]
        small = next(f["id"] for f in listed if f["name"] == "small.txt")
        info = get(f"/v2/files/{small}/download_info")
        url = info.json()["url"]
        assert url.startswith(f"http://127.0.0.1:9/sb-storage/{small}/small.txt?")
        parts = urlsplit(url)
        got = httpx.get(f"{emu.url}{parts.path}?{parts.query}", timeout=10, trust_env=False)
        assert (got.status_code, got.content) == (200, b"hello remotefs\n")
    finally:
        emu.stop()
