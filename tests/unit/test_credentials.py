"""remotefs.credentials: where tokens come from, in which order, and that they never print."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from remotefs.credentials import (
    CredentialsError,
    Secret,
    genestack_credentials,
    sevenbridges_credentials,
)

CREDENTIALS = """\
[default]
api_endpoint = https://api.sbgenomics.com/v2
auth_token = default-token

[cavatica]
api_endpoint = https://cavatica-api.sbgenomics.com/v2/
auth_token = cavatica-token

[broken]
api_endpoint = https://api.sbgenomics.com/v2
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".sevenbridges").mkdir()
    (tmp_path / ".sevenbridges" / "credentials").write_text(CREDENTIALS)
    return tmp_path


SB_ENV = {"SB_AUTH_TOKEN": "env-token", "SB_API_ENDPOINT": "http://localhost:8080/v2"}


def reveal(pair: tuple[str, Secret]) -> tuple[str, str]:
    return pair[0], pair[1].reveal()


def test_sb_environment_first_without_a_profile(home) -> None:
    assert reveal(sevenbridges_credentials(None, None, SB_ENV, home)) == (
        "http://localhost:8080/v2",
        "env-token",
    )


def test_sb_default_profile_without_environment(home) -> None:
    assert reveal(sevenbridges_credentials(None, None, {}, home)) == (
        "https://api.sbgenomics.com/v2",
        "default-token",
    )


def test_sb_named_profile_wins_over_environment(home) -> None:
    # As sevenbridges.Config(profile=...): an explicit profile reads the file only.
    assert reveal(sevenbridges_credentials("cavatica", None, SB_ENV, home)) == (
        "https://cavatica-api.sbgenomics.com/v2",
        "cavatica-token",
    )


def test_sb_api_url_overrides_the_endpoint(home) -> None:
    url = "http://127.0.0.1:9/v2"
    assert sevenbridges_credentials("cavatica", url, {}, home)[0] == url
    assert sevenbridges_credentials(None, url, SB_ENV, home)[0] == url
    assert sevenbridges_credentials(None, url, {"SB_AUTH_TOKEN": "t"}, home)[0] == url


@pytest.mark.parametrize(
    ("profile", "env", "match"),
    [
        (None, {"SB_AUTH_TOKEN": "env-token"}, "SB_API_ENDPOINT is not"),
        ("nope", {}, r"no section \[nope\] in .*credentials"),
        ("broken", {}, r"\[broken\] has no auth_token"),
    ],
)
def test_sb_missing_pieces(home, profile, env, match) -> None:
    with pytest.raises(CredentialsError, match=match) as info:
        sevenbridges_credentials(profile, None, env, home)
    assert "token" not in str(info.value).replace("auth_token", "").replace("SB_AUTH_TOKEN", "")


def test_sb_nothing_anywhere_names_both_places(tmp_path) -> None:
    with pytest.raises(CredentialsError) as info:
        sevenbridges_credentials(None, None, {}, tmp_path)
    message = str(info.value)
    assert "SB_AUTH_TOKEN" in message and str(tmp_path / ".sevenbridges" / "credentials") in message
    assert "\n" not in message


def test_sb_unparseable_file_does_not_echo_its_lines(tmp_path) -> None:
    (tmp_path / ".sevenbridges").mkdir()
    (tmp_path / ".sevenbridges" / "credentials").write_text("auth_token = leaked-secret\n")
    with pytest.raises(CredentialsError) as info:
        sevenbridges_credentials(None, None, {}, tmp_path)
    assert "leaked-secret" not in str(info.value) and info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_sb_bad_endpoint(home) -> None:
    with pytest.raises(CredentialsError, match="not an http"):
        sevenbridges_credentials(None, "ftp://x?token=abc", {}, home)


# --- Genestack ------------------------------------------------------------------------------


