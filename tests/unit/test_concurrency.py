"""The single-flight rule (remotefs.concurrency): a waiter never inherits another task's
cancellation or deadline; only real outcomes are shared.

Interleavings are driven by ``trio.testing.wait_all_tasks_blocked`` (every task has reached
its next wait) and deadlines by trio's ``MockClock`` (time jumps when all tasks block): no
sleep synchronises anything.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from remotefs.concurrency import (
    ABANDONED,
    Flight,
    RecentFailures,
    SingleFlight,
    gather_limited,
)
from remotefs.errors import AccessDenied, DeadlineExceeded, NotFound, Transient


class Work:
    """A fetch that blocks until released; records who ran it and how it ended."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []
        self.release = trio.Event()
        self.outcome: object = "value"

    def by(self, who: str):
        async def run() -> object:
            self.started.append(who)
            try:
                await self.release.wait()
            except BaseException as exc:
                self.ended.append(f"{who}: {type(exc).__name__}")
                raise
            if isinstance(self.outcome, BaseException):
                self.ended.append(f"{who}: raised")
                raise self.outcome
            self.ended.append(f"{who}: returned")
            return self.outcome

        return run


async def _caller(
    flights: SingleFlight[str, object],
    work: Work,
    who: str,
    results: dict[str, object],
    timeout: float | None = None,
) -> None:
    try:
        if timeout is None:
            results[who] = await flights.run("k", work.by(who))
        else:
            with trio.fail_after(timeout):
                results[who] = await flights.run("k", work.by(who))
    except trio.TooSlowError:
        results[who] = "own deadline"
    except Exception as exc:
        results[who] = exc


async def test_leader_success_is_shared() -> None:
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}
    async with trio.open_nursery() as nursery:
        for who in ("a", "b", "c"):
            nursery.start_soon(_caller, flights, work, who, results)
            await trio.testing.wait_all_tasks_blocked()
        work.release.set()
    assert work.started == ["a"]  # one fetch
    assert results == {"a": "value", "b": "value", "c": "value"}
    assert not flights.running("k")


async def test_leader_error_is_shared_as_a_fresh_copy_per_waiter() -> None:
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}
    work.outcome = AccessDenied("no access to f1")
    async with trio.open_nursery() as nursery:
        for who in ("a", "b", "c"):
            nursery.start_soon(_caller, flights, work, who, results)
            await trio.testing.wait_all_tasks_blocked()
        work.release.set()
    assert work.started == ["a"]  # the platform's answer is not asked for again
    errors = [results[w] for w in ("a", "b", "c")]
    assert all(isinstance(e, AccessDenied) and str(e) == "no access to f1" for e in errors)
    assert errors[0] is work.outcome
    assert errors[1] is not errors[0] and errors[2] is not errors[1]  # one object per task
    assert errors[1].__cause__ is work.outcome


async def test_leader_cancelled_a_waiter_takes_over() -> None:
    """The case that ended the mount: the leader's cancellation must not reach a waiter."""
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}
    async with trio.open_nursery() as nursery:
        leader_scope = trio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await _caller(flights, work, "a", results)

        nursery.start_soon(leader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_caller, flights, work, "b", results)
        nursery.start_soon(_caller, flights, work, "c", results)
        await trio.testing.wait_all_tasks_blocked()
        leader_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert work.ended == ["a: Cancelled"]
        assert work.started[0] == "a"
        assert work.started[1:] in (["b"], ["c"])  # one waiter leads a new flight
        work.release.set()
    assert results == {"b": "value", "c": "value"}  # a was cancelled: no result, no error


