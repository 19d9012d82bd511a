"""The transport's worker threads: started as exchanges need them, then kept for good.

Why not ``trio.to_thread``: trio's thread cache lets a worker go after 10 s idle, so the
first requests after any pause (every tool run on a mount that sat idle for a while, every
cold mount) start their OS threads on the trio thread, and ``Thread.start`` waits there until
the new thread has been scheduled. py-spy of a cold region query over TLS (6 runs) put 14% of
the trio thread's samples in ``start_thread_soon``. Here a thread that finished its exchange
waits for the next one for the mount's life; there are never more than ``limit`` of them, and
hand-offs skip ``to_thread``'s per-call machinery (a context copy, a placeholder thread
name, a ``run_sync_soon`` wrapper chain).

Invariants:

- **At most ``limit`` calls run at once**: a place in the limiter is taken before a call is
  queued and given back when its thread has finished it, also when its caller was cancelled
  and left it running (an abandoned exchange ends soon: ``abort`` shut its socket down).
- **Never more than ``limit`` threads**: a call is handed to a thread reserved for it, idle or
  new; a thread marks itself idle before it reports, so the place it frees is never given to
  a call that would start another thread.
- **Cancellation**: a caller cancelled while its call runs gets ``Cancelled`` at once, after
  ``abort()`` was called; the call's outcome (value or exception) is then dropped.
- :meth:`Workers.close` ends every thread once it is idle; calls after it raise
  ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class _Call(Generic[T]):
    """One call: run by a worker thread, its outcome reported to the trio thread."""

    def __init__(self, fn: Callable[[], T], token: trio.lowlevel.TrioToken) -> None:
        self.fn = fn
        self.token = token
        self.task = trio.lowlevel.current_task()
        self.abandoned = False


class Workers:
    def __init__(self, limit: int, *, name: str = "remotefs-exchange") -> None:
        self.limiter = trio.CapacityLimiter(limit)
        self._limit = limit
        self._name = name
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads started so far (and alive unless closed)."""
        with self._lock:
            return self._threads

    async def run(self, fn: Callable[[], T], abort: Callable[[], None]) -> T:
        """``fn()`` in a worker thread; ``abort()`` is called (on the trio thread) if this
        task is cancelled while ``fn`` runs, and this task leaves at once."""
        call = _Call(fn, trio.lowlevel.current_trio_token())
        await self.limiter.acquire_on_behalf_of(call)
        try:
            self._hand_over(call)
        except BaseException:
            self.limiter.release_on_behalf_of(call)
            raise

        def cancelled(_: object) -> trio.lowlevel.Abort:
            call.abandoned = True
            abort()
            return trio.lowlevel.Abort.SUCCEEDED

        result: T = await trio.lowlevel.wait_task_rescheduled(cancelled)
        return result

    def prestart(self, count: int) -> None:
        """Start threads now (up to ``count`` in all, never more than the limit), idle until
        calls come: the first requests of a mount then start none on the trio thread."""
        with self._lock:
            wanted = max(0, min(count, self._limit) - self._threads)
            if self._closed or wanted == 0:
                return
            self._threads += wanted
            self._idle += wanted
        for started in range(wanted):
            try:
                self._start_thread()
            except RuntimeError:  # no more threads: those not started are not counted
                with self._lock:
                    self._threads -= wanted - started
                    self._idle -= wanted - started
                return

    def close(self) -> None:
        """End every thread once it is idle (the calls queued before finish first)."""
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._calls.put(None)

    def _hand_over(self, call: _Call[Any]) -> None:
        """Queue ``call`` for an idle thread reserved for it, or for a new one. Calls are
        queued under the lock, so none is ever queued behind :meth:`close`'s ends."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the transport's workers are closed")
            if self._idle > 0:
                self._idle -= 1
                self._calls.put(call)
                return
            self._threads += 1
        try:
            self._start_thread()
        except BaseException:  # no thread (none left to start): this call fails, nothing queued
            with self._lock:
                self._threads -= 1
            raise
        with self._lock:
            if self._closed:  # closed while it started: it ends on the end queued for it
                raise RuntimeError("the transport's workers are closed")
            self._calls.put(call)

    def _start_thread(self) -> None:
        threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            result = outcome.capture(call.fn)
            with self._lock:
                self._idle += 1  # before the place is given back: see the invariants
            with contextlib.suppress(trio.RunFinishedError):  # the loop is gone: nobody to tell
                call.token.run_sync_soon(self._report, call, result)
            # An idle thread must not pin its last call (an exchange, its request) or result
            # (a body of up to 4 MiB): kept alive while the thread waits, 12 read-ahead bodies
            # raised a cold stream's peak RSS from 194 to 239 MB.
            del call, result
        with self._lock:
            self._threads -= 1
            self._idle = max(0, self._idle - 1)

    def _report(self, call: _Call[T], result: outcome.Outcome[T]) -> None:
        """On the trio thread: the place is given back; the caller, unless it left, resumes."""
        self.limiter.release_on_behalf_of(call)
        if not call.abandoned:
            trio.lowlevel.reschedule(call.task, result)
