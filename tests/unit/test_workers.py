"""remotefs.workers: calls in kept threads, at most ``limit`` at once, prompt cancellation."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import trio
import trio.testing

from remotefs.workers import Workers

WAIT = 5.0


async def test_values_and_exceptions_come_back_from_the_thread() -> None:
    workers = Workers(2)
    try:
        assert await workers.run(threading.get_ident, lambda: None) != threading.get_ident()

        def fails() -> None:
            raise ValueError("from the thread")

        with pytest.raises(ValueError, match="from the thread"):
            await workers.run(fails, lambda: None)
    finally:
        workers.close()


async def test_at_most_limit_calls_run_at_once_in_at_most_limit_threads() -> None:
    workers = Workers(2)
    running, most, idents = 0, 0, set()
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            idents.add(threading.get_ident())
        threading.Event().wait(0.01)
        with lock:
            running -= 1

    try:
        for _ in range(3):  # rounds apart: the threads of the first serve the others
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(workers.run, call, lambda: None)
        assert most == 2
        assert len(idents) == workers.threads == 2
    finally:
        workers.close()


async def test_a_cancelled_caller_leaves_at_once_and_its_place_is_held_until_the_thread_ends() -> (
    None
):
    workers = Workers(1)
    release, aborted = threading.Event(), threading.Event()
    try:
        with trio.fail_after(WAIT):
            with trio.move_on_after(0.1) as scope:
                await workers.run(lambda: release.wait(WAIT) and "late", aborted.set)
            assert scope.cancelled_caught and aborted.is_set()
            # The abandoned call still runs: the one place is not free until it ends.
            with trio.move_on_after(0.1) as waiting:
                await workers.run(lambda: "second", lambda: None)
            assert waiting.cancelled_caught
            release.set()
            assert await workers.run(lambda: "third", lambda: None) == "third"
    finally:
        release.set()
        workers.close()


async def test_a_caller_cancelled_before_its_place_never_runs_its_call() -> None:
    workers = Workers(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(workers.run, lambda: release.wait(WAIT), lambda: None)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05):
                await workers.run(lambda: ran.append("queued"), lambda: None)
            release.set()
        assert await workers.run(lambda: "after", lambda: None) == "after"
        assert ran == []
    finally:
        release.set()
        workers.close()


async def test_close_ends_every_thread() -> None:
    workers = Workers(4)
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(workers.run, lambda: threading.Event().wait(0.01), lambda: None)
    assert workers.threads >= 1
    workers.close()
    with trio.fail_after(WAIT):
        while workers.threads:
            await trio.sleep(0.01)
    with pytest.raises(RuntimeError, match="closed"):
        await workers.run(lambda: None, lambda: None)


async def test_prestarted_threads_serve_the_first_calls() -> None:
    workers = Workers(4)
    try:
        workers.prestart(3)
        assert workers.threads == 3
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(workers.run, lambda: threading.Event().wait(0.01), lambda: None)
        assert workers.threads == 3  # none started for them
        workers.prestart(10)
        assert workers.threads == 4  # never more than the limit
    finally:
        workers.close()


async def test_an_idle_thread_keeps_nothing_of_its_last_call() -> None:
    # A body returned by a call must die with its caller's last reference, not live on in
    # the thread that read it while that thread waits for the next call.
    class Body:
        pass

    workers = Workers(1)
    try:
        body = await workers.run(Body, lambda: None)
        gone = weakref.ref(body)
        del body
        with trio.fail_after(WAIT):  # the thread lets go once it is back waiting
            while gone() is not None:
                gc.collect()
                await trio.sleep(0.01)
    finally:
        workers.close()
