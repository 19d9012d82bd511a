"""Platform backends behind one protocol (:class:`remotefs.backends.base.Backend`)."""

from __future__ import annotations

import httpx

from remotefs.backends.base import Backend
from remotefs.config import MountConfig

__all__ = ["Backend", "open_backend"]


def open_backend(config: MountConfig, client: httpx.AsyncClient) -> Backend:
    """The backend ``config.platform`` names, with credentials from where its users keep them.

    Raises:
        CredentialsError: no usable credentials (a one-line message naming where it looked).
    """
    from remotefs.credentials import genestack_credentials, sevenbridges_credentials
    from remotefs.http.retry import RetryPolicy

    policy = RetryPolicy(operation_timeout=config.deadline)
    if config.platform == "sevenbridges":
        from remotefs.backends.sevenbridges import SevenBridgesBackend

        endpoint, token = sevenbridges_credentials(
            config.profile, config.api_url, token_file=config.token_file
        )
        return SevenBridgesBackend(
            client, api_url=endpoint, token=token, project=config.project, policy=policy
        )
    if config.platform == "genestack":
        from remotefs.backends.genestack import GenestackBackend

        root, token, bearer = genestack_credentials(config.api_url, config.token_file)
        return GenestackBackend(client, api_url=root, token=token, bearer=bearer, policy=policy)
    raise ValueError(f"unknown platform {config.platform!r}")
