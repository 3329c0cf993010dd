"""A worker's long-lived background tasks: started once, cancelled on close, never stuck.

Loops that retry on a driver error must not mistake their own cancellation for one:
on Python 3.11, `asyncio.wait_for` (used inside redis-py, PyMongo and our pub/sub
connection) can turn a cancel that lands as its timeout fires into a TimeoutError,
which the driver reports as its own timeout error, or return the awaited result
when the cancel lands just as it completes (the cancel is then simply gone). A loop
that goes on from there never stops, and the worker hangs on close. So loops call
`raise_if_cancelling()` in their error handlers, and whoever stops tasks uses
`cancel_and_wait`, which cancels again until they are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from common.lifecycle import Lifecycle


def raise_if_cancelling() -> None:
    """Re-raise a cancellation of the current task that a library call turned into an error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(*tasks: asyncio.Task[Any], again_after: float = 0.5) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that swallowed the cancel."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)


def start_background(lifecycle: Lifecycle, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run `coro` as a task named `name` until the worker closes (then cancel it and wait for it).

    The one way to start a long-lived loop: the task has an owner that cancels it, and its
    closer carries its name, so a loop that will not stop is named in the log.
    """
    task = asyncio.create_task(coro, name=name)

    async def stop() -> None:
        await cancel_and_wait(task)

    stop.__qualname__ = f"stop {name}"  # how Lifecycle.close names a closer that hangs
    lifecycle.on_close(stop)
    return task
