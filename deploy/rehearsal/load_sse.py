"""SSE listeners that behave like a browser's EventSource, each recording every connection it made.

    python -m deploy.rehearsal.load_sse --target 10.213.0.1:8080 --out sse-0.json --seconds 600 \
        --listeners 1500 --users 100

Listener i follows user `<prefix>owner-<i % users>` from its own address. Like EventSource it reconnects
after the last `retry:` the server sent (the browser default, --default-retry-ms, until one arrives)
whenever its stream ends: a clean end of the body (the server shed it), a reset or EOF (the upstream
died), or a failed connect. Per connection it records
`[t_request, t_head, status, t_first_event, first_seq, last_seq, events, t_end, how_it_ended, regressions]`
(`seq` is the publisher's sequence number in the snapshot; a regression is an event older than one
already seen on this listener), and the last `retry:` value it was given.

One raw asyncio protocol per connection (no per-stream task or timer besides the reconnect delay), so a
few thousand listeners cost little of the shared CPU.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from deploy.rehearsal.loadbase import Runner, Visitors, base_parser, parse_head, run_main, target

SEQ = re.compile(rb"seq=(\d+)")
SENT = re.compile(rb"sent=(\d+\.\d+)")
HEAD_TIMEOUT = 30.0


class Listener:
    __slots__ = ("conns", "current", "host", "index", "load", "path", "retry_ms", "seen", "transport", "visitor")

    def __init__(self, load: SseLoad, index: int, user: str, visitor: int):
        self.load = load
        self.index = index
        self.visitor = visitor
        self.path = f"/api/v1/profiles/presence/{user}/stream"
        self.retry_ms = load.args.default_retry_ms
        self.conns: list[list[Any]] = []
        self.current: list[Any] | None = None
        self.seen = 0  # the newest seq this listener has seen
        self.transport: asyncio.Transport | None = None

    def connect(self) -> None:
        if self.load.stopping:
            return
        self.current = [round(time.monotonic(), 4), None, None, None, None, None, 0, None, None, 0]
        self.conns.append(self.current)
        self.load.connects += 1
        task = asyncio.ensure_future(self._connect(self.current))
        self.load.pending.add(task)
        task.add_done_callback(self.load.pending.discard)

    async def _connect(self, conn: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.load.target
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: Stream(self, conn), host, port, local_addr=(Visitors.address(self.visitor), 0)
                ),
                HEAD_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            self.ended(conn, f"connect: {type(exc).__name__}")

    def ended(self, conn: list[Any], how: str) -> None:
        if conn[7] is not None:
            return
        conn[7] = round(time.monotonic(), 4)
        conn[8] = how
        if conn[1] is not None and conn[2] == 200:
            self.load.open -= 1
        self.load.disconnects += 1
        if conn is self.current:
            self.current = None
            self.transport = None
            if not self.load.stopping:
                asyncio.get_running_loop().call_later(self.retry_ms / 1000, self.connect)


class Stream(asyncio.Protocol):
    """One HTTP/1.1 connection of a listener: head, chunked body, SSE messages."""

    def __init__(self, listener: Listener, conn: list[Any]):
        self.listener = listener
        self.conn = conn
        self.buffer = b""
        self.head_done = False
        self.chunked = False
        self.chunk_left = 0  # bytes of the current chunk still to come (+2 for its CRLF), 0: a size line next
        self.sse = b""
        self.transport: asyncio.Transport | None = None
        self.ending = "eof"

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.listener.transport = transport
        request = (
            f"GET {self.listener.path} HTTP/1.1\r\nHost: {self.listener.load.args.api_host}\r\n"
            f"User-Agent: {Visitors.agent(self.listener.visitor)}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        )
        transport.write(request.encode())
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._head_timeout)

    def _head_timeout(self) -> None:
        if not self.head_done and self.transport is not None:
            self.ending = "head timeout"
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if not self.head_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.timer.cancel()
            status, headers = parse_head(self.buffer[:end])
            data, self.buffer = self.buffer[end + 4 :], b""
            self.head_done = True
            conn[1], conn[2] = round(time.monotonic(), 4), status
            if status != 200:
                self.ending = f"status {status}" + (" retry-after" if "retry-after" in headers else "")
                self.transport.close()
                return
            self.listener.load.open += 1
            self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        if not self.chunked:
            self._body(data)
            return
        self.buffer += data
        while self.buffer:
            if self.chunk_left == 0:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.buffer[:line_end].split(b";")[0], 16)
                self.buffer = self.buffer[line_end + 2 :]
                if size == 0:  # the last chunk: the server ended the stream cleanly (a shed)
                    self.ending = "end"
                    self.transport.close()
                    return
                self.chunk_left = size + 2
            take = self.buffer[: self.chunk_left]
            self.buffer = self.buffer[len(take) :]
            self.chunk_left -= len(take)
            self._body(take if self.chunk_left >= 2 else take[: len(take) - (2 - self.chunk_left)])

    def _body(self, data: bytes) -> None:
        self.sse += data
        while True:
            end = self.sse.find(b"\n\n")
            if end < 0:
                return
            block, self.sse = self.sse[:end], self.sse[end + 2 :]
            self._message(block)

    def _message(self, block: bytes) -> None:
        listener, conn, load = self.listener, self.conn, self.listener.load
        if block.startswith(b"retry:"):
            listener.retry_ms = int(block.split(b":", 1)[1])
            load.retries_seen += 1
            return
        if not block.startswith(b"event: presence"):
            return  # comments (keepalive pings)
        match = SEQ.search(block)
        seq = int(match.group(1)) if match else 0  # `null`: no snapshot
        now = time.monotonic()
        if conn[3] is None:
            conn[3], conn[4] = round(now, 4), seq
        conn[5] = seq
        conn[6] += 1
        if seq < listener.seen:
            conn[9] += 1
        listener.seen = max(listener.seen, seq)
        load.events += 1
        sent = SENT.search(block)
        if sent is not None and conn[6] > 1:  # fan-out latency of changes (not of first snapshots)
            load.latencies.append(time.time() - float(sent.group(1)))

    def connection_lost(self, exc) -> None:
        self.timer.cancel()
        how = self.ending
        if exc is not None and how == "eof":
            how = f"reset: {type(exc).__name__}"
        self.listener.ended(self.conn, how)


class SseLoad:
    def __init__(self, args):
        self.args = args
        self.target = target(args)
        self.stopping = False
        self.open = 0
        self.events = 0
        self.connects = 0
        self.disconnects = 0
        self.retries_seen = 0
        self.latencies: list[float] = []
        self.listeners: list[Listener] = []
        self.pending: set[asyncio.Future[None]] = set()  # connects under way (the loop keeps weak references)

    def sample(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "events": self.events,
            "connects": self.connects,
            "disconnects": self.disconnects,
        }

    async def work(self, stop: asyncio.Event) -> None:
        args = self.args
        for i in range(args.listeners):
            user = f"{args.slug_prefix}owner-{(args.first_index + i) % args.users}"
            listener = Listener(self, args.first_index + i, user, args.visitor_base + i)
            self.listeners.append(listener)
            listener.connect()
            if i % max(1, int(args.connect_rate / 20)) == 0:  # ramp: --connect-rate a second, in 50 ms steps
                try:
                    await asyncio.wait_for(stop.wait(), 0.05)
                    break
                except TimeoutError:
                    pass
        await stop.wait()
        self.stopping = True
        for listener in self.listeners:
            if listener.current is not None:
                conn = listener.current
                if conn[7] is None:
                    conn[7], conn[8] = round(time.monotonic(), 4), "stopped"
                if listener.transport is not None:
                    listener.transport.abort()


async def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0, help="listener numbering (across processes)")
    parser.add_argument("--slug-prefix", default="rh-")
    parser.add_argument("--api-host", default="rh-0.hep.gg", help="Host header of the stream requests")
    parser.add_argument("--default-retry-ms", type=int, default=3000, help="EventSource's own (Chromium: 3 s)")
    parser.add_argument("--connect-rate", type=float, default=400.0, help="new listeners a second at the start")
    args = parser.parse_args()
    load = SseLoad(args)
    runner = Runner(args, load.sample)
    await runner.run(load.work)
    latencies = sorted(load.latencies)
    runner.write(
        {
            "kind": "sse",
            "listeners": [
                {"i": li.index, "path": li.path, "retry_ms": li.retry_ms, "seen": li.seen, "conns": li.conns}
                for li in load.listeners
            ],
            "fanout_ms": {
                "n": len(latencies),
                "p50": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
                "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
            },
        }
    )


if __name__ == "__main__":
    run_main(main)
