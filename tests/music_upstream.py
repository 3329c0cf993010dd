"""A real local music worker for the music tests: GET/HEAD /tracks/<ISRC> on 127.0.0.1.

Its behaviour is switched per test (`mode`); it records every request it gets,
how many body bytes it managed to send, and when a listener's connection closed.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
from dataclasses import dataclass, field

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

TRACK_HEADERS = {
    "Content-Type": "audio/mpeg",
    "ETag": '"v1-track"',
    "Last-Modified": "Tue, 01 Sep 2026 10:00:00 GMT",
    "X-Track-Title": "Upstream Title",
    "X-Track-Artist": "Upstream Artist",
    "X-Track-Duration": "213",
    "X-Track-Album": "Upstream Album",
    "X-Track-Artwork": "https://img.example/cover.jpg",
    # Never forwarded:
    "Set-Cookie": "worker_session=secret",
    "X-Internal-Node": "worker-7",
    "Cache-Control": "public, max-age=86400",
    "Access-Control-Allow-Origin": "https://evil.example",
}


# Answers Tornado would never write, sent byte for byte (then the worker closes the connection).
RAW_ANSWERS = {
    "length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n0123456789\r\n0\r\n\r\n"
    ),
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n012345",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n01234",
    "gzip-coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\n01234\r\n0\r\n\r\n",
    "short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    "bad-status-line": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "garbage": b"\x00\x01not http at all\r\n\r\n",
    "close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n" + b"x" * 1000,
}


@functools.cache  # 46 ms to build, and every music test's upstream serves the same bytes
def body_bytes(size: int) -> bytes:
    """Deterministic, position-dependent bytes, so an off-by-one range is visible."""
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


@dataclass
class Upstream:
    mode: str = (
        "ok"  # ok | range | chunked | status:NNN | hang | hang-body | reset | stream | wav | raw:<RAW_ANSWERS key>
    )
    body: bytes = field(default_factory=lambda: body_bytes(300_000))
    wav: bytes = b""
    stream_size: int = 256 * 1024 * 1024
    requests: list = field(default_factory=list)
    sent: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    host: str = "127.0.0.1"
    server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Upstream:
        sockets = bind_sockets(0, self.host)
        self.port = sockets[0].getsockname()[1]
        self.server = HTTPServer(tornado.web.Application([(r"/tracks/(.*)", TrackHandler, {"up": self})]))
        self.server.add_sockets(sockets)
        return self

    async def stop(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


class TrackHandler(tornado.web.RequestHandler):
    def initialize(self, up: Upstream) -> None:
        self.up = up

    def compute_etag(self):
        return None

    async def head(self, isrc: str) -> None:
        await self.serve(isrc)

    async def get(self, isrc: str) -> None:
        await self.serve(isrc)

    def on_connection_close(self) -> None:
        self.up.closed.set()

    async def serve(self, isrc: str) -> None:
        up = self.up
        up.requests.append({"method": self.request.method, "isrc": isrc, "headers": dict(self.request.headers)})
        mode = up.mode
        if mode == "hang":
            await asyncio.sleep(30)
            return
        if mode.startswith("raw:"):
            await self.request.connection.stream.write(RAW_ANSWERS[mode[4:]])
            self.request.connection.stream.close()
            return
        if mode.startswith("status:"):
            self.set_status(int(mode.split(":")[1]))
            if self.get_status() != 204:
                self.set_header("Content-Type", "text/plain")
                self.write(b"upstream says no")
            return
        body = up.wav if mode == "wav" else up.body
        for name, value in TRACK_HEADERS.items():
            self.set_header(name, value)
        if mode == "wav":
            self.set_header("Content-Type", "audio/wav")
        if mode == "stream":
            await self._stream_forever()
            return
        if mode == "range" and self.request.headers.get("Range", "").startswith("bytes="):
            first, _, last = self.request.headers["Range"][6:].partition("-")
            first, last = int(first), int(last) if last else len(body) - 1
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
            self.set_header("Accept-Ranges", "bytes")
            body = body[first : last + 1]
        if mode in ("chunked", "chunked-reset"):
            for start in range(0, len(body), 50_000):
                self.write(body[start : start + 50_000])
                await self.flush()
                if mode == "chunked-reset" and start >= 100_000:
                    await asyncio.sleep(0.2)
                    self._reset()
                    return
            return
        self.set_header("Content-Length", str(len(body)))
        if self.request.method == "HEAD":
            return
        if mode == "hang-body":
            self.write(body[:1000])
            await self.flush()
            await asyncio.sleep(30)
            return
        if mode == "reset":
            self.write(body[:100_000])
            await self.flush()
            await asyncio.sleep(0.2)
            self._reset()
            return
        if mode == "reset-before-body":
            await self.flush()  # headers only
            await asyncio.sleep(0.1)
            self.request.connection.stream.close()
            return
        self.write(body)

    def _reset(self) -> None:
        sock = self.request.connection.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        self.request.connection.stream.close()

    async def _stream_forever(self) -> None:
        up = self.up
        self.set_header("Content-Length", str(up.stream_size))
        if self.request.method == "HEAD":
            return
        chunk = b"\x55" * 65536
        try:
            while up.sent < up.stream_size:
                self.write(chunk)
                await self.flush()
                up.sent += len(chunk)
        except StreamClosedError:
            up.closed.set()


@pytest.fixture
async def upstream():
    """A started local music worker (this module is a pytest plugin, see conftest)."""
    up = Upstream().start()
    yield up
    await up.stop()
