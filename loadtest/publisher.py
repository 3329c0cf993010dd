"""A blocking twin of presence/writer.py for the load test's gevent process.

presence.writer is asyncio (redis.asyncio) and cannot run under gevent, so
this sends the same transaction with redis-py's blocking client (gevent
patches its socket): MULTI, SET presence:<id> <json> PX <ttl>, PUBLISH (or
SPUBLISH) presence:<id> <json>, EXEC. Validation and encoding are the
project's own (presence.snapshot), so what is published is exactly what the
bot would publish. Like the server, it asks the named node whether it is part
of a Redis Cluster (then: the cluster client and SPUBLISH), so the two agree
without a flag.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from redis.cluster import RedisCluster

from presence.snapshot import check_user_id, encode_snapshot, presence_key, validate_snapshot


def is_cluster(redis_url: str) -> bool:
    probe = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        return int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()


class PresencePublisher:
    def __init__(self, redis_url: str, *, ttl: float = 60.0):
        options = {"socket_connect_timeout": 5, "socket_timeout": 5}
        if is_cluster(redis_url):
            self.redis: redis.Redis | RedisCluster = RedisCluster.from_url(redis_url, **options)
            self.command = "SPUBLISH"
        else:
            self.redis = redis.Redis.from_url(redis_url, **options)
            self.command = "PUBLISH"
        self.ttl_ms = max(1, int(ttl * 1000))

    def write(self, user_id: str, snapshot: dict) -> int:
        """Store and publish one snapshot; returns how many subscribers (server processes) got it."""
        key = presence_key(check_user_id(user_id))
        payload = encode_snapshot(validate_snapshot(snapshot, datetime.now(UTC)))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, payload, px=self.ttl_ms)
        pipe.execute_command(self.command, key, payload)
        return int(pipe.execute()[1])

    def close(self) -> None:
        self.redis.close()
