"""The hub's pub/sub connections: a minimal RESP client for subscribed mode.

Measured against redis-py's asyncio PubSub and ClusterPubSub (bench/pubsub_ab.py, docs/perf.md): the hub
pipelines thousands of (UN)SUBSCRIBEs without awaiting each, parses every reply of one read in one go,
and must know when a connection was lost (to resend every stream the current snapshot), where redis-py
resubscribes behind its owner's back. This client only writes commands and yields parsed replies; the
hub owns the policy. The handshake (TLS, AUTH, CLIENT SETNAME, Sentinel) is redis-py's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError


class PubSubError(ConnectionError):
    pass


def pack(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class PubSubConnection:
    """One connection in subscribed mode.

    Opened by redis-py's own connection class (`RedisConnector.pubsub_connection`), so TLS, credentials,
    unix sockets and Sentinel resolution work exactly as for commands; after that handshake this class
    takes the socket's streams over and redis-py's object lets go of them.
    """

    def __init__(self, connection: AbstractConnection, *, connect_timeout: float = 10.0):
        self.connection = connection
        self.connect_timeout = connect_timeout  # a Sentinel lookup plus a TLS handshake, at most
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    @property
    def address(self) -> str:
        path = getattr(self.connection, "path", None)
        return path or f"{getattr(self.connection, 'host', '?')}:{getattr(self.connection, 'port', '?')}"

    async def connect(self) -> None:
        connection = self.connection
        try:
            await asyncio.wait_for(connection.connect(), self.connect_timeout)  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as exc:
            connection._close()  # type: ignore[no-untyped-call]
            raise PubSubError(f"cannot connect to {self.address}: {exc}") from exc
        self._reader, self._writer = connection._reader, connection._writer
        connection._reader = connection._writer = None  # ours now: redis-py must not close or read them
        if self._reader is None or self._writer is None:
            raise PubSubError("redis-py's connection has no streams to take over")
        sock = self._writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._parser = hiredis.Reader()

    async def call(self, *args: str) -> Any:
        """A request/reply command, only before subscribing (handshake, CONFIG)."""
        self.send(pack(*args))
        reply = (await self.read_replies())[0]
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise PubSubError("not connected")
        try:
            self._writer.write(data)
        except (RuntimeError, AttributeError, TypeError) as exc:
            # A transport closed under us (uvloop: "unable to perform operation on <TCPTransport closed=True>;
            # the handler is closed"): a lost connection, not a crash of the shard's task (the rehearsal's
            # Redis failover killed one with this).
            raise PubSubError(f"connection lost while writing ({exc})") from exc

    async def read_replies(self) -> list[Any]:
        """Every reply parsed from the next read (at least one); PubSubError when Redis hangs up."""
        assert self._reader is not None
        replies = []
        while True:
            reply = self._parser.gets()
            while reply is not False:
                replies.append(reply)
                reply = self._parser.gets()
            if replies:
                return replies
            data = await self._reader.read(256 * 1024)
            if not data:
                raise PubSubError("Redis closed the pub/sub connection")
            self._parser.feed(data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
