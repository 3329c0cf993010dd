"""Concurrent callers asking for the same key share one load instead of each doing it.

The load runs in a task of its own, and every caller (the first included) awaits it
through `asyncio.shield`: a caller that is cancelled (a visitor hanging up) leaves,
and the load goes on for the others. Nobody but the load itself can make the waiters
fail, so one caller's CancelledError never reaches another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(task)

    def __len__(self) -> int:
        """Loads in flight."""
        return len(self._inflight)

    def _settled(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved here, in case every caller went away before it ended
