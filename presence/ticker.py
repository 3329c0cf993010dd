"""The one keepalive ticker per process: `: ping` to every open stream each interval.

No timer per stream: one loop walks the hub's listeners (in slices) and also
pings the hub's Redis connection so that a silently dead peer is noticed.
The runtime runs `keepalive` in the background (common/tasks.start_background).
"""

from __future__ import annotations

import asyncio
import logging

from presence.hub import PresenceHub

log = logging.getLogger("hepgg.presence")


async def keepalive(hub: PresenceHub, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await hub.ping_all()
        except Exception:  # the ticker must outlive any one bad round
            log.exception("keepalive round failed")
