"""`serve --demo-presence`: cycle the demo owner's presence through the writer.

A newcomer opening the demo profile sees the card change every few seconds:
listening (progress bar), playing (elapsed ticker), a custom status, watching.
With several workers only the one holding a short Redis lease writes.
The runtime runs `DemoPresence.run` in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from common.tasks import raise_if_cancelling
from presence.writer import write_presence
from store.redis_connect import REDIS_ERRORS, RedisConnector, describe_error

log = logging.getLogger("hepgg.presence")

DEMO_USER = "demo-owner"
LEASE_KEY = "presence-demo-lease"


def demo_snapshots(now_ms: int) -> list[dict[str, Any]]:
    # No largeImage: the demo runs without internet, and album art from i.scdn.co would be a failed request
    # in the visitor's console. The card shows each activity type's icon instead.
    return [
        {
            "status": "online",
            "activity": {
                "name": "Spotify",
                "type": 2,
                "details": "Midnight City",
                "state": "M83",
                "startedAt": now_ms - 40_000,
                "endsAt": now_ms + 203_000,
                "largeText": "Hurry Up, We're Dreaming",
            },
        },
        {
            "status": "online",
            "activity": {
                "name": "Visual Studio Code",
                "type": 0,
                "details": "Editing hub.py",
                "state": "Workspace: hepgg",
                "startedAt": now_ms - 25 * 60_000,
            },
        },
        {"status": "idle", "activity": {"name": "Custom Status", "type": 4, "state": "brb, making tea"}},
        {
            "status": "dnd",
            "activity": {
                "name": "YouTube",
                "type": 3,
                "details": "Tornado internals, part 3",
                "startedAt": now_ms - 90_000,
            },
        },
        {
            "status": "online",
            "activity": {
                "name": "Apple Music",
                "type": 2,
                "details": "Digital Love",
                "state": "Daft Punk",
                "startedAt": now_ms - 10_000,
                "endsAt": now_ms + 291_000,
                "largeText": "Discovery",
            },
        },
    ]


class DemoPresence:
    def __init__(self, redis: RedisConnector, *, interval: float = 8.0):
        self.redis = redis
        self.interval = interval
        self._token = f"{os.getpid()}"

    async def _holds_lease(self) -> bool:
        ttl_ms = int(self.interval * 3000)
        redis = self.redis.client
        if await redis.set(LEASE_KEY, self._token, nx=True, px=ttl_ms):
            return True
        if await redis.get(LEASE_KEY) == self._token:
            await redis.pexpire(LEASE_KEY, ttl_ms)
            return True
        return False

    async def run(self) -> None:
        step = 0
        while True:
            try:
                if await self._holds_lease():
                    snapshots = demo_snapshots(int(time.time() * 1000))
                    await write_presence(self.redis.client, DEMO_USER, snapshots[step % len(snapshots)])
                    step += 1
            except REDIS_ERRORS as exc:
                raise_if_cancelling()
                log.warning("demo presence: %s", describe_error(exc))
            await asyncio.sleep(self.interval)
