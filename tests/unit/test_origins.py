"""remotefs.origins: the hosts a mount warms at start, remembered in the record store."""

from __future__ import annotations

from pathlib import Path

from remotefs.cache.records import RecordStore
from remotefs.origins import MAX_REMEMBERED, RECORD_KEY, keep_warm

API = "https://api.example/v2"


class Transport:
    """What keep_warm uses of a ThreadedTransport: warm() and on_new_origin."""

    def __init__(self) -> None:
        self.warmed: list[str] = []
        self.on_new_origin = None

    def warm(self, url: str) -> None:
        self.warmed.append(url)


async def test_new_hosts_are_remembered_and_warmed_by_the_next_mount(tmp_path: Path) -> None:
    records = RecordStore(tmp_path / "records", user_key="u1")
    first = Transport()
    keep_warm(first, API, records)  # type: ignore[arg-type]
    assert first.warmed == [API]
    assert first.on_new_origin is not None
    for i in range(MAX_REMEMBERED + 2):
        first.on_new_origin(f"https://bucket-{i}.s3.example:443")
    first.on_new_origin("https://bucket-3.s3.example:443")  # used again: the newest
    records.close()

    records = RecordStore(tmp_path / "records", user_key="u2")  # hosts are no user's secret
    second = Transport()
    keep_warm(second, API, records)  # type: ignore[arg-type]
    records.close()
    newest = [3, 9, 8, 7, 6, 5, 4, 2]
    assert second.warmed == [API, *(f"https://bucket-{i}.s3.example:443" for i in newest)]


def warmed_after(tmp_path: Path, value: object) -> list[str]:
    """What a mount warms when the record store holds ``value`` for the origins."""
    records = RecordStore(tmp_path / "records", user_key="u1")
    records.remember_value(RECORD_KEY, value)
    records.close()
    records = RecordStore(tmp_path / "records", user_key="u1")
    transport = Transport()
    keep_warm(transport, API, records)  # type: ignore[arg-type]
    records.close()
    return transport.warmed


def test_a_remembered_value_that_is_not_a_list_of_origins_is_ignored(tmp_path: Path) -> None:
    junk = ["ftp://x:21", "https://ok.example:443", "https://a.example:443/path?Signature=s", 7]
    assert warmed_after(tmp_path, junk) == [API, "https://ok.example:443"]
    assert warmed_after(tmp_path, {"not": "a list"}) == [API]


def test_without_a_record_store_only_the_api_is_warmed() -> None:
    transport = Transport()
    keep_warm(transport, API, None)  # type: ignore[arg-type]
    assert transport.warmed == [API] and transport.on_new_origin is None


def test_remembered_origins_httpx_cannot_parse_or_with_parts_are_dropped(tmp_path: Path) -> None:
    junk = ["https://h:x", "https://u:p@h.example:443", "https://[::1]:8443", "http://h:1?q"]
    assert warmed_after(tmp_path, junk) == [API, "https://[::1]:8443"]
