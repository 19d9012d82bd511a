"""Many mounts, one budget (issue 18): real mounts sharing a real ``redis-server``.

Each test starts its own emulator (a fresh SB budget) and its own Redis on a free loopback
port, both stopped by PID; every mount is unmounted in a ``finally``. The workload is the
cohort's (tests.support.cohort); every result is compared with the same workload run on the
local tree, and requests and 429s are counted by the emulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from remotefs.shared import LEASE_SECONDS
from tests.support.cohort import (
    SPARE,
    CohortResult,
    expected_digests,
    note,
    run_cohort,
    write_cohort,
)
from tests.support.emulator import Emulator, start_emulator
from tests.support.fuse import Mount, MountFailed, is_mounted, start_mount
from tests.support.redis import Redis, free_port, redis_unavailable

PROJECT = "lab/cohort"
TOKEN, OTHER_TOKEN = "cluster-token-a", "cluster-token-b"
WAIT = 20.0
"""Bound on any condition a test waits for (rejoining, a request arriving)."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(demo_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort") / "tree", demo_tree / "bam" / "ex1.bam")


@pytest.fixture(scope="module")
def expected(cohort: Path) -> CohortResult:
    result = run_cohort(cohort)
    assert result.digests == expected_digests(cohort)
    return result


@contextmanager
def emulator(
    cohort: Path, tmp_path: Path, limit: int = 1000, window: float = 300
) -> Iterator[Emulator]:
    args = ["--data", str(cohort), "--project", PROJECT]
    args += ["--rate-limit", str(limit), "--rate-window", str(window)]
    emu = start_emulator(args, tmp_path / "emulator.log", (TOKEN, OTHER_TOKEN))
    try:
        yield emu
    finally:
        emu.stop()


def mount_sb(
    emu: Emulator,
    base: Path,
    name: str,
    *extra: str,
    token: str = TOKEN,
    env: dict[str, str] | None = None,
) -> Mount:
    args = ["--platform", "sevenbridges", "--project", PROJECT, "--api-url", f"{emu.url}/v2"]
    args += ["--cache-dir", str(base / f"{name}-cache"), *extra]
    env = {"SB_AUTH_TOKEN": token, **(env or {})}
    return start_mount(base / name, args, env, base / f"{name}.log")


@contextmanager
def cluster(
    emu: Emulator, base: Path, count: int, *extra: str, env: dict[str, str] | None = None
) -> Iterator[list[Mount]]:
    """``count`` mounts, started together, all unmounted (cleanly) on the way out."""
    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(mount_sb, emu, base, f"n{i}", *extra, env=env) for i in range(count)]
        mounts = []
        for future in futures:
            try:
                mount = future.result()
            except MountFailed:
                continue  # raised again below, once the others are in the stack
            stack.callback(mount.cleanup)
            stack.callback(mount.close)
            mounts.append(mount)
        assert len(mounts) == count, [f.exception() for f in futures]
        yield mounts


def everywhere(mounts: list[Mount]) -> list[CohortResult]:
    with ThreadPoolExecutor(len(mounts)) as pool:
        return list(pool.map(lambda m: run_cohort(m.path), mounts))


def api_requests(emu: Emulator) -> int:
    requests = emu.stats()["requests"]
    return sum(
        n for route, n in requests.items() if route.startswith("sb.") and route != "sb.storage"
    )


def refusals(emu: Emulator) -> int:
    return sum(n for status, n in emu.stats()["statuses"].items() if status.endswith(" 429"))


