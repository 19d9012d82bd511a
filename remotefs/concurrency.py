"""Shared outcomes among trio tasks: one flight, many waiters; and a bounded gather.

Everywhere the mount shares one piece of work among concurrent callers (a folder's listing,
a signed URL, an ODM file's size, a byte range of the block cache) it uses :class:`Flight`,
directly or through :class:`SingleFlight` (flights by key).

**The rule** (design §5). A waiter never receives another task's cancellation or deadline:

- the leader runs the work in its own context: its cancel scopes, its deadline;
- only *real outcomes* are shared: a result, or a :class:`~remotefs.errors.RemoteError`
  that is a fact about the platform (not found, access denied, retries exhausted, a
  malformed answer). Each waiter gets its own copy of the error, raised in its own task;
- anything else ends the flight *abandoned*: the leader was cancelled, its deadline came
  first (:class:`~remotefs.errors.DeadlineExceeded`), or it failed with an unexpected
  exception (a bug, which the leader's own caller reports). Waiters then wake, and one
  with time left takes over as the new leader; a waiter that is out of time meets its own
  deadline in its own scope (EIO at its FUSE handler).

A waiter waits in its own scope too: its cancellation or deadline ends its wait, never the
flight, which goes on for the leader and the other waiters.

Invariants: a flight lands exactly once (its event is set in a ``finally``, by
:meth:`Flight.lead` or :meth:`Flight.abandon`), so no waiter is ever left waiting for a
leader that has gone; :class:`SingleFlight` removes a key's flight
when it lands, before any waiter runs, so a taker-over starts a new flight.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar, cast

import trio

from remotefs.errors import DeadlineExceeded, RemoteError, Transient

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class Abandoned(enum.Enum):
    """What :meth:`Flight.wait` returns when the leader left without an outcome to share."""

    ABANDONED = "abandoned"


ABANDONED = Abandoned.ABANDONED


def shareable(exc: BaseException) -> bool:
    """Whether ``exc`` is an outcome other tasks may receive: a platform's real answer."""
    return isinstance(exc, RemoteError) and not isinstance(exc, DeadlineExceeded)


def fresh_copy(exc: BaseException) -> BaseException:
    """A copy of a shared error to raise in another task, chained to the original.

    One exception object raised in many tasks would collect all their tracebacks (and the
    ``__context__`` of each), so every waiter raises its own."""
    clone = copy.copy(exc)
    clone.__traceback__ = None
    clone.__cause__ = exc
    clone.__context__ = None
    return clone


