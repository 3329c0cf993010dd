"""Process-wide presence service: built once per worker by runtime/services.py.

Holds the hub (one pub/sub connection, in-process fan-out), the keepalive
ticker and, with `--demo-presence`, the demo cycler. Registers the hub's
drain (streams get a jittered `retry:` and close) and close hooks.
"""

from __future__ import annotations

from presence.demo import DemoPresence
from presence.hub import PresenceHub
from presence.snapshot import decode_snapshot, presence_key
from presence.ticker import Ticker


class PresenceService:
    def __init__(self, redis, hub: PresenceHub):
        self.redis = redis
        self.hub = hub

    async def read(self, user_id: str) -> dict | None:
        """The cached snapshot, or None (no snapshot, expired, or never shared: indistinguishable)."""
        return decode_snapshot(await self.redis.get(presence_key(user_id)))


def hub_connection_params(redis) -> tuple[dict, bool]:
    """Where `services.redis` connects, for the hub's own separate connection."""
    pool = redis.connection_pool
    params = {k: pool.connection_kwargs.get(k) for k in ("host", "port", "db", "username", "password", "path")}
    return params, "SSL" in pool.connection_class.__name__


async def start(services) -> None:
    config = services.config
    params, use_ssl = hub_connection_params(services.redis)
    hub = PresenceHub(
        services.redis,
        params,
        use_ssl=use_ssl,
        sharded=config.redis_sharded_pubsub,
        max_buffer=config.sse_max_buffer,
        max_streams=config.sse_max_streams,
    )
    hub.start()
    ticker = Ticker(hub, config.sse_ping_interval)
    ticker.start()
    services.presence = PresenceService(services.redis, hub)
    services.on_close(hub.close)
    services.on_close(ticker.stop)  # closers run last-in first-out: ticker first, then the hub
    services.on_drain(hub.drain)
    if config.demo_presence:
        demo = DemoPresence(services.redis, sharded=config.redis_sharded_pubsub)
        demo.start()
        services.on_close(demo.stop)
