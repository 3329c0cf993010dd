"""The SSE load client for bench/sse_bench.py: its own process, asyncio raw protocols, JSON-line commands.

Commands on stdin (one JSON object a line), one JSON answer a line on stdout:
  {"cmd": "connect", "port": P, "path_format": "/sub/b{}", "users": U, "n": N, "inflight": K}
      open N streams (stream i on user i % U), K connects in flight; answer when every response head arrived
  {"cmd": "wait", "count": C, "timeout": S}   until C events (with a "t" stamp) arrived since the last reset
  {"cmd": "stats"}                              latency percentiles (ms) of those events, then reset
  {"cmd": "close"}                              close every stream
Events carry `"t":<ns since epoch at publish>`; latency is receipt time minus t.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

MARK = b'"t":'
latencies: list[int] = []
heads = 0
transports: list[asyncio.Transport] = []
got_event = asyncio.Event()
want = 0


class Stream(asyncio.Protocol):
    __slots__ = ("connected", "head_done", "request", "tail", "transport")

    def __init__(self, connected: asyncio.Future | None):
        self.head_done = False
        self.tail = b""
        self.connected = connected

    def connection_made(self, transport):
        self.transport = transport
        transports.append(transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        global heads
        now = time.time_ns()
        if not self.head_done:
            if b"\r\n\r\n" not in data:
                return
            self.head_done = True
            heads += 1
            if self.connected is not None and not self.connected.done():
                self.connected.set_result(None)
        data = self.tail + data
        index = data.find(MARK)
        while index != -1:
            end = index + 4
            while end < len(data) and 48 <= data[end] <= 57:
                end += 1
            if end == len(data):  # the number may continue in the next read
                self.tail = data[index:]
                return
            latencies.append(now - int(data[index + 4 : end]))
            index = data.find(MARK, end)
        self.tail = b""
        if want and len(latencies) >= want:
            got_event.set()

    def connection_lost(self, exc):
        if self.connected is not None and not self.connected.done():
            self.connected.set_exception(ConnectionError(str(exc)))


async def connect(port: int, paths: list[str], n: int, inflight: int) -> dict:
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(inflight)
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        async with semaphore:
            path = paths[i % len(paths)]
            future = loop.create_future()
            proto = Stream(future)
            proto.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
            try:
                await loop.create_connection(lambda: proto, "127.0.0.1", port)
                await asyncio.wait_for(future, 30)
            except (TimeoutError, OSError, ConnectionError):
                failed += 1
            proto.connected = None

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    return {
        "connected": n - failed,
        "failed": failed,
        "seconds": round(elapsed, 3),
        "per_second": round((n - failed) / elapsed, 1),
    }


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


async def main() -> None:
    global want
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "connect":
            paths = [command["path_format"].format(u) for u in range(command["users"])]
            answer = await connect(command["port"], paths, command["n"], command.get("inflight", 1000))
        elif cmd == "wait":
            want = command["count"]
            got_event.clear()
            if len(latencies) < want:
                try:
                    await asyncio.wait_for(got_event.wait(), command.get("timeout", 30))
                except TimeoutError:
                    pass
            answer = {"received": len(latencies)}
            want = 0
        elif cmd == "stats":
            values = sorted(latencies)
            answer = {
                "n": len(values),
                "p50_ms": round(percentile(values, 0.5), 2),
                "p99_ms": round(percentile(values, 0.99), 2),
                "max_ms": round(percentile(values, 1.0), 2),
            }
            latencies.clear()
        elif cmd == "close":
            for transport in transports:
                transport.close()
            transports.clear()
            await asyncio.sleep(0.2)
            answer = {"closed": True}
        else:
            answer = {"error": f"unknown command {cmd}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