class Flight(Generic[V]):
    """One piece of work that one leader runs and any number of waiters wait for."""

    __slots__ = ("_done", "_error", "_has_value", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._has_value = False
        self._value: V | None = None
        self._error: BaseException | None = None

    @property
    def landed(self) -> bool:
        return self._done.is_set()

    async def lead(self, work: Callable[[], Awaitable[V]]) -> V:
        """Run ``work`` as this flight's leader; its outcome is the caller's, as usual.

        The flight lands when ``work`` ends, however it ends: with its value or a shareable
        error for the waiters, or abandoned."""
        if self._done.is_set():
            raise RuntimeError("a flight is led once")
        try:
            value = await work()
        except BaseException as exc:
            if shareable(exc):
                self._error = exc
            raise
        else:
            self._value, self._has_value = value, True
            return value
        finally:
            self._done.set()

    def abandon(self) -> None:
        """Land now, with no outcome to share, unless already landed. For a flight whose
        leader may never have started (cancelled before its first line): call it in the
        ``finally`` that ends the flight's registration."""
        self._done.set()

    async def wait(self) -> V | Abandoned:
        """Wait (in the caller's own scope) for the flight to land.

        Returns:
            The leader's value, or :data:`ABANDONED` when there is no outcome to share
            (the caller may take over).
        Raises:
            A fresh copy of the leader's shareable error.
        """
        await self._done.wait()
        if self._error is not None:
            raise fresh_copy(self._error)
        if self._has_value:
            return cast(V, self._value)
        return ABANDONED


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share one flight; nothing is remembered after it lands."""

    def __init__(self) -> None:
        self._flights: dict[K, Flight[V]] = {}

    def running(self, key: K) -> bool:
        return key in self._flights

    async def run(
        self,
        key: K,
        work: Callable[[], Awaitable[V]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> V:
        """``work()``'s outcome for ``key``: led by this caller if no flight is running,
        else the running flight's (taken over if its leader abandons it).

        ``task_status``: for ``nursery.start``: started once this caller leads or waits, so
        that a background task started this way owns the flight before anyone else asks."""
        started = False
        while True:
            flight = self._flights.get(key)
            if not started:
                task_status.started()
                started = True
            if flight is None:
                flight = self._flights[key] = Flight()
                try:
                    return await flight.lead(work)
                finally:
                    if self._flights.get(key) is flight:
                        del self._flights[key]
            outcome = await flight.wait()
            if not isinstance(outcome, Abandoned):
                return outcome
            # The leader left without an outcome: lead ourselves, on our own time.


INNER_MARGIN = 0.05
"""Seconds before the enclosing deadline at which work beneath a FUSE handler gives up by
itself. With equal deadlines trio hands the cancellation to the outermost scope, and the
handler would learn only "too slow"; ending first, the work says what ran out of time, as a
``DeadlineExceeded`` that the layers between can see and remember (:class:`RecentFailures`)."""


def inner_deadline() -> float:
    """The enclosing deadline less ``INNER_MARGIN`` (``inf`` when none is set)."""
    return trio.current_effective_deadline() - INNER_MARGIN


@contextmanager
def before_the_deadline(what: Callable[[], str]) -> Iterator[None]:
    """Run the block until a moment before the enclosing deadline; if that comes first,
    raise ``DeadlineExceeded(what())`` (instead of the caller's own "too slow")."""
    with trio.move_on_at(inner_deadline()) as scope:
        yield
    if scope.cancelled_caught:
        raise DeadlineExceeded(what())


RECENT_FAILURE_WINDOW = 0.25
"""Seconds a failure for lack of time is answered again at once (:class:`RecentFailures`).
The kernel's queued callers arrive within milliseconds of the failure (8 readers of one
stalled file: all 8 EIOs within 34 ms); a caller after this is a new one, and tries again
(a reader that retries as soon as the platform is back, 0.3 s later, must not be refused)."""


class RecentFailures(Generic[K]):
    """Keys whose work just failed for lack of time (retries exhausted, or the deadline)
    fail again at once, for ``window`` seconds, instead of being tried again.

    Why: the kernel queues FUSE callers behind a request it has sent, outside the mount's
    sight: readers of the same pages wait on the page lock, lookups of the same name on the
    dentry being looked up. Only when the first request fails does it send the next one,
    which would then wait a whole deadline of its own after having waited the first's: the
    eighth reader of a stalled file got its EIO after 8 x ``--timeout``. A caller arriving
    within ``window`` of such a failure gets its own copy of it, at once, unless it says it
    came after (``since``: a file handle opened after the failure tries again). The window
    is short: a caller a moment later tries again.
    """

    PRUNE_AT = 1024

    def __init__(self, window: float = RECENT_FAILURE_WINDOW) -> None:
        self.window = window
        self._failed: dict[K, tuple[float, float, Transient]] = {}

    def note(self, key: K, exc: BaseException) -> None:
        """Remember ``exc`` for ``key`` if it is a failure for lack of time."""
        if isinstance(exc, Transient):
            if len(self._failed) >= self.PRUNE_AT:
                now = trio.current_time()
                self._failed = {k: v for k, v in self._failed.items() if v[1] > now}
            now = trio.current_time()
            self._failed[key] = (now, now + self.window, exc)

    def check(self, key: K, since: float = -math.inf) -> None:
        """Raise a copy of ``key``'s recent failure if it failed less than ``window`` ago and
        after ``since`` (a ``trio.current_time()``)."""
        failed = self._failed.get(key)
        if failed is None:
            return
        failed_at, until, exc = failed
        if trio.current_time() >= until:
            del self._failed[key]
            return
        if failed_at > since:
            raise Transient(f"{exc} (just failed; not asked again so soon)") from exc


async def gather_limited(thunks: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run ``thunks`` with at most ``limit`` at once; results in order.

    The first exception cancels the rest and is raised as itself (not as an exception group),
    so callers see the ``RemoteError`` they expect. A cancellation of the caller stays the
    caller's (its scope catches it), though it may arrive as a group of ``Cancelled``.
    """
    results: list[Any] = [None] * len(thunks)
    failure: Exception | None = None
    limiter = trio.CapacityLimiter(limit)

    async def run(index: int, thunk: Callable[[], Awaitable[T]]) -> None:
        nonlocal failure
        async with limiter:
            try:
                results[index] = await thunk()
            except Exception as exc:
                if failure is None:
                    failure = exc
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, thunk in enumerate(thunks):
            nursery.start_soon(run, index, thunk)
    if failure is not None:
        raise failure
    return results


@asynccontextmanager
async def running(service: Callable[..., Awaitable[Any]]) -> AsyncIterator[None]:
    """Run ``service`` (started with ``nursery.start``: it calls ``task_status.started()``)
    for as long as the block runs; it is cancelled when the block ends. An exception the
    block raises leaves as itself, not inside the nursery's exception group: a caller's
    ``except SomeError`` goes on working when a service is added around it."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
