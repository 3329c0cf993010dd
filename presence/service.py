"""Process-wide presence service: the snapshot reader and the hub, as handlers see them.

Built once per worker by runtime/services.py, which also starts the hub, the
keepalive ticker (presence/ticker.py) and, with `--demo-presence`, the demo
cycler, and registers the hub's drain (streams get a jittered `retry:` and close).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from presence.hub import PresenceHub
from presence.snapshot import decode_snapshot, presence_key


class PresenceService:
    def __init__(self, redis: Redis, hub: PresenceHub):
        self.redis = redis
        self.hub = hub

    async def read(self, user_id: str) -> dict[str, Any] | None:
        """The cached snapshot, or None (no snapshot, expired, or never shared: indistinguishable)."""
        return decode_snapshot(await self.redis.get(presence_key(user_id)))


def hub_connection_params(redis: Redis) -> tuple[dict[str, Any], bool]:
    """Where `redis` connects, for the hub's own separate connection (and whether it is TLS)."""
    pool = redis.connection_pool
    params = {k: pool.connection_kwargs.get(k) for k in ("host", "port", "db", "username", "password", "path")}
    return params, "SSL" in pool.connection_class.__name__
