"""The official ``sevenbridges-python`` client against the emulator over real HTTP."""

from __future__ import annotations

import pytest
import requests
import sevenbridges as sbg
from sevenbridges.errors import NonJSONResponseError, NotFound, TooManyRequests

from remotefs.emulator.dataset import Dataset
from tests.conftest import PROJECT, TOKEN
from tests.support.data import MANY
from tests.support.emulator import Emulator, start_emulator


def _api(url: str, token: str = TOKEN) -> sbg.Api:
    return sbg.Api(url=f"{url}/v2", token=token, debug=True)


def test_lists_project_root(emulator: Emulator, dataset: Dataset) -> None:
    api = _api(emulator.url)
    project = api.projects.get(PROJECT)
    assert project.root_folder == dataset.root.sb_id
    root = api.files.query(project=PROJECT, limit=100).all()
    assert sorted(f.name for f in root) == sorted(n.name for n in dataset.root.children)
    kinds = {f.name: f.is_folder() for f in api.files.query(project=PROJECT, limit=100).all()}
    assert kinds["many"] is True and kinds["top.txt"] is False


def test_pages_a_250_entry_folder(emulator: Emulator, dataset: Dataset) -> None:
    api = _api(emulator.url)
    many = next(n for n in dataset.root.children if n.name == "many")
    emulator.reset()
    listed = list(api.files.query(parent=many.sb_id, limit=100).all())
    assert len(listed) == MANY
    assert sorted(f.name for f in listed) == [f"file-{i:04d}.txt" for i in range(MANY)]
    # .all() re-fetches the first page from its href, then follows 2 next links.
    assert emulator.requests("sb.files.list") == 4


def test_folder_list_files(emulator: Emulator, dataset: Dataset) -> None:
    api = _api(emulator.url)
    folder = api.files.get(next(n for n in dataset.root.children if n.name == "many").sb_id)
    assert folder.is_folder()
    assert len(list(folder.list_files(limit=100).all())) == MANY


def test_file_details(emulator: Emulator, dataset: Dataset) -> None:
    node = next(n for n in dataset.by_sb_id.values() if n.name == "sample.bin")
    f = _api(emulator.url).files.get(node.sb_id)
    assert (f.name, f.size, f.project, f.parent) == (
        "sample.bin",
        node.size,
        PROJECT,
        node.parent.sb_id,
    )
    assert f.tags == ["reads", "demo"]
    assert f.metadata["sample_id"] == "S1"
    assert f.created_on.year >= 2000


def test_download_is_byte_identical(
    emulator: Emulator, dataset: Dataset, data_dir, tmp_path
) -> None:
    node = next(n for n in dataset.by_sb_id.values() if n.name == "sample.bin")
    assert node.size > 5 * 1024 * 1024  # more than one 5 MiB part: ranged parts are exercised
    f = _api(emulator.url).files.get(node.sb_id)
    out = tmp_path / "sample.bin"
    f.download(str(out))
    assert out.read_bytes() == (data_dir / "reads" / "sample.bin").read_bytes()


def test_unknown_id_is_404_5002(emulator: Emulator) -> None:
    with pytest.raises(NotFound) as info:
        _api(emulator.url).files.get("0123456789abcdef01234567")
    assert info.value.status == 404 and info.value.code == 5002


def test_rate_limit_429(data_dir, tmp_path) -> None:
    emu = start_emulator(
        ["--data", str(data_dir), "--rate-limit", "3", "--rate-window", "600"], tmp_path / "log"
    )
    try:
        api = _api(emu.url, "test-token")
        for _ in range(3):
            api.users.me()
        with pytest.raises(TooManyRequests) as info:
            api.users.me()
        assert info.value.status == 429 and info.value.code == 1000
        raw = requests.get(
            f"{emu.url}/v2/user", headers={"X-SBG-Auth-Token": "test-token"}, timeout=10
        )
        assert raw.status_code == 429
        assert "Retry-After" not in raw.headers
        assert int(raw.headers["X-RateLimit-Reset"]) > 0  # integer seconds, as the client parses it
        assert raw.headers["X-RateLimit-Remaining"] == "0"
        assert api.remaining == 0  # /rate_limit is free and still answers
    finally:
        emu.stop()


def test_signed_url_expires_with_403(emulator: Emulator, dataset: Dataset) -> None:
    node = next(n for n in dataset.by_sb_id.values() if n.name == "small.txt")
    api = _api(emulator.url)
    emulator.configure(url_lifetime=-1.0)  # URLs are issued already expired: no waiting
    try:
        f = api.files.get(node.sb_id)
        url = f.download_info().url
        response = requests.get(url, timeout=10)
        assert response.status_code == 403
        assert b"Request has expired" in response.content
        # File.stream(): download_info, then a GET without headers; storage errors are S3's
        # XML (A5), which the client reports as a non-JSON error carrying the status.
        with pytest.raises(NonJSONResponseError) as info:
            next(iter(f.stream()))
        assert info.value.status == 403
        assert "Request has expired" in info.value.message
    finally:
        emulator.configure(url_lifetime=3600.0)
    fresh = api.files.get(node.sb_id).download_info().url
    assert requests.get(fresh, timeout=10).content == b"hello remotefs\n"


def test_storage_needs_no_token_and_forbids_tampering(emulator: Emulator, dataset: Dataset) -> None:
    node = next(n for n in dataset.by_sb_id.values() if n.name == "small.txt")
    url = _api(emulator.url).files.get(node.sb_id).download_info().url
    assert requests.get(url, timeout=10).status_code == 200
    tampered = url.replace("Expires=", "Expires=9")
    assert requests.get(tampered, timeout=10).status_code == 403


def test_every_sb_filter_through_the_official_client(emulator: Emulator) -> None:
    """What query folders send (metadata.*, tag twice = OR, name, origin.task, AND across
    keys), as the official client encodes it, answers what the mount's parser describes."""
    from remotefs.query import parse_sevenbridges

    api = _api(emulator.url)
    reads = next(f for f in api.files.query(project=PROJECT).all() if f.name == "reads")

    def names(**query: object) -> set[str]:
        return {f.name for f in api.files.query(parent=reads.id, limit=100, **query).all()}

    assert names(metadata={"sample_id": "S1"}) == {"sample.bin"}
    assert names(tags=["text", "reads"]) == {"sample.bin", "small.txt"}  # OR
    assert names(metadata={"sample_id": "S1"}, tags=["text"]) == set()  # AND
    assert names(names=["small.txt"]) == {"small.txt"}
    assert names(origin={"task": "0d7ad4b9-no-such-task"}) == set()
    sent = ("metadata.sample_id=S1", "tag=text&tag=reads", "name=small.txt",
            "origin.task=0d7ad4b9-no-such-task", "metadata.sample_id=S1&tag=text")  # fmt: skip
    for text in sent:
        parse_sevenbridges(text)  # the mount accepts each
