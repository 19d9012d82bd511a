"""HTTP for every backend, one concern per module.

- :mod:`~remotefs.http.client`: the mount's one ``httpx.AsyncClient`` (no credentials, no
  redirects; exchanges in :mod:`remotefs.transport`'s worker threads).
- :mod:`~remotefs.http.send`: one logical request under the operation's deadline, retried
  as :mod:`~remotefs.http.retry` says, final statuses turned into :mod:`remotefs.errors`.
- :mod:`~remotefs.http.retry`: what is retried, the backoff, and how long a server asked
  us to wait.
- :mod:`~remotefs.http.ratelimit`: Seven Bridges' request budget (spec 1.9), so that a
  request that must fail with 429 is never sent.
- :mod:`~remotefs.http.ranges`: the byte-range rules of a ranged GET (A6, A23).
- :mod:`~remotefs.http.wire`: wire formats: timestamps, a platform's error message.

Dependencies point down this list's reverse order: ``send`` uses ``retry``, ``ratelimit``
and ``wire``; nothing here imports the filesystem, the cache or a backend.
"""
