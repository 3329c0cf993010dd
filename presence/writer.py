"""The Discord bot's writer contract: SET with a TTL and PUBLISH, in one MULTI/EXEC.

The bot (or `python hepgg_server.py presence set/clear`) calls these; every
server process subscribed to the user's channel fans the payload out to its
streams. Validation happens before anything is sent, so a bad snapshot writes
nothing. The transaction makes SET+PUBLISH atomic, which the hub relies on to
order a stream's first snapshot against later changes.

Which publish follows from the client, that is from what the server is: a Redis
Cluster client sends SPUBLISH (sharded pub/sub; the key and the channel are one
name, so the transaction stays in one slot), any other client PUBLISH. The hub
decides the same way, so a writer and a server cannot disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from presence.snapshot import PRESENCE_TTL, check_user_id, encode_snapshot, presence_key, validate_snapshot


def publish_command(redis: Redis | RedisCluster) -> str:
    """SPUBLISH on a cluster (sharded pub/sub), PUBLISH anywhere else."""
    return "SPUBLISH" if isinstance(redis, RedisCluster) else "PUBLISH"


async def write_presence(
    redis: Redis | RedisCluster,
    user_id: str,
    snapshot: Any,
    *,
    ttl: float = PRESENCE_TTL,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Validate, store for `ttl` seconds and publish one user's snapshot; returns what was written.

    Raises SnapshotError (nothing written) for a bad snapshot or user id.
    `ttl` exists for tests and demos; the contract is 300 s.
    """
    user_id = check_user_id(user_id)
    clean = validate_snapshot(snapshot, now or datetime.now(UTC))
    payload = encode_snapshot(clean)
    key = presence_key(user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, payload, px=max(1, int(ttl * 1000)))
        pipe.execute_command(publish_command(redis), key, payload)
        await pipe.execute()
    return clean


async def clear_presence(redis: Redis | RedisCluster, user_id: str) -> None:
    """Delete the snapshot and tell open streams (they receive `null`)."""
    user_id = check_user_id(user_id)
    key = presence_key(user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.execute_command(publish_command(redis), key, "null")
        await pipe.execute()
