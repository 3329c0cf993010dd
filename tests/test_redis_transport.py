"""A connection torn down under a command fails as redis-py's ConnectionError (store/redis_transport.py).

redis-py 8.1 raises `AttributeError` (no writer) when another task disconnects a connection while a command
awaits its health check: not a RedisError, so every `except REDIS_ERRORS` missed it and the rehearsal's Redis
failover answered a contact form 500. The race is made exact here: the health check itself disconnects.
"""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError

from store.redis_connect import REDIS_ERRORS, connect


def _disconnect_during_health_check(connection) -> None:
    async def racing_check() -> None:  # what a concurrent failure's disconnect does to this connection
        await connection.disconnect()

    connection.check_health = racing_check


async def test_redis_py_leaks_the_torn_down_transport(store_urls):
    """The control: redis-py's own connection class (if this fails, redis-py fixed #4287: drop the guard)."""
    connection = Connection(**parse_url(store_urls.redis_url))
    await connection.connect()
    _disconnect_during_health_check(connection)
    with pytest.raises((AttributeError, TypeError)) as caught:
        await connection.send_command("PING")
    assert not isinstance(caught.value, REDIS_ERRORS)


async def test_a_torn_down_connection_is_a_connection_error_on_one_server(store_urls):
    connector = await connect(store_urls.redis_url)
    try:
        client = connector.client
        connection = await client.connection_pool.get_connection()
        try:
            _disconnect_during_health_check(connection)
            with pytest.raises(RedisConnectionError, match="connection lost while writing"):
                await connection.send_command("PING")
            del connection.check_health  # the race is over
        finally:
            await client.connection_pool.release(connection)
        assert await client.ping()  # the pool recovers: the next command reconnects
    finally:
        await connector.close()


@pytest.mark.slow
async def test_a_torn_down_connection_is_a_connection_error_on_every_cluster_node(redis_cluster):
    connector = await connect(redis_cluster.url)
    try:
        cluster = connector.cluster
        for node in cluster.get_nodes():
            connection = node.acquire_connection()
            await connection.connect()
            _disconnect_during_health_check(connection)
            with pytest.raises(RedisConnectionError, match="connection lost while writing"):
                await connection.send_command("PING")
            del connection.check_health  # the race is over
            node.release(connection)
        assert await cluster.set("hepgg:transport-probe", "1") and await cluster.delete("hepgg:transport-probe")
    finally:
        await connector.close()
