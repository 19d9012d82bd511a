"""A cluster's shared control plane, on Redis or Valkey: one API budget, listings, signed URLs
and ODM sizes shared by every mount of one token (``--shared-state redis://HOST:PORT/DB``).

Bytes are not shared: each node reads its own block cache, straight from storage. What is:

- **The API budget** (SB: 1,000 requests per 5 minutes per token, for all nodes together).
  A Lua script keeps, on the server's clock, the mirror of SB's window (``remaining``,
  ``reset``), seeded and corrected from every response's ``X-RateLimit-*``; a request is
  sent only once the script grants it one (else the node waits for the reset, within its
  deadline), so the cluster never sends a request that must fail with 429.
- **Listings, signed URLs, ODM sizes**, through one :meth:`SharedState.fetch`: a value in
  Redis is served; else one node takes a short lease (``SET NX PX``), computes the value
  and stores it, and the others wait for it (polling, within their own deadline; a node that
  dies holding a lease delays them by at most ``LEASE_SECONDS``, then one of them takes
  over). Listings live ``--ttl``; a signed URL until ``URL_MARGIN`` before it expires; sizes a day.
- **Membership**: a heartbeat in a sorted set (server time), counted again with every
  budget grant; the count of live members is each node's share of what the window had left
  when it has to go on alone.

**Per user, and sealed.** Keys are ``remotefs:v1:<endpoint hash>:<user key>:…`` (the user
key is a keyed hash of the token, never the token). Every value is encrypted and
authenticated with AES-256-GCM under a key derived from the token, with the Redis key as
associated data: signed URLs are bearer secrets, and a store shared by several users (or
read by an operator) sees none of them; a value written by anyone else, damaged, or moved to
another key fails authentication and is ignored, deleted and replaced, never served.

**Fail open, never fail a read.** Every Redis call has ``CALL_SECONDS``; on any failure the
node marks the store down (one WARNING), goes on alone (the API directly, its budget cut to
its share: what the window had left / live members, as last counted), and probes every
``PROBE_SECONDS``; the first probe that answers rejoins (one INFO). A Redis that is down
when the mount starts is not an error (it starts alone and joins later); a refused password
or a malformed URL is (``SharedStateError``, one line, before anything is mounted).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import ssl
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import coredis
import coredis.exceptions
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from remotefs.http.retry import RESET_MARGIN
from remotefs.redis_url import PASSWORD_ENV, SharedStateError, parse_url, redacted

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_SECONDS = 0.25
"""Each Redis call at most: far below any operation's deadline, so a slow store costs a
read a quarter of a second once, then nothing (the node goes on alone)."""
PROBE_SECONDS = 2.0
HEARTBEAT_SECONDS = 5.0
MEMBER_SECONDS = 15.0
"""A member not heard of for this long is not counted."""
LEASE_SECONDS = 3.0
"""A lease's life: its holder renews it every third of it while it computes, so a slow
answer keeps it, and a holder that died delays the others by at most this long."""
_LEASE_MS = int(LEASE_SECONDS * 1000)
POLL_SECONDS = (0.005, 0.05)
"""A waiter looks for the value after the first, then twice as long each time up to the
second: an answer that takes milliseconds is seen in milliseconds, and a thousand waiters
of a slow one cost the store at most 20 calls a second each."""
THREAD_BYTES = 256 << 10
"""Values larger than this are sealed, opened and (de)serialised in a worker thread: a
2,000-file listing must not stall the FUSE loop."""
URL_MARGIN = 60.0
"""A shared signed URL disappears from the store this long before it expires (the same
margin under which a node asks for a new one)."""
SIZE_SECONDS = 86400.0
ESTIMATE_SECONDS, ESTIMATE_GRANT = 5.0, 10
"""Before any response has described SB's window, the shared budget grants this many
requests per this many seconds: eight nodes starting at once must not each spend from a
budget nobody has seen."""
WINDOW_CAP_SECONDS = 900.0
"""A shared window said to end further ahead than this is garbage (SB's is 5 minutes)."""
_PLAIN, _ZLIB = b"\x01", b"\x02"
"""A sealed value's first byte (authenticated with it): how the sealed bytes are stored."""
COMPRESS_BYTES = 1024
"""Values larger than this are compressed before they are sealed (a listing's JSON shrinks
several times; a signed URL would not)."""
LARGEST_VALUE = 256 << 20
"""No value opens to more than this (a listing of a million files is far less)."""


# The budget: SB's fixed window, mirrored on the server's clock. HASH fields: remaining,
# reset (Unix seconds), limit, est (1 while reset is our estimate, not SB's word).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
local b = redis.call('HMGET', KEYS[1], 'remaining', 'reset', 'limit', 'est')
-- a number, finite (tonumber takes "nan" and "inf": garbage here), else nil
local function finite(x)
  x = tonumber(x)
  if x and x == x and x > -math.huge and x < math.huge then return x end
  return nil
end
local limit, cap = finite(b[3]), tonumber(ARGV[5])
-- never more than the caller's own idea of the budget (SB's documented one, or its word)
if (not limit) or limit < 1 or limit > tonumber(ARGV[1]) then limit = tonumber(ARGV[1]) end
local remaining, reset, est = finite(b[1]), finite(b[2]), b[4]
-- SB's reset is a whole second of its clock: the window is over a margin after it. A
-- window that does not parse, or ends later than any window can, is garbage: a new one.
if (not remaining) or (not reset) or now >= reset + tonumber(ARGV[4]) or reset > now + cap then
  -- a window nobody has heard SB describe yet: a few requests, soon renewed, until its
  -- headers say what is left (the first answer corrects this at once)
  remaining = math.min(limit, tonumber(ARGV[3]))
  reset = now + tonumber(ARGV[2])
  est = '1'