def test_odm_token_sources_and_precedence(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n  file-token  \nsecond line\n")
    token_file.chmod(0o600)
    env = {"GENESTACK_API_TOKEN": "api-token", "GENESTACK_ACCESS_TOKEN": "oauth-token"}
    host, token, bearer = genestack_credentials("https://odm.example.org/", token_file, env)
    assert (host, token.reveal(), bearer) == ("https://odm.example.org", "file-token", False)
    _, token, bearer = genestack_credentials("https://odm.example.org", None, env)
    assert (token.reveal(), bearer) == ("api-token", False)  # the token header wins (as A26)
    _, token, bearer = genestack_credentials(
        "https://odm.example.org", None, {"GENESTACK_ACCESS_TOKEN": "oauth-token"}
    )
    assert (token.reveal(), bearer) == ("oauth-token", True)


def test_odm_host(tmp_path) -> None:
    env = {"GENESTACK_API_TOKEN": "t", "ODM_URL": "https://from-env.example.org"}
    assert genestack_credentials(None, None, env)[0] == "https://from-env.example.org"
    pasted = "https://odm.example.org/api/v1/as-user/files"
    assert genestack_credentials(pasted, None, env)[0] == "https://odm.example.org"
    with pytest.raises(CredentialsError, match="no Genestack host"):
        genestack_credentials(None, None, {"GENESTACK_API_TOKEN": "t"})


def test_odm_missing_token(tmp_path) -> None:
    with pytest.raises(CredentialsError, match="GENESTACK_API_TOKEN") as info:
        genestack_credentials("https://odm.example.org", None, {})
    assert "--token-file" in str(info.value)
    empty = tmp_path / "empty"
    empty.write_text("\n \n")
    with pytest.raises(CredentialsError, match="empty"):
        genestack_credentials("https://odm.example.org", empty, {})
    with pytest.raises(CredentialsError, match="cannot read"):
        genestack_credentials("https://odm.example.org", tmp_path / "missing", {})


def test_odm_world_readable_token_file_warns(tmp_path, caplog) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="remotefs.credentials"):
        genestack_credentials("https://odm.example.org", token_file, {})
    assert "readable by other users" in caplog.text and "file-token" not in caplog.text


# --- Secret ---------------------------------------------------------------------------------


def test_secret_never_prints(caplog) -> None:
    secret = Secret("s3cr3t")
    assert repr(secret) == str(secret) == f"{secret}" == f"{secret!r}" == "***"
    assert "s3cr3t" not in repr({"token": secret})
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("token %s %r", secret, secret)
    assert "token *** ***" in caplog.text and "s3cr3t" not in caplog.text
    assert secret.reveal() == "s3cr3t"
    assert secret == Secret("s3cr3t") and secret != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_sb_token_file_with_the_endpoint_from_the_environment_or_the_url(tmp_path) -> None:
    token_file = tmp_path / "sb.token"
    token_file.write_text("file-token\n")
    token_file.chmod(0o600)
    env = {"SB_API_ENDPOINT": "https://api.example.org/v2", "SB_AUTH_TOKEN": "env-token"}
    endpoint, token = sevenbridges_credentials(None, None, env, tmp_path, token_file=token_file)
    assert (endpoint, token.reveal()) == ("https://api.example.org/v2", "file-token")
    endpoint, _ = sevenbridges_credentials(
        None, "https://cavatica-api.example.org/v2", {}, tmp_path, token_file=token_file
    )
    assert endpoint == "https://cavatica-api.example.org/v2"
    with pytest.raises(CredentialsError, match="needs the API endpoint"):
        sevenbridges_credentials(None, None, {}, tmp_path, token_file=token_file)
    with pytest.raises(CredentialsError, match="not both"):
        sevenbridges_credentials("p", None, env, tmp_path, token_file=token_file)


def test_sb_missing_credentials_messages_read_as_sentences(tmp_path) -> None:
    with pytest.raises(CredentialsError) as info:
        sevenbridges_credentials("nope", None, {}, tmp_path)
    assert "found no section [nope] in" in str(info.value)
    with pytest.raises(CredentialsError) as info:
        sevenbridges_credentials(None, None, {}, tmp_path)
    assert "found neither SB_AUTH_TOKEN in the environment nor section [default] of" in str(
        info.value
    )
