"""A fault planted in a mount process by a test, never by the product.

A test puts this directory on ``PYTHONPATH`` and names the fault in ``REMOTEFS_PLANT``; the
mount process (and the daemon it starts, which inherits the environment) then runs with
``Operations.statfs`` replaced, so that an ``os.statvfs`` of the mount point sets it off:

- ``escape``: raise a ``BaseException`` that is not a cancellation (a bug that escapes every
  handler): it unwinds the FUSE loop, and the process must say so at CRITICAL, exit non-zero;
- ``silent-end``: end the FUSE loop as the original bug did (it returns while the mount is
  still attached, with no signal): the process must notice, and do the same.
"""

from __future__ import annotations

import os

PLANT = os.environ.get("REMOTEFS_PLANT", "")


class PlantedFault(BaseException):
    """Not an Exception: no handler turns it into an errno."""


if PLANT:
    import pyfuse3

    from remotefs.fs import operations

    async def statfs(self: object, ctx: object = None) -> object:
        if PLANT == "escape":
            raise PlantedFault("planted by the test")
        pyfuse3.terminate()  # the loop ends, though nobody unmounted and no signal came
        raise pyfuse3.FUSEError(5)

    operations.Operations.statfs = statfs  # type: ignore[method-assign,assignment]
