"""A workaround for PyMongo's async driver on Python 3.11, applied once by each entry point.

PyMongo (4.20) waits on its asyncio conditions (server selection, connection pool) with
`asyncio.wait_for(condition.wait(), timeout)`. On Python 3.11, `wait_for` runs the wait in a
separate task and, on timeout, cancels it and waits for it (CPython bpo-41891/gh-86766 family);
when a notify races with that timeout, the condition's lock is left unheld: the caller gets
`RuntimeError: Lock is not acquired` (a 500 to our client) or stays blocked on the lock forever.
tests/test_outage.py hit both during an outage (12 concurrent requests waiting for a server:
11 answered 500, one hung) in about a third of its runs before this patch, none after.

Python 3.12 rewrote `wait_for` on top of `asyncio.timeout`, which cancels the waiting task
itself, so the condition re-acquires its lock before the timeout propagates. This module gives
PyMongo that behaviour on 3.11; on 3.12+ it does nothing.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

# Python versions whose asyncio.wait_for has the race (3.12 fixed it).
AFFECTED = sys.version_info < (3, 12)


async def _cond_wait(condition: Any, timeout: float | None) -> bool:  # noqa: ASYNC109
    # The signature is PyMongo's (`_async_cond_wait`), which this replaces.
    try:
        async with asyncio.timeout(timeout):
            result: bool = await condition.wait()
            return result
    except TimeoutError:
        return False


def apply() -> bool:
    """Replace PyMongo's condition wait where it is used; True if patched."""
    if not AFFECTED:
        return False
    import pymongo.asynchronous.pool as pool
    import pymongo.asynchronous.topology as topology
    import pymongo.lock as lock

    # The modules import the function by name, so each binding is replaced.
    for module in (lock, pool, topology):
        if hasattr(module, "_async_cond_wait"):
            setattr(module, "_async_cond_wait", _cond_wait)  # noqa: B010
    return True
