"""Process-wide presence service: the snapshot reader and the hub, as handlers see them.

Built once per worker by runtime/services.py, which also starts the hub, the
keepalive ticker (presence/ticker.py) and, with `--demo-presence`, the demo
cycler, and registers the hub's drain (streams get a jittered `retry:` and close) and the held sheds'.
"""

from __future__ import annotations

from typing import Any

from presence.hub import PresenceHub
from presence.shed import HeldSheds
from presence.snapshot import decode_snapshot, presence_key
from store.redis_connect import RedisConnector


class PresenceService:
    def __init__(self, redis: RedisConnector, hub: PresenceHub, held_sheds: HeldSheds):
        self.redis = redis  # read `redis.client` at each call: a late cluster detection replaces it
        self.hub = hub
        self.held_sheds = held_sheds  # streams of addresses past their open rate, shed after a hold

    async def read(self, user_id: str) -> dict[str, Any] | None:
        """The cached snapshot, or None (no snapshot, expired, or never shared: indistinguishable)."""
        return decode_snapshot(await self.redis.client.get(presence_key(user_id)))
