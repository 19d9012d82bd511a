"""The official ``odm-api`` client (``FilesAsUserApi``) against the emulator over real HTTP."""

from __future__ import annotations

import odm_api
import pytest
from odm_api.exceptions import BadRequestException, NotFoundException, UnauthorizedException

from remotefs.emulator.dataset import Dataset
from tests.conftest import TOKEN
from tests.support.emulator import Emulator


def _files_api(url: str, *, token: str = TOKEN, bearer: bool = False) -> odm_api.FilesAsUserApi:
    config = odm_api.Configuration(host=url)
    if bearer:
        config.api_key["Access-token"] = token
        config.api_key_prefix["Access-token"] = "Bearer"
    else:
        config.api_key["Genestack-API-Token"] = token
    return odm_api.FilesAsUserApi(odm_api.ApiClient(config))


def _node(dataset: Dataset, name: str):
    return next(n for n in dataset.odm_files if n.name == name)


def test_pages_the_file_list(emulator: Emulator, dataset: Dataset) -> None:
    api = _files_api(emulator.url)
    seen: list[str] = []
    offset = 0
    while True:
        page = api.get_files_metadata_as_user(page_limit=100, page_offset=offset)
        seen += [item["genestack:accession"] for item in page.data]
        assert page.meta.pagination.count == len(page.data)
        assert page.meta.pagination.total == len(dataset.odm_files)
        offset += 100
        if offset >= page.meta.pagination.total:
            break
    assert seen == [n.accession for n in dataset.odm_files]  # A29: accession order
    assert len(seen) == len(set(seen))


def test_metadata_by_accession(emulator: Emulator, dataset: Dataset) -> None:
    node = _node(dataset, "sample.bin")
    obj = _files_api(emulator.url).get_file_metadata_by_id_as_user(node.accession)
    assert obj["genestack:accession"] == node.accession
    assert obj["genestack:name"] == "sample.bin"
    assert obj["Data Class"] == "Bulk transcriptomics"
    assert obj["sample_id"] == "S1"
    assert "tags" not in obj


def test_download_a_range(emulator: Emulator, dataset: Dataset, data_dir) -> None:
    node = _node(dataset, "sample.bin")
    source = (data_dir / "reads" / "sample.bin").read_bytes()
    api = _files_api(emulator.url)
    assert api.get_file_as_user(node.accession, range="bytes=1000-2999") == source[1000:3000]
    assert api.get_file_as_user(node.accession, range="bytes=-10") == source[-10:]
    bearer = _files_api(emulator.url, bearer=True)
    assert bearer.get_file_as_user(node.accession, range="bytes=0-0") == source[:1]


def test_head(emulator: Emulator, dataset: Dataset) -> None:
    node = _node(dataset, "sample.bin")
    api = _files_api(emulator.url)
    response = api.head_file_as_user_with_http_info(node.accession)
    assert response.status_code == 200
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert int(headers["content-length"]) == node.size
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-disposition"] == 'attachment; filename="sample.bin"'
    assert headers["content-type"] == "application/octet-stream"
    assert "last-modified" in headers
    with pytest.raises(NotFoundException):
        api.head_file_as_user("GSF000000")


def test_filter_and_query(emulator: Emulator, dataset: Dataset) -> None:
    api = _files_api(emulator.url)
    page = api.get_files_metadata_as_user(filter='"Data Class"=Document')
    assert [d["genestack:name"] for d in page.data] == ["small.txt"]
    page = api.get_files_metadata_as_user(filter="sample_id=S1 OR sample_id=S2")
    assert sorted(d["genestack:name"] for d in page.data) == ["sample.bin", "small.txt"]
    page = api.get_files_metadata_as_user(filter="genestack:name=file-00*.txt")
    assert page.meta.pagination.total == 100
    page = api.get_files_metadata_as_user(query="transcriptomics")
    assert [d["genestack:name"] for d in page.data] == ["sample.bin"]
    with pytest.raises(BadRequestException):
        api.get_files_metadata_as_user(filter='("Data Class"=Document')


def test_errors(emulator: Emulator) -> None:
    with pytest.raises(NotFoundException):
        _files_api(emulator.url).get_file_metadata_by_id_as_user("GSF000000")
    with pytest.raises(UnauthorizedException):
        _files_api(emulator.url, token="wrong").get_files_metadata_as_user()
    with pytest.raises(BadRequestException):
        _files_api(emulator.url).get_files_metadata_as_user(page_limit=2001)


FILTERS = {  # every operator a query folder can send, and the names it matches in tests/support
    '"Data Class"=Document': {"small.txt"},
    "sample_id!=S1 && sample_id=S*": {"small.txt"},  # != and a wildcard
    "read_count>40": {"small.txt"},
    "read_count<40": set(),
    "NOT sample_id=S2 AND sample_id=S?": {"sample.bin"},  # NOT, AND, ?
    '(sample_id=S1 || sample_id=S2) AND NOT "Data Class"=Document': {"sample.bin"},
    "sample_id=S1 OR read_count>41": {"sample.bin", "small.txt"},
}


@pytest.mark.parametrize("expression", FILTERS)
def test_every_filter_operator_through_the_official_client_and_the_mounts_parser(
    emulator: Emulator, expression: str
) -> None:
    from remotefs.query import parse_genestack

    parse_genestack(f"filter={expression}")  # the mount sends it: it must accept it
    page = _files_api(emulator.url).get_files_metadata_as_user(filter=expression, page_limit=2000)
    assert {item["genestack:name"] for item in page.data} == FILTERS[expression]


@pytest.mark.parametrize("expression", ['"Data Class=Document', "(a=b", "a=", "a<b", "=b"])
def test_what_the_emulator_refuses_the_mount_never_sends(
    emulator: Emulator, expression: str
) -> None:
    from remotefs.errors import InvalidQuery
    from remotefs.query import parse_genestack

    with pytest.raises(InvalidQuery):
        parse_genestack(f"filter={expression}")
    with pytest.raises(BadRequestException):
        _files_api(emulator.url).get_files_metadata_as_user(filter=expression)
