"""The one keepalive ticker per process: `: ping` to every open stream each interval.

No timer per stream: one task walks the hub's listeners (in slices) and also
pings the hub's Redis connection so that a silently dead peer is noticed.
"""

from __future__ import annotations

import asyncio
import logging

from runtime.tasks import cancel_and_wait

log = logging.getLogger("hepgg.presence")


class Ticker:
    def __init__(self, hub, interval: float):
        self.hub = hub
        self.interval = interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.hub.ping_all()
            except Exception:  # the ticker must outlive any one bad round
                log.exception("keepalive round failed")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
