"""A small raw-socket SSE client for the presence tests: real HTTP/1.1, chunked decoding, one block at a time."""

from __future__ import annotations

import asyncio
import json


class SSEClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]
    ):
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._body = b""
        self.ended = False
        self.retry: int | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        version: str = "1.1",
        method: str = "GET",
        headers: dict[str, str] | None = None,
        source: str | None = None,
        in_pieces: bool = False,
    ) -> SSEClient:
        """`source`: the local address to connect from (any of 127/8). `in_pieces`: the request head in two
        writes 0.3 s apart, so the server's first look sees an unfinished head and Tornado's router takes it."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0) if source is not None else None
        )
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = (
            f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        if in_pieces:
            writer.write(request[:10].encode())
            await writer.drain()
            await asyncio.sleep(0.3)
            request = request[10:]
        writer.write(request.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return cls(reader, writer, status, headers)

    async def _read_more(self) -> bool:
        if self.ended:
            return False
        if self.chunked:
            size_line = await self.reader.readline()
            if not size_line:
                self.ended = True
                return False
            size = int(size_line.strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                self.ended = True
                return False
            self._body += data[:-2]
        else:
            data = await self.reader.read(65536)
            if not data:
                self.ended = True
                return False
            self._body += data
        return True

    async def block(self, timeout: float = 5.0) -> str | None:
        """The next SSE block (without its blank line), or None when the stream ended."""

        async def next_block() -> str | None:
            while b"\n\n" not in self._body:
                if not await self._read_more():
                    return None
            block, self._body = self._body.split(b"\n\n", 1)
            return block.decode()

        return await asyncio.wait_for(next_block(), timeout)

    async def event(self, timeout: float = 5.0):
        """The next `event: presence` payload (parsed JSON), skipping keepalive comments."""
        while True:
            block = await self.block(timeout)
            assert block is not None, "stream ended"
            if block.startswith(":"):
                continue
            if block.startswith("retry: ") and "\n" not in block:
                self.retry = int(block.split()[1])  # a hint alone (every stream's first block)
                continue
            lines = block.split("\n")
            assert lines[0] == "event: presence", block
            assert len(lines) == 2 and lines[1].startswith("data: "), block
            return json.loads(lines[1][len("data: ") :])

    def close(self) -> None:
        self.writer.close()
