"""redis-py's asyncio connections, made to fail as `ConnectionError` when their transport is torn down mid-send.

redis-py 8.1 leaks transport internals from a write on a connection that was closed under it (redis/redis-py
#4287): `AttributeError: 'NoneType' object has no attribute 'writelines'` when another task disconnected it
during the health check's await, `TypeError`/`AttributeError` from asyncio's transport after a peer reset,
and uvloop's `RuntimeError` ("unable to perform operation on <TCPTransport closed=True>; the handler is
closed", seen in the rehearsal). None is a `RedisError`, so they pass every retry and every `except REDIS_ERRORS`: the rehearsal's Redis
master failover answered one contact form 500. Inside `send_packed_command` the command is already packed
bytes, so such an error can only come from the connection's transport: it is a lost connection, raised as one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["guard_transport_errors", "transport_safe"]

ClientT = TypeVar("ClientT", Redis, RedisCluster)


_SAFE: dict[type, Any] = {}  # one subclass per connection class (plain, TLS, unix, Sentinel-managed)


def transport_safe(connection_class: Any) -> Any:
    """`connection_class` whose sends raise redis-py's ConnectionError for a torn-down transport."""
    if getattr(connection_class, "_transport_safe", False):
        return connection_class
    if connection_class in _SAFE:
        return _SAFE[connection_class]

    class TransportSafe(connection_class):  # type: ignore[misc]
        _transport_safe = True

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            try:
                await super().send_packed_command(command, check_health)
            except (AttributeError, TypeError, RuntimeError) as exc:  # redis-py has already disconnected it
                raise RedisConnectionError(f"connection lost while writing ({type(exc).__name__}: {exc})") from exc

    TransportSafe.__name__ = TransportSafe.__qualname__ = f"TransportSafe{connection_class.__name__}"
    _SAFE[connection_class] = TransportSafe
    return TransportSafe


def guard_transport_errors(client: ClientT) -> ClientT:
    """Make every connection `client` opens transport-safe: its pool's, or every cluster node's (the startup
    nodes and the ones it learns later, after MOVED or a failover). Call it before the client connects."""
    if isinstance(client, RedisCluster):
        for kwargs in (client.connection_kwargs, client.nodes_manager.connection_kwargs):
            kwargs["connection_class"] = transport_safe(kwargs["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = transport_safe(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = transport_safe(pool.connection_class)
    return client