end
remaining = math.min(remaining, limit)
-- and how many members beat lately: every grant keeps each node's count fresh
local members = 0
if redis.call('TYPE', KEYS[2]).ok == 'zset' then
  members = redis.call('ZCOUNT', KEYS[2], now - tonumber(ARGV[6]), '+inf')
end
if remaining > 0 then
  redis.call('HSET', KEYS[1], 'remaining', remaining - 1, 'reset', reset, 'limit', limit,
             'est', est)
  redis.call('PEXPIRE', KEYS[1], math.ceil((reset - now + 60) * 1000))
  return {'0', remaining - 1, members}
end
return {tostring(reset + tonumber(ARGV[4]) - now), 0, members}
"""
_OBSERVE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
local b = redis.call('HMGET', KEYS[1], 'remaining', 'reset', 'est')
local remaining, reset = tonumber(ARGV[2]), tonumber(ARGV[3])
local now_reset, now_remaining = tonumber(b[2]), tonumber(b[1])
if now_reset and now_reset ~= now_reset then now_reset = nil end  -- "nan": garbage
if now_remaining and now_remaining ~= now_remaining then now_remaining = nil end
if (not now_reset) or (not now_remaining) or b[3] ~= '0' or reset > now_reset then
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'reset', reset, 'limit', ARGV[1], 'est', '0')
elseif reset == now_reset then
  redis.call('HSET', KEYS[1], 'remaining', math.min(now_remaining, remaining))
end
local t = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], math.max(1000, math.ceil((reset - tonumber(t[1]) + 60) * 1000)))
return 1
"""
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], now + 1, '+inf')
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return redis.call('ZCARD', KEYS[1])
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_DROP_GARBAGE_LEASE = """
-- a lease that would outlive any holder's (no expiry, or longer than a lease) is garbage
local left = redis.call('PTTL', KEYS[2])
if left == -1 or left > tonumber(ARGV[2]) then redis.call('DEL', KEYS[2]) end
"""
_GET_OR_LEASE = (
    """
-- {1, value}: there is one; {2}: none, and the lease is now ours; {3}: someone holds it;
-- {4}: something that is no value of ours was there (dropped: look again)
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then return {1, redis.call('GET', KEYS[1])} end
if kind ~= 'none' then redis.call('DEL', KEYS[1]) return {4} end
"""
    + _DROP_GARBAGE_LEASE
    + """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
"""
)
_READY = (
    """
-- 1 once there is a value, or nobody holds the lease (its holder finished, failed or died)
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
"""
    + _DROP_GARBAGE_LEASE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return 1
"""
)
_STORE = """
-- the value (unless ARGV[2] is 0: nothing to store), and our lease released
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
_MISSING = object()
_WRONG_TYPE = object()
_STORE_ERRORS = (coredis.exceptions.RedisError, OSError, trio.TooSlowError)


class SharedState:
    """One mount's view of the cluster's store (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        endpoint: str,
        derive_key: Callable[[str], bytes],
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        host, port, db, tls, user, url_password = parse_url(url)
        self.url = redacted(url)
        settings: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": db,
            "username": user,
            "password": password or url_password or os.environ.get(PASSWORD_ENV) or None,
            "stream_timeout": CALL_SECONDS,
            "connect_timeout": CALL_SECONDS,
            "retry_policy": coredis.retry.NoRetryPolicy(),
        }
        if tls:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            settings.update(ssl=True, ssl_context=context)
        self._settings = settings
        self._connect()
        endpoint_key = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        user_key = derive_key("remotefs shared user").hex()[:32]
        self._prefix = f"remotefs:v1:{endpoint_key}:{user_key}:"
        self._aead = AESGCM(derive_key("remotefs shared values"))
        self._names = derive_key("remotefs shared names")
        self._member = uuid.uuid4().hex
        self._nursery: trio.Nursery | None = None
        self.up = True
        self.members = 1
        self.budget_remaining: int | None = None
        self.stats: Counter[str] = Counter()

    def _connect(self) -> None:
        """A new client (connections are made when first used), and its scripts."""
        self._client = client = coredis.Redis(**self._settings)
        self._take = client.register_script(_TAKE)
        self._observe = client.register_script(_OBSERVE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._renew = client.register_script(_RENEW)
        self._get_or_lease = client.register_script(_GET_OR_LEASE)
        self._ready = client.register_script(_READY)
        self._store = client.register_script(_STORE)

    # --- life ---------------------------------------------------------------------------

    async def check(self) -> None:
        """Before mounting: a refused password (or an ACL user who may not run what the
        mount needs) is a ``SharedStateError``; a store that is merely down, or too slow,
        is not (one WARNING: the node starts alone and joins when it answers)."""
        refused: BaseException | None = None
        async with coredis.Redis(**self._settings) as probe:
            try:
                with trio.fail_after(CALL_SECONDS * 4):
                    await probe.ping()
                    script = probe.register_script(_HEARTBEAT)
                    count: Any = await script(
                        keys=[self._key("members")], args=[self._member, MEMBER_SECONDS]
                    )
                    if isinstance(count, int):
                        self.members = max(1, count)
            except coredis.exceptions.BusyLoadingError as exc:  # up soon: not a refusal
                self._down(exc)
            except coredis.exceptions.ResponseError as exc:
                # it answered, and said no: a password, an ACL user without a command or a
                # key the mount needs, a read-only replica
                refused = exc
            except (coredis.exceptions.RedisError, trio.TooSlowError, OSError) as exc:
                self._down(exc)
        if refused is not None:
            raise SharedStateError(f"--shared-state {self.url} refused this mount: {refused}")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the client's connections, the heartbeat and the rejoining probe, until
        cancelled. Nothing here ends the mount: an unexpected failure is logged, and the
        node goes on alone until a new client answers."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                try:
                    async with self._client:
                        await self._keep_in_touch()
                except Exception as exc:
                    log.exception("shared state: its client failed unexpectedly")
                    self._down(exc)
                    await trio.sleep(PROBE_SECONDS)
                    self._connect()

    async def _keep_in_touch(self) -> None:
        while True:
            if self.up:
                await self._beat()
                await trio.sleep(HEARTBEAT_SECONDS)
                continue
            await trio.sleep(PROBE_SECONDS)
            try:
                with trio.fail_after(CALL_SECONDS):
                    await self._client.ping()
            except _STORE_ERRORS:
                continue
            self.up = True
            self.stats["rejoins"] += 1
            log.info("shared state at %s answers again: this mount rejoined", self.url)
            await self._beat()

    async def _beat(self) -> None:
        args: list[str | float] = [self._member, MEMBER_SECONDS]
        count = await self._call(self._heartbeat(keys=[self._key("members")], args=args))
        if isinstance(count, int):
            self.members = max(1, count)

    def _down(self, exc: BaseException) -> None:
        self.stats["errors"] += 1
        if self.up:
            self.up = False
            reason = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            log.warning(
                "shared state at %s cannot be used (%s): going on alone, with 1/%d of what the API "
                "budget has left, until it answers",
                self.url,
                reason or type(exc).__name__,
                self.members,
            )

    async def _call(self, command: Awaitable[Any]) -> Any:
        """``command``'s answer, or ``_MISSING`` (the store is down, or too slow: marked).
        Commands are lazy: one that is not awaited is never sent."""
        if not self.up:
            return _MISSING
        try:
            with trio.fail_after(CALL_SECONDS):
                return await command
        except coredis.exceptions.WrongTypeError:
            return _WRONG_TYPE  # garbage under one of our keys: the store itself is fine
        except Exception as exc:  # the store's failure (or its client's) is never a read's
            if not isinstance(exc, _STORE_ERRORS):
                log.exception("shared state: a call failed unexpectedly")
            self._down(exc)
            return _MISSING

    # --- values -------------------------------------------------------------------------

    def _key(self, kind: str, name: str = "") -> str:
        """The store's key for ``name``: a keyed hash, so keys say nothing of folder IDs,
        file IDs or queries to whoever lists the store."""
        if not name:
            return self._prefix + kind
        digest = hmac.new(self._names, name.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"{self._prefix}{kind}:{digest.hexdigest()[:32]}"

    def _seal(self, key: str, value: bytes) -> bytes:
        form = _PLAIN
        if len(value) > COMPRESS_BYTES:
            form, value = _ZLIB, zlib.compress(value, 1)
        nonce = os.urandom(12)
        return form + nonce + self._aead.encrypt(nonce, value, form + key.encode())

    def _open(self, key: str, blob: bytes) -> bytes | None:
        form = blob[:1]
        if len(blob) < 29 or form not in (_PLAIN, _ZLIB):
            return None
        try:
            value = self._aead.decrypt(blob[1:13], blob[13:], form + key.encode())
        except InvalidTag:
            return None
        if form == _PLAIN:
            return value
        inflate = zlib.decompressobj()
        try:
            opened = inflate.decompress(value, LARGEST_VALUE)
        except zlib.error:
            return None
        return opened if inflate.eof and not inflate.unconsumed_tail else None

    async def _opened(self, key: str, blob: object, decode: Callable[[bytes], T]) -> T | None:
        """The value stored under ``key`` (``blob``), opened and decoded; ``None`` for one
        that fails its check, which is deleted: never served."""

        def unseal() -> T | None:
            opened = self._open(key, blob) if isinstance(blob, bytes) else None
            if opened is None:
                return None
            try:
                return decode(opened)
            except (ValueError, TypeError, KeyError, IndexError):
                return None

        value = await _offloaded(unseal, len(blob) if isinstance(blob, bytes) else 0)
        if value is None:  # not ours, damaged, moved, or a shape we do not accept
            self.stats["rejected"] += 1
            log.debug("shared state: dropped a value that fails its check (%s)", key)
            await self._call(self._client.delete([key]))
        return value

    async def fetch(
        self,
        kind: str,
        name: str,
        compute: Callable[[], Awaitable[T]],
        *,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        ttl: Callable[[T], float],
    ) -> T:
        """The shared value ``kind``/``name``, or ``compute()``'s, computed by one node at a
        time and stored for ``ttl(value)`` seconds (0: not stored). ``decode`` raises
        ``ValueError`` (or ``TypeError``, ``KeyError``) for a value to ignore and replace.
        Waiting happens within the caller's own deadline; when the store is down, the
        caller computes alone. One round trip for a value that is there, or for the lease."""
        key, lease = self._key(kind, name), self._key("lease", f"{kind}:{name}")
        while True:
            answer = await self._call(
                self._get_or_lease(keys=[key, lease], args=[self._member, _LEASE_MS])
            )
            try:
                found = int(answer[0])
            except (TypeError, ValueError, IndexError, KeyError):
                found = 0  # down, or garbage where the script's answer belongs: alone
            if found == 1:
                value = await self._opened(key, answer[1], decode)
                if value is not None:
                    self.stats["hits"] += 1
                    return value
            elif found == 2:
                self.stats["misses"] += 1
                return await self._compute_holding(key, lease, compute, encode, ttl)
            elif found == 3:
                self.stats["waits"] += 1
                await self._wait_for(key, lease)
            elif found == 4:
                self.stats["rejected"] += 1
            else:
                return await compute()

    async def _compute_holding(
        self,
        key: str,
        lease: str,
        compute: Callable[[], Awaitable[T]],
        encode: Callable[[T], bytes],
        ttl: Callable[[T], float],
    ) -> T:
        renewal = trio.CancelScope()
        if self._nursery is not None:
            self._nursery.start_soon(self._keep, lease, renewal)
        released = False
        try:
            value = await compute()
            life_ms = int(ttl(value) * 1000)
            blob = b""
            if life_ms > 0 and self.up:
                # in a worker thread: the value's size is known only once encoded
                try:
                    blob = await trio.to_thread.run_sync(lambda: self._seal(key, encode(value)))
                except Exception:  # a value that cannot be shared is still the caller's
                    log.exception("shared state: a value could not be encoded (%s)", key)
                    life_ms = 0
            args: list[bytes | int | str] = [blob, max(0, life_ms), self._member]
            await self._call(self._store(keys=[key, lease], args=args))
            released = True
            return value
        finally:
            renewal.cancel()
            if not released:
                with trio.CancelScope(shield=True):
                    args = [b"", 0, self._member]
                    await self._call(self._store(keys=[key, lease], args=args))

    async def _keep(self, lease: str, scope: trio.CancelScope) -> None:
        """Renew ``lease`` while its holder computes (until ``scope`` is cancelled)."""
        with scope:
            while True:
                await trio.sleep(LEASE_SECONDS / 3)
                args: list[str | int] = [self._member, _LEASE_MS]
                if await self._call(self._renew(keys=[lease], args=args)) != 1:
                    return

    async def _wait_for(self, key: str, lease: str) -> None:
        """Until ``key`` has a value or its lease is gone (its holder finished, failed or
        died), at most ``LEASE_SECONDS``; then the caller looks again."""
        until = trio.current_time() + LEASE_SECONDS
        pause, longest = POLL_SECONDS
        while trio.current_time() < until and self.up:
            await trio.sleep(pause)
            pause = min(longest, pause * 2)
            if await self._call(self._ready(keys=[key, lease], args=[self._member, _LEASE_MS])):
                return

    # --- the budget (SB) ------------------------------------------------------------------

    @property
    def share(self) -> int:
        """What part of the budget this node may spend alone: 1/``share``."""
        return 1 if self.up else self.members

    async def take(self, limit: int) -> float | None:
        """One request from the cluster's budget: 0 to send now, else seconds to wait for the
        window's reset; ``None`` when the store cannot say (the caller decides alone)."""
        args = [limit, ESTIMATE_SECONDS, ESTIMATE_GRANT, RESET_MARGIN, WINDOW_CAP_SECONDS]
        keys = [self._key("budget"), self._key("members")]
        answer = await self._call(self._take(keys=keys, args=[*args, MEMBER_SECONDS]))
        try:
            wait, remaining, members = float(answer[0]), int(answer[1]), int(answer[2])
        except (TypeError, ValueError, IndexError, KeyError):
            return None  # down (or an answer no script of ours gives: decide alone)
        if not math.isfinite(wait):
            return None
        self.budget_remaining = remaining
        self.members = max(1, members)
        self.stats["granted" if wait <= 0 else "budget_waits"] += 1
        return max(0.0, wait)

    def observe(self, limit: int | None, remaining: int, reset: float) -> None:
        """What a response said of the budget: corrects the shared mirror (in the background)."""
        if self._nursery is None or not self.up:
            return
        args = [limit or 0, remaining, reset]
        self._nursery.start_soon(self._call, self._observe(keys=[self._key("budget")], args=args))

    def snapshot(self) -> dict[str, Any]:
        """For ``remotefs status`` and the metrics."""
        return {
            "url": self.url,
            "up": self.up,
            "members": self.members,
            "budget_remaining": self.budget_remaining,
            **{name: self.stats[name] for name in _COUNTERS},
        }


_COUNTERS = ("hits", "misses", "waits", "rejected", "errors", "rejoins", "granted", "budget_waits")


async def _offloaded(work: Callable[[], T], size: int) -> T:
    """``work()``, in a worker thread when ``size`` says it is large (see ``THREAD_BYTES``)."""
    if size <= THREAD_BYTES:
        return work()
    return await trio.to_thread.run_sync(work)
