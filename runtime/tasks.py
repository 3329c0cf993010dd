"""A worker's long-lived background tasks: started once, cancelled on close, never stuck.

Loops that retry on a driver error must not mistake their own cancellation for one:
on Python 3.11, `asyncio.wait_for` (used inside redis-py, PyMongo and our pub/sub
connection) can turn a cancel that lands as its timeout fires into a TimeoutError,
which the driver reports as its own timeout error. A loop that logs that and
retries never stops, and the worker hangs on close. Such loops call
`raise_if_cancelling()` in their error handlers: the task's pending-cancel count
survives the swallowed CancelledError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def raise_if_cancelling() -> None:
    """Re-raise a cancellation of the current task that a library call turned into an error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def start_background(services, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
    """Run `coro` as a task named `name` until the services close (then cancel it and wait for it)."""
    task = asyncio.create_task(coro, name=name)

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stop.__qualname__ = f"stop {name}"  # how Services.close names a closer that hangs
    services.on_close(stop)
    return task