def status(mount: Mount) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "remotefs", "status", "--json", str(mount.path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    shared: dict[str, Any] = json.loads(done.stdout)["shared_state"]
    return shared


def wait_until_joined(mount: Mount) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while not (shared := status(mount))["up"]:
        assert time.monotonic() < deadline, f"not rejoined in {WAIT} s: {shared}"
        time.sleep(0.1)
    return shared


def log_lines(mount: Mount, text: str) -> list[str]:
    return [line for line in mount.log.read_text().splitlines() if text in line]


def test_eight_mounts_spend_what_one_does(
    cohort: Path, expected: CohortResult, redis: Redis, tmp_path: Path
) -> None:
    with emulator(cohort, tmp_path, limit=100, window=30) as emu:
        with cluster(emu, tmp_path / "alone", 1) as [one]:
            assert run_cohort(one.path) == expected
        alone = api_requests(emu)
        emu.reset()
        with cluster(emu, tmp_path / "shared", 8, "--shared-state", redis.url) as mounts:
            assert everywhere(mounts) == [expected] * 8
            shared = api_requests(emu)
            assert refusals(emu) == 0
            assert shared <= 1.25 * alone, (shared, alone)
            print(f"API requests: one mount {alone}, eight sharing {shared}")
            hits = [status(m)["hits"] for m in mounts]
            assert sum(hits) > 0
            # each counts the members it heard of when it last beat: the last to join, all
            assert max(status(m)["members"] for m in mounts) == 8


def test_the_cluster_never_spends_more_than_the_budget(
    cohort: Path, expected: CohortResult, redis: Redis, tmp_path: Path
) -> None:
    # fewer requests per window than the cohort needs: the mounts wait for the window's
    # reset together instead of meeting 429s
    with (
        emulator(cohort, tmp_path, limit=20, window=6) as emu,
        cluster(emu, tmp_path, 4, "--shared-state", redis.url) as mounts,
    ):
        assert everywhere(mounts) == [expected] * 4
        assert api_requests(emu) > 20, "the workload needed more than one window"
        assert refusals(emu) == 0
        assert sum(status(m)["budget_waits"] for m in mounts) > 0


def test_redis_dies_mid_workload_and_comes_back(
    cohort: Path, expected: CohortResult, redis: Redis, tmp_path: Path
) -> None:
    # alone, each keeps to a third of what the window has left when Redis dies
    with (
        emulator(cohort, tmp_path, limit=300, window=30) as emu,
        cluster(emu, tmp_path, 3, "--shared-state", redis.url) as mounts,
    ):
        for m in mounts:  # the listings, shared
            subprocess.run(["ls", "-lR", str(m.path)], check=True, capture_output=True)
        redis.kill()
        assert everywhere(mounts) == [expected] * 3
        assert refusals(emu) == 0
        for m in mounts:
            assert len(log_lines(m, "cannot be used")) == 1, m.log.read_text()
            assert m.proc.poll() is None
        redis.start()  # the same port, empty
        before = [wait_until_joined(m) for m in mounts]
        first, second, third = mounts
        # the first to read a cold file asks the API, and the others are served
        (first.path / SPARE).read_bytes()
        for m in (second, third):
            assert (m.path / SPARE).read_bytes() == (cohort / SPARE).read_bytes()
        after = [status(m) for m in mounts]
        assert after[1]["hits"] > before[1]["hits"] and after[2]["hits"] > before[2]["hits"]
        for m in mounts:
            assert len(log_lines(m, "rejoined")) == 1, m.log.read_text()


def test_two_users_on_one_store_see_nothing_of_each_other(
    cohort: Path, redis: Redis, tmp_path: Path
) -> None:
    with emulator(cohort, tmp_path) as emu:
        a = mount_sb(emu, tmp_path, "a", "--shared-state", redis.url)
        try:
            b = mount_sb(emu, tmp_path, "b", "--shared-state", redis.url, token=OTHER_TOKEN)
            try:
                for m in (a, b):
                    subprocess.run(["ls", "-lR", str(m.path)], check=True, capture_output=True)
                    subprocess.run(
                        ["md5sum", note(1), note(2)], cwd=m.path, check=True, capture_output=True
                    )
                assert status(b)["hits"] == 0, "b was served nothing of a's"
                stored = redis.dump()
            finally:
                b.close()
        finally:
            a.close()
    users = {key.split(":")[3] for key in stored}
    assert len(users) == 2
    files = [p.name for p in cohort.rglob("*")]
    for key, value in stored.items():
        for secret in (TOKEN, OTHER_TOKEN, "127.0.0.1", "X-Amz", "samples", *files):
            assert secret.encode() not in key.encode() and secret.encode() not in value, key
    a_values = {k: v for k, v in stored.items() if ":url:" in k}
    assert len(a_values) == 4, "two signed URLs for each user, sealed"


def test_a_node_killed_holding_a_lease_delays_the_others_by_at_most_the_lease(
    cohort: Path, redis: Redis, tmp_path: Path
) -> None:
    latency = 1.0
    with emulator(cohort, tmp_path) as emu:
        survivor = mount_sb(emu, tmp_path, "survivor", "--shared-state", redis.url)
        try:
            doomed = mount_sb(emu, tmp_path, "doomed", "--shared-state", redis.url)
            try:
                for m in (doomed, survivor):
                    subprocess.run(["ls", "-lR", str(m.path)], check=True, capture_output=True)
                emu.configure(latency_ms=latency * 1000)
                arrived = emu.stats()["arrived"]
                reader = subprocess.Popen(
                    ["cat", str(doomed.path / note(3))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    deadline = time.monotonic() + WAIT
                    while emu.stats()["arrived"] == arrived:  # its download_info is at the API
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                    os.kill(doomed.pid, signal.SIGKILL)
                    began = time.monotonic()
                    data = (survivor.path / note(3)).read_bytes()
                    took = time.monotonic() - began
                finally:
                    reader.kill()
                    reader.wait()
            finally:
                doomed.cleanup()  # its dead mount, lazily unmounted
            assert data == (cohort / note(3)).read_bytes()
            # the lease, then its own download_info and the bytes, each behind the latency
            assert latency * 2 <= took <= LEASE_SECONDS + 2 * latency + 1.5, took
            assert survivor.proc.poll() is None
        finally:
            survivor.close()


def test_garbage_in_the_store_is_ignored_and_replaced(
    cohort: Path, expected: CohortResult, redis: Redis, tmp_path: Path
) -> None:
    with emulator(cohort, tmp_path, limit=100, window=30) as emu:
        with cluster(emu, tmp_path / "first", 1, "--shared-state", redis.url) as [first]:
            assert run_cohort(first.path) == expected
        for key in redis.all_keys():  # every value, the budget and the membership
            redis.cli("DEL", key)
            if key.endswith((":budget", ":members")):
                redis.cli("HSET", key, "remaining", "999999", "reset", "99999999999")
            else:
                redis.set(key, b"\x01" + os.urandom(64))
        with cluster(emu, tmp_path / "second", 1, "--shared-state", redis.url) as [second]:
            assert run_cohort(second.path) == expected
            seen = status(second)
            assert seen["rejected"] > 0 and seen["hits"] == 0 and seen["up"]
        assert refusals(emu) == 0
        with cluster(emu, tmp_path / "third", 1, "--shared-state", redis.url) as [third]:
            assert run_cohort(third.path) == expected
            assert status(third)["rejected"] == 0 and status(third)["hits"] > 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:notaport/0", "--shared-state"),
        ("http://127.0.0.1:6379/0", "expected redis://HOST"),
    ],
)
def test_a_malformed_url_is_a_one_line_error(
    cohort: Path, tmp_path: Path, url: str, message: str
) -> None:
    with emulator(cohort, tmp_path) as emu:
        with pytest.raises(MountFailed) as failed:
            mount_sb(emu, tmp_path, "m", "--shared-state", url)
        assert message in failed.value.reason and "\n" not in failed.value.reason
        assert not is_mounted(tmp_path / "m")
        assert emu.stats()["arrived"] == 0


def test_a_refused_password_is_a_one_line_error_that_does_not_show_it(
    cohort: Path, tmp_path: Path
) -> None:
    if reason := redis_unavailable():
        pytest.skip(reason)
    server = Redis(port=free_port(), log=tmp_path / "redis.log", password="the-right-one")
    server.start()
    try:
        with emulator(cohort, tmp_path) as emu:
            (tmp_path / "pass").write_text("not-the-password\n")
            with pytest.raises(MountFailed) as failed:
                mount_sb(
                    emu,
                    tmp_path,
                    "m",
                    "--shared-state",
                    f"redis://127.0.0.1:{server.port}/0",
                    "--shared-state-password-file",
                    str(tmp_path / "pass"),
                )
            assert "refused" in failed.value.reason and "\n" not in failed.value.reason
            assert "not-the-password" not in (tmp_path / "m.log").read_text()
            assert not is_mounted(tmp_path / "m")
            with cluster(  # the right one, from the environment's variable, is accepted
                emu,
                tmp_path / "right",
                1,
                "--shared-state",
                f"redis://127.0.0.1:{server.port}/0",
                env={"REMOTEFS_REDIS_PASSWORD": "the-right-one"},
            ) as [m]:
                assert status(m)["up"]
    finally:
        server.stop()


def test_a_store_down_at_mount_time_is_joined_when_it_comes_up(
    cohort: Path, tmp_path: Path
) -> None:
    if reason := redis_unavailable():
        pytest.skip(reason)
    server = Redis(port=free_port(), log=tmp_path / "redis.log")
    with (
        emulator(cohort, tmp_path) as emu,
        cluster(emu, tmp_path, 1, "--shared-state", server.url) as [m],
    ):
        assert len(log_lines(m, "this mount starts alone")) == 1
        assert (m.path / note(2)).read_bytes() == (cohort / note(2)).read_bytes()
        assert not status(m)["up"]
        server.start()
        try:
            assert wait_until_joined(m)["rejoins"] == 1
            assert len(log_lines(m, "cannot be used")) == 1
        finally:
            server.stop()
