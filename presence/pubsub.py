"""The hub's own Redis connection: a minimal RESP client for subscribed mode.

redis-py's PubSub hides reconnects (and resubscribes behind our back); the hub
must know when the connection was lost so that it can resend every stream the
current snapshot, and it wants to pipeline thousands of (UN)SUBSCRIBEs without
waiting for each reply. This client only connects, authenticates, writes
commands, and yields parsed replies; the hub owns the policy.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from typing import Any

import hiredis

CLIENT_NAME = "hepgg-presence-hub"


class PubSubError(ConnectionError):
    pass


def pack(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class PubSubConnection:
    """One TCP (or unix) connection in subscribed mode, built from redis-py connection kwargs."""

    def __init__(self, params: dict[str, Any], *, use_ssl: bool = False, connect_timeout: float = 2.0):
        self.params = params
        self.use_ssl = use_ssl
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def connect(self) -> None:
        path = self.params.get("path")
        if path:
            opener = asyncio.open_unix_connection(path)
        else:
            opener = asyncio.open_connection(
                self.params.get("host", "localhost"),
                self.params.get("port", 6379),
                ssl=ssl_module.create_default_context() if self.use_ssl else None,
            )
        self._reader, writer = await asyncio.wait_for(opener, self.connect_timeout)
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._parser = hiredis.Reader()
        password = self.params.get("password")
        if password:
            username = self.params.get("username")
            await self.call(*(("AUTH", username, password) if username else ("AUTH", password)))
        await self.call("CLIENT", "SETNAME", CLIENT_NAME)

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
        self._writer.write(data)

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
