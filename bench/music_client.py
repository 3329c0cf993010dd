"""The music load client for bench/music_bench.py: its own process (the fd limit is per process).

    python bench/music_client.py --port P --path /x --concurrency N [--rate BYTES_PER_S --hold SECONDS]

Opens N streams (one asyncio protocol each) and prints one JSON line: without --hold, when every body
has arrived (bytes, wall time, MiB/s, p50/p99 stream time, errors); with --hold, `{"ready": true}` once
every listener is streaming at --rate bytes/s, then the result after holding them --hold seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import time


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future, rate: float | None):
        self.request = request
        self.done = done
        self.rate = rate  # bytes/s for slow listeners
        self.head = b""
        self.length: int | None = None
        self.got = 0
        self.started = time.monotonic()
        self.transport = None
        self.loop = asyncio.get_running_loop()
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.length is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                self._finish(f"status {status}")
                return
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
            if self.length is None:
                self._finish("no content-length")
                return
            self.head = b""
        self.got += len(data)
        if self.got >= self.length:
            self._finish(None)
        elif self.rate and not self.paused:
            ahead = self.got / self.rate - (time.monotonic() - self.started)
            if ahead > 0.05:
                self.paused = True
                self.transport.pause_reading()
                self.loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result((error, time.monotonic() - self.started, self.got))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result((f"closed after {self.got} bytes", time.monotonic() - self.started, self.got))


async def open_stream(port: int, path: str, rate: float | None, rcvbuf: int | None) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    done = loop.create_future()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: music-bench\r\nConnection: close\r\n\r\n".encode()
    )
    await loop.create_connection(lambda: Stream(request, done, rate), sock=sock)
    return done


async def client_main(args) -> dict:
    rate = args.rate or None
    started = time.monotonic()
    futures = []
    for _ in range(args.concurrency):  # connect in small batches so the backlog never overflows
        futures.append(open_stream(args.port, args.path, rate, 65536 if rate else None))
        if len(futures) % 100 == 0:
            await asyncio.sleep(0)
    dones = await asyncio.gather(*futures)
    if args.hold:
        # Slow listeners: report when all are streaming, hold, then leave.
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.sleep(args.hold)
        return {"held": args.concurrency, "finished_early": sum(d.done() for d in dones)}
    results = await asyncio.gather(*dones)
    wall = time.monotonic() - started
    times = sorted(r[1] for r in results)
    errors = [r[0] for r in results if r[0]]
    total = sum(r[2] for r in results)
    return {
        "streams": args.concurrency,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "bytes": total,
        "wall": wall,
        "mib_s": total / wall / 2**20,
        "p50": times[len(times) // 2],
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--hold", type=float, default=0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(client_main(args))), flush=True)


if __name__ == "__main__":
    main()