async def test_leader_timed_out_a_waiter_with_time_left_takes_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader whose deadline came first (its own DeadlineExceeded, or its own scope):
    the waiter with time left leads; the one without gets its own deadline."""
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}

    async def leader_with_deadline_error() -> None:
        async def fetch() -> object:
            work.started.append("a")
            with trio.move_on_after(4):
                await work.release.wait()
                return "value"
            raise DeadlineExceeded("GET /files: no answer before the operation's deadline")

        try:
            results["a"] = await flights.run("k", fetch)
        except Exception as exc:
            results["a"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader_with_deadline_error)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        nursery.start_soon(_caller, flights, work, "short", results, 3.0)  # ends before a
        nursery.start_soon(_caller, flights, work, "long", results, 100.0)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        # Time runs: "short" meets its own deadline at 3 s, "a" its own at 4 s; then "long"
        # leads, and completes when released.
        while "a" not in results:
            await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        assert work.started == ["a", "long"]
        work.release.set()
    assert results["short"] == "own deadline"
    assert isinstance(results["a"], DeadlineExceeded)  # a's own outcome, shared with no one
    assert results["long"] == "value"


async def test_waiter_timed_out_gets_its_own_deadline_and_the_flight_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_caller, flights, work, "a", results)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        nursery.start_soon(_caller, flights, work, "b", results, 2.0)
        nursery.start_soon(_caller, flights, work, "c", results)
        while "b" not in results:
            await trio.sleep(1)
        assert results == {"b": "own deadline"}
        assert work.ended == []  # the leader's fetch was not touched
        work.release.set()
    assert results == {"b": "own deadline", "a": "value", "c": "value"}
    assert work.started == ["a"]


async def _leader_then_waiter(outcome: object) -> tuple[Work, dict[str, object]]:
    """``a`` leads, ``b`` waits for it, then the work ends with ``outcome``."""
    flights: SingleFlight[str, object] = SingleFlight()
    work, results = Work(), {}
    work.outcome = outcome
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_caller, flights, work, "a", results)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_caller, flights, work, "b", results)
        await trio.testing.wait_all_tasks_blocked()
        work.release.set()
    return work, results


async def test_an_unexpected_error_is_not_shared() -> None:
    """A bug in the leader's work is the leader's to report; waiters try for themselves."""
    work, results = await _leader_then_waiter(KeyError("bug"))
    assert isinstance(results["a"], KeyError) and isinstance(results["b"], KeyError)
    assert work.started == ["a", "b"]


async def test_a_flight_whose_leader_is_cancelled_lands_abandoned() -> None:
    flight: Flight[int] = Flight()
    outcome: list[object] = []
    leader_scope = trio.CancelScope()

    async def waiter() -> None:
        outcome.append(await flight.wait())

    async def never() -> int:
        await trio.sleep_forever()
        raise AssertionError

    async def leader() -> None:
        with leader_scope:
            await flight.lead(never)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(leader)
        await trio.testing.wait_all_tasks_blocked()
        leader_scope.cancel()
    assert outcome == [ABANDONED]
    assert flight.landed
    with pytest.raises(RuntimeError):
        await flight.lead(never)


async def test_gather_limited_raises_the_first_error_as_itself() -> None:
    async def ok(i: int) -> int:
        await trio.sleep(0)
        return i

    async def fail() -> int:
        raise NotFound("gone")

    assert await gather_limited([lambda i=i: ok(i) for i in range(5)], 2) == [0, 1, 2, 3, 4]
    with pytest.raises(NotFound):
        await gather_limited([lambda: ok(1), fail, lambda: ok(2)], 3)


async def test_gather_limited_passes_the_callers_own_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow() -> int:
        await trio.sleep(100)
        return 1

    with trio.move_on_after(5) as scope:
        await gather_limited([slow, slow, slow], 2)
    assert scope.cancelled_caught  # the caller's own scope caught its cancellation
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(5):
            await gather_limited([slow, slow], 2)


async def test_transient_failure_is_shared() -> None:
    """Retries exhausted is the platform's answer: waiters get it, not a second round."""
    work, results = await _leader_then_waiter(Transient("gave up after 10 attempts"))
    assert work.started == ["a"]
    assert isinstance(results["b"], Transient) and not isinstance(results["b"], DeadlineExceeded)


async def test_recent_failures_answer_a_moment_old_failure_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures: RecentFailures[str] = RecentFailures(window=0.25)
    failures.check("f")  # nothing noted: nothing raised
    failures.note("f", NotFound("gone"))  # an answer, not a lack of time: not remembered
    failures.check("f")
    opened = trio.current_time()
    await trio.sleep(1)
    failures.note("f", DeadlineExceeded("GET /x: no complete answer"))
    with pytest.raises(Transient, match="no complete answer.*just failed") as info:
        failures.check("f", since=opened)  # a caller from before the failure
    assert isinstance(info.value.__cause__, DeadlineExceeded)
    failures.check("f", since=trio.current_time())  # one that came after: tries again
    failures.check("g", since=opened)  # another key
    await trio.sleep(0.25)
    failures.check("f", since=opened)  # the window has passed
