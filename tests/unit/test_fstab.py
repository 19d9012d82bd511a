"""fstab lines and helper command lines into ``remotefs mount`` arguments (remotefs.fstab)."""

from __future__ import annotations

import pytest

from remotefs.fstab import EXIT_MOUNT_FAILED, EXIT_USAGE, FstabError, mount_arguments, run_helper


def test_the_issues_example_and_the_genestack_one() -> None:
    options = "profile=cavatica,cache_size=50G,_netdev,x-systemd.automount"
    assert mount_arguments("sevenbridges:my-lab/my-project", "/mnt/cavatica", options) == [
        "/mnt/cavatica",
        "--platform",
        "sevenbridges",
        "--project",
        "my-lab/my-project",
        "--profile",
        "cavatica",
        "--cache-size",
        "50G",
    ]
    assert mount_arguments(
        "genestack:https://odm.example.org",
        "/mnt/odm",
        "token_file=/etc/odm.token,ttl=120,timeout=60,allow_other,defaults,nofail,ro",
    ) == [
        "/mnt/odm",
        "--platform",
        "genestack",
        "--api-url",
        "https://odm.example.org",
        "--token-file",
        "/etc/odm.token",
        "--ttl",
        "120",
        "--timeout",
        "60",
        "--allow-other",
    ]
    assert mount_arguments("sevenbridges:", "/m", "") == ["/m", "--platform", "sevenbridges"]


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("dropbox:x", "", "expected sevenbridges:OWNER/PROJECT"),
        ("sevenbridges", "", "expected sevenbridges:OWNER/PROJECT"),
        ("sevenbridges:lab", "", "OWNER/PROJECT"),
        ("genestack:", "", "name the ODM host"),
        ("sevenbridges:a/b", "cache-size=1G", "unknown option 'cache-size=1G'"),
        ("sevenbridges:a/b", "bogus", "unknown option 'bogus'"),
        ("sevenbridges:a/b", "token=s3cret", "tokens never go in mount options"),
        ("sevenbridges:a/b", "allow_other=1", "unknown option 'allow_other=1'"),
        ("sevenbridges:a/b", "shared_state=redis://:s3cret@h/0", "password never goes"),
    ],
)
def test_mistakes_are_one_line_errors(source: str, options: str, message: str) -> None:
    with pytest.raises(FstabError, match=message) as info:
        mount_arguments(source, "/m", options)
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


def test_shared_state_options() -> None:
    options = "shared_state=rediss://node@redis.lab:6380/2,shared_state_ca=/etc/ca.pem,"
    options += "shared_state_password_file=/etc/remotefs/redis.pass"
    assert mount_arguments("sevenbridges:a/b", "/m", options)[-6:] == [
        "--shared-state",
        "rediss://node@redis.lab:6380/2",
        "--shared-state-ca",
        "/etc/ca.pem",
        "--shared-state-password-file",
        "/etc/remotefs/redis.pass",
    ]


def test_sloppy_ignores_unknown_options() -> None:
    assert mount_arguments("sevenbridges:a/b", "/m", "bogus", sloppy=True)[-1] == "a/b"


def test_the_helper_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []

    def mount(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    argv = ["sevenbridges:a/b", "/mnt/x", "-n", "-o", "profile=p,_netdev", "-t", "fuse.remotefs"]
    assert run_helper(argv, mount, "mount.remotefs") == 0
    assert calls == [["mount", "/mnt/x", "--platform", "sevenbridges", "--project", "a/b",
                      "--profile", "p"]]  # fmt: skip
    assert run_helper(["sevenbridges:a/b", "/m", "-f"], mount, "mount.remotefs") == 0
    assert len(calls) == 1  # -f: a fake mount mounts nothing
    assert run_helper(["sevenbridges:a/b", "/m"], lambda argv: 2, "x") == EXIT_MOUNT_FAILED
    assert run_helper(["only-one"], mount, "mount.remotefs") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("mount.remotefs: error: usage:") and err.count("\n") == 1
