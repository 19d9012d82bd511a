"""SharedState against a real Redis: sealing, per-user keys, single-flight across instances
(leader cancelled, holder dead, garbage leases), garbage values, the shared budget, and a
store that is down, refuses, vanishes and comes back."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from remotefs.credentials import Secret
from remotefs.redis_url import SharedStateError
from remotefs.shared import ESTIMATE_GRANT, LEASE_SECONDS, SharedState
from tests.support.redis import Redis, free_port

ENDPOINT = "http://127.0.0.1:1/v2"
WAIT = 10.0
"""Bound on any condition a test waits for."""


def state(url: str, token: str = "token-a", **kwargs: object) -> SharedState:
    return SharedState(url, endpoint=ENDPOINT, derive_key=Secret(token).derive_key, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def joined(url: str, token: str = "token-a") -> AsyncIterator[SharedState]:
    shared = state(url, token)
    await shared.check()
    async with trio.open_nursery() as nursery:
        await nursery.start(shared.run)
        try:
            yield shared
        finally:
            nursery.cancel_scope.cancel()


def text_value(value: str) -> dict[str, Callable[..., object]]:
    return {
        "encode": lambda v: json.dumps(v).encode(),
        "decode": lambda b: _string(json.loads(b)),
        "ttl": lambda v: 60.0,
    }


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


class Computations:
    """A ``compute`` that counts its calls and answers after ``delay``."""

    def __init__(self, value: str, delay: float = 0.0) -> None:
        self.value, self.delay, self.calls = value, delay, 0

    async def __call__(self) -> str:
        self.calls += 1
        await trio.sleep(self.delay)
        return self.value


async def fetch(shared: SharedState, name: str, compute: Callable[[], object]) -> str:
    return await shared.fetch("url", name, compute, **text_value(name))  # type: ignore[arg-type]


async def test_values_are_sealed_and_keys_say_nothing(redis: Redis) -> None:
    secret_url = "https://storage.example/file-7?X-Amz-Signature=s3cr3t"
    async with joined(redis.url, "token-a") as a:
        assert await fetch(a, "file-7", Computations(secret_url)) == secret_url
    stored = redis.dump()
    assert stored, "a value was stored"
    for key, value in stored.items():
        assert key.startswith("remotefs:v1:")
        for plain in (b"file-7", b"s3cr3t", b"storage.example", b"token-a"):
            assert plain not in key.encode() and plain not in value


async def test_two_users_never_read_each_other(redis: Redis) -> None:
    async with joined(redis.url, "token-a") as a, joined(redis.url, "token-b") as b:
        await fetch(a, "file-1", Computations("url-of-a"))
        theirs = Computations("url-of-b")
        assert await fetch(b, "file-1", theirs) == "url-of-b"
        assert theirs.calls == 1, "b never sees a's value"
        assert a._prefix != b._prefix
        keys = redis.all_keys()
        assert all(k.startswith((a._prefix, b._prefix)) for k in keys)
        # a's sealed value, copied under b's key, fails b's check: dropped, never served
        [a_value] = [k for k in keys if k.startswith(a._prefix) and ":url:" in k]
        [b_value] = [k for k in keys if k.startswith(b._prefix) and ":url:" in k]
        redis.set(b_value, redis.get(a_value))
        again = Computations("url-of-b, again")
        assert await fetch(b, "file-1", again) == "url-of-b, again"
        assert again.calls == 1 and b.stats["rejected"] == 1
        # and a value moved to another of a's own keys fails too (the key is authenticated)
        redis.set(a._key("url", "file-2"), redis.get(a_value))
        moved = Computations("url of file-2")
        assert await fetch(a, "file-2", moved) == "url of file-2"
        assert moved.calls == 1


async def test_one_node_computes_for_all(redis: Redis) -> None:
    async with (
        joined(redis.url) as a,
        joined(redis.url) as b,
        joined(redis.url) as c,
        joined(redis.url) as d,
    ):
        compute = Computations("the answer", delay=0.3)
        answers: list[str] = []

        async def one(shared: SharedState) -> None:
            answers.append(await fetch(shared, "cold-file", compute))

        async with trio.open_nursery() as nursery:
            for shared in (a, b, c, d, a, b):
                nursery.start_soon(one, shared)
        assert answers == ["the answer"] * 6
        assert compute.calls == 1
        # a value already there is served without asking anyone
        assert await fetch(d, "cold-file", compute) == "the answer" and compute.calls == 1


async def test_a_cancelled_leader_hands_over_and_its_waiter_is_not_cancelled(
    redis: Redis,
) -> None:
    async with joined(redis.url) as leader, joined(redis.url) as waiter:
        started = trio.Event()

        async def stuck() -> str:
            started.set()
            await trio.sleep_forever()
            raise AssertionError

        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()

            async def lead() -> None:
                with leader_scope:
                    await fetch(leader, "file-9", stuck)

            nursery.start_soon(lead)
            await started.wait()
            result: list[str] = []
            began = trio.current_time()

            async def wait() -> None:
                result.append(await fetch(waiter, "file-9", Computations("computed by the waiter")))

            nursery.start_soon(wait)
            await trio.sleep(0.2)  # the waiter is polling the lease (not synchronisation:
            leader_scope.cancel()  # the outcome is the same whenever the cancel lands)
        assert result == ["computed by the waiter"]
        assert leader_scope.cancelled_caught
        # the leader released its lease as it unwound: no lease-long wait
        assert trio.current_time() - began < LEASE_SECONDS


async def test_a_dead_holders_lease_delays_by_at_most_its_life(redis: Redis) -> None:
    async with joined(redis.url) as shared:
        lease = shared._key("lease", "url:file-3")
        redis.cli("SET", lease, "a-node-that-died", "PX", str(int(LEASE_SECONDS * 1000)))
        began = trio.current_time()
        with trio.fail_after(WAIT):
            assert await fetch(shared, "file-3", Computations("late")) == "late"
        assert trio.current_time() - began <= LEASE_SECONDS + 0.5


@pytest.mark.parametrize("garbage", [["SET", "forever"], ["SET", "long", "PX", "3600000"]])
async def test_a_lease_no_holder_could_have_is_dropped(redis: Redis, garbage: list[str]) -> None:
    async with joined(redis.url) as shared:
        lease = shared._key("lease", "url:file-4")
        redis.cli(garbage[0], lease, *garbage[1:])
        began = trio.current_time()
        assert await fetch(shared, "file-4", Computations("fresh")) == "fresh"
        assert trio.current_time() - began < 1.0


@pytest.mark.parametrize(
    "plant",
    [
        ["SET", b"not sealed at all"],
        ["SET", b"\x01" + b"\x00" * 40],
        ["RPUSH", b"a list where a string belongs"],
    ],
)
async def test_garbage_values_are_ignored_and_replaced(redis: Redis, plant: list[object]) -> None:
    async with joined(redis.url) as shared:
        key = shared._key("url", "file-5")
        command, value = plant
        if command == "SET":
            redis.set(key, value)  # type: ignore[arg-type]
        else:
            redis.cli(str(command), key, value.decode())  # type: ignore[union-attr]
        compute = Computations("the real one")
        assert await fetch(shared, "file-5", compute) == "the real one"
        assert compute.calls == 1 and shared.stats["rejected"] == 1
        assert await fetch(shared, "file-5", compute) == "the real one"
        assert compute.calls == 1, "the replacement is served"


async def test_a_value_that_fails_validation_is_not_served(redis: Redis) -> None:
    async with joined(redis.url) as shared:
        # sealed by the right key, but not a shape the reader accepts
        key = shared._key("url", "file-6")
        redis.set(key, shared._seal(key, b"[1, 2]"))
        compute = Computations("valid")
        assert await fetch(shared, "file-6", compute) == "valid"
        assert compute.calls == 1 and shared.stats["rejected"] == 1


async def take_many(states: list[SharedState], each: int, limit: int) -> list[float]:
    waits: list[float] = []

    async def one(shared: SharedState) -> None:
        wait = await shared.take(limit)
        assert wait is not None
        waits.append(wait)

    async with trio.open_nursery() as nursery:
        for shared in states:
            for _ in range(each):
                nursery.start_soon(one, shared)
    return waits


async def test_the_budget_never_grants_more_than_the_window_has(redis: Redis) -> None:
    async with joined(redis.url) as a, joined(redis.url) as b, joined(redis.url) as c:
        a.observe(1000, 20, time.time() + 30)
        with trio.fail_after(WAIT):
            while redis.cli("EXISTS", a._key("budget"), raw=True).strip() != b"1":
                await trio.sleep(0.01)
        waits = await take_many([a, b, c], each=12, limit=1000)
        assert sum(1 for w in waits if w == 0) == 20
        assert all(25 < w <= 33 for w in waits if w > 0), waits
        # a response that says less is left lowers the mirror; one saying more does not raise it
        b.observe(1000, 0, time.time() + 30)


async def test_before_any_header_the_budget_grants_a_cautious_estimate(redis: Redis) -> None:
    async with joined(redis.url) as a, joined(redis.url) as b:
        waits = await take_many([a, b], each=ESTIMATE_GRANT, limit=1000)
        assert sum(1 for w in waits if w == 0) == ESTIMATE_GRANT


@pytest.mark.parametrize(
    "plant",
    [
        ["SET", "budget", "nonsense"],
        ["HSET", "budget", "remaining", "5", "reset", "99999999999", "limit", "1000"],
        ["HSET", "budget", "remaining", "lots", "reset", "soon"],
        ["HSET", "budget", "remaining", "0", "reset", "nan", "limit", "1000", "est", "0"],
        ["HSET", "budget", "remaining", "5", "reset", "inf", "limit", "1000", "est", "0"],
    ],
)
async def test_a_garbage_budget_is_replaced(redis: Redis, plant: list[str]) -> None:
    async with joined(redis.url) as shared:
        command, _, *rest = plant
        redis.cli(command, shared._key("budget"), *rest)
        assert await shared.take(1000) == 0
        assert shared.budget_remaining == ESTIMATE_GRANT - 1


async def test_a_store_that_is_down_lets_the_node_go_on_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, logger="remotefs.shared")
    async with joined(closed) as shared:
        assert not shared.up
        compute = Computations("alone")
        for _ in range(3):
            assert await fetch(shared, "file-1", compute) == "alone"
        assert compute.calls == 3
        assert await shared.take(1000) is None
        assert shared.share == shared.members
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_refused_password_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    server = Redis(port=free_port(), log=tmp_path / "redis.log", password="right-one")
    server.start()
    try:
        wrong = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        with pytest.raises(SharedStateError) as refused:
            await state(wrong).check()
        assert "wrong-one" not in str(refused.value) and "refused" in str(refused.value)
        # the right password, from the environment's variable or the caller, is accepted
        async with joined(f"redis://:right-one@127.0.0.1:{server.port}/0") as shared:
            assert shared.up
    finally:
        server.stop()


async def test_the_node_rejoins_when_the_store_comes_back(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="remotefs.shared")
    async with joined(redis.url) as shared, joined(redis.url) as other:
        await fetch(other, "before", Computations("stored"))
        redis.kill()
        compute = Computations("alone")
        assert await fetch(shared, "during", compute) == "alone"
        assert await fetch(shared, "during", compute) == "alone"
        assert not shared.up and compute.calls == 2
        redis.start()
        with trio.fail_after(WAIT):
            while not shared.up:
                await trio.sleep(0.05)
        assert shared.stats["rejoins"] == 1
        await fetch(other, "after", Computations("shared again"))
        hits = shared.stats["hits"]
        assert await fetch(shared, "after", Computations("unused")) == "shared again"
        assert shared.stats["hits"] == hits + 1
    messages = [r.getMessage() for r in caplog.records if r.name == "remotefs.shared"]
    assert sum("going on alone" in m for m in messages) == 1
    assert sum("rejoined" in m for m in messages) == 1


README_ACL = "on >its-password ~remotefs:* +@read +@write +@scripting +ping +time -@dangerous"
"""The ACL user the README tells an operator to make for the mounts."""


async def test_the_readmes_acl_user_can_do_everything_a_mount_does(redis: Redis) -> None:
    redis.cli("ACL", "SETUSER", "remotefs", *README_ACL.split())
    url = f"redis://remotefs:its-password@127.0.0.1:{redis.port}/0"
    async with joined(url) as shared, joined(url) as other:
        shared.observe(1000, 500, time.time() + 60)
        assert await fetch(shared, "file-1", Computations("value")) == "value"
        assert await fetch(other, "file-1", Computations("unused")) == "value"
        assert await shared.take(1000) == 0 and shared.members == 2
        assert shared.up and other.up and shared.stats["errors"] == 0


async def test_an_acl_user_without_what_the_mount_needs_is_refused(redis: Redis) -> None:
    redis.cli("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+ping")
    with pytest.raises(SharedStateError, match="refused this mount"):
        await state(f"redis://reader:pw@127.0.0.1:{redis.port}/0").check()


async def test_large_values_are_compressed_and_their_form_is_authenticated(redis: Redis) -> None:
    listing = json.dumps([{"name": f"sample_{i:05d}.bam", "size": i} for i in range(2000)])
    async with joined(redis.url) as a, joined(redis.url) as b:
        assert await fetch(a, "folder", Computations(listing)) == listing
        key = a._key("url", "folder")
        stored = redis.get(key)
        assert stored[:1] == b"\x02" and len(stored) < len(listing) / 4
        assert await fetch(b, "folder", Computations("unused")) == listing
        redis.set(key, b"\x01" + stored[1:])  # the same bytes, said to be uncompressed
        again = Computations(listing)
        assert await fetch(b, "folder", again) == listing
        assert again.calls == 1 and b.stats["rejected"] == 1


async def test_a_planted_budget_never_grants_more_than_the_callers_limit(redis: Redis) -> None:
    async with joined(redis.url) as shared:
        window = str(time.time() + 600)
        redis.cli("HSET", shared._key("budget"), "remaining", "1000000", "reset", window)
        redis.cli("HSET", shared._key("budget"), "limit", "1000000", "est", "0")
        waits = await take_many([shared], each=30, limit=20)
        assert sum(1 for w in waits if w == 0) == 20
