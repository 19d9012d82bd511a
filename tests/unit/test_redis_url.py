"""``--shared-state`` URLs (remotefs.redis_url) and the daemon's command line without the
store's password (remotefs.cli)."""

from __future__ import annotations

import pytest

from remotefs.cli import _password_to_environment
from remotefs.redis_url import (
    PASSWORD_ENV,
    SharedStateError,
    has_password,
    parse_url,
    redacted,
    without_password,
)


def test_urls_that_parse() -> None:
    assert parse_url("redis://127.0.0.1:6390/3") == ("127.0.0.1", 6390, 3, False, None, None)
    assert parse_url("redis://redis.lab") == ("redis.lab", 6379, 0, False, None, None)
    assert parse_url("rediss://node:p%40ss@redis.lab:6380/") == (
        "redis.lab",
        6380,
        0,
        True,
        "node",
        "p@ss",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0", "expected redis://HOST"),
        ("127.0.0.1:6379", "expected redis://HOST"),
        ("redis://", "expected redis://HOST"),
        ("redis://:hunter2@127.0.0.1:99999/0", "Port out of range"),
        ("redis://:hunter2@127.0.0.1:6379/zero", "the path is a database number"),
        ("redis://127.0.0.1:6379/0?db=1", "the path is a database number"),
        ("redis://[::1/0", "Invalid IPv6 URL"),
    ],
)
def test_malformed_urls_are_one_line_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(SharedStateError, match=message) as info:
        parse_url(url)
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize("password", ["s3cr/et", "s3cr?et", "s3cr#et", "p@ss:w0rd"])
def test_a_password_with_reserved_characters_is_still_a_password(password: str) -> None:
    url = f"redis://node:{password}@127.0.0.1:6390/2"
    assert parse_url(url) == ("127.0.0.1", 6390, 2, False, "node", password)
    assert has_password(url) and password not in redacted(url)
    assert without_password(url) == ("redis://node@127.0.0.1:6390/2", password)
    bad = f"redis://:{password}@127.0.0.1:notaport/0"
    with pytest.raises(SharedStateError) as info:
        parse_url(bad)
    assert password not in str(info.value)
    for argv in (["m", "--shared-state", url], ["m", f"--shared={url}"]):
        command, env = _password_to_environment(argv, url)
        assert password not in " ".join(command) and env[PASSWORD_ENV] == password


def test_the_password_is_never_shown() -> None:
    assert redacted("redis://:hunter2@h:1/0") == "redis://:***@h:1/0"
    assert redacted("redis://node:hunter2@h/0") == "redis://node:***@h/0"
    assert redacted("redis://h/0") == "redis://h/0"
    assert "hunter2" not in redacted("redis://:hunter2@[::1/0")
    assert has_password("redis://:x@h") and not has_password("redis://node@h")
    assert without_password("redis://node:hunter2@h:1/0") == ("redis://node@h:1/0", "hunter2")


def test_a_daemon_gets_the_password_through_its_environment() -> None:
    url = "redis://:hunter2@h:1/0"
    for argv in (["m", "--shared-state", url], ["m", f"--shared-state={url}"]):
        command, env = _password_to_environment(argv, url)
        assert "hunter2" not in " ".join(command)
        assert env[PASSWORD_ENV] == "hunter2"
        assert "redis://h:1/0" in " ".join(command)
