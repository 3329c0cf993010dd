"""Music listeners: each plays a profile's track at an audio bitrate, then the next, until the run stops.

    python -m deploy.rehearsal.load_music --target 10.213.0.1:8080 --out music.json --seconds 600 \
        --listeners 200 --kbps 320 --profiles 100 --isrc USRC17607839

Each play is a GET of the profile's music URL from a visitor's own address, read at --kbps (the reader
stops reading when ahead, so TCP flow control paces the server as a browser's audio element would).
A share of plays (--repeat-share) is the same visitor playing the same track again within seconds.
Per play it records `[t_start, t_head, status, retry_after, bytes, length, complete, visitor, profile,
local_port, error]`: a track *started* is a 200 head, *complete* is every byte of Content-Length.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from deploy.rehearsal.loadbase import Runner, Visitors, base_parser, parse_head, run_main, target

TIMEOUT = 60.0


class MusicLoad:
    def __init__(self, args):
        self.args = args
        self.host, self.port = target(args)
        self.visitors = Visitors(args.visitor_base)
        self.random = random.Random(args.seed)
        self.plays: list[list[Any]] = []
        self.streaming = 0
        self.bytes = 0

    def sample(self) -> dict[str, Any]:
        return {"streaming": self.streaming, "plays": len(self.plays), "bytes": self.bytes}

    async def play(self, visitor: int, profile: int) -> list[Any]:
        args = self.args
        request = (
            f"GET /api/v1/profiles/{args.slug_prefix}{profile}/music/{args.isrc} HTTP/1.1\r\n"
            f"Host: {args.slug_prefix}{profile}.{args.base_domain}\r\nUser-Agent: {Visitors.agent(visitor)}\r\n"
            "Accept: audio/*\r\nConnection: close\r\n\r\n"
        ).encode()
        record: list[Any] = [round(time.monotonic(), 4), None, 0, False, 0, None, False, visitor, profile, 0, ""]
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, local_addr=(Visitors.address(visitor), 0)), TIMEOUT
            )
            record[9] = writer.get_extra_info("sockname")[1]
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            status, headers = parse_head(head[:-4])
            record[1], record[2], record[3] = round(time.monotonic(), 4), status, "retry-after" in headers
            if status != 200:
                await asyncio.wait_for(reader.read(), TIMEOUT)
                return record
            length = int(headers.get("content-length", -1))
            record[5] = length
            self.streaming += 1
            try:
                rate = args.kbps * 1000 / 8
                started = time.monotonic()
                while True:
                    chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                    if not chunk:
                        break
                    record[4] += len(chunk)
                    self.bytes += len(chunk)
                    ahead = record[4] / rate - (time.monotonic() - started) if rate else 0
                    if ahead > 0.05:
                        await asyncio.sleep(ahead)
            finally:
                self.streaming -= 1
            record[6] = record[4] == length
            if not record[6]:
                record[10] = f"body ended after {record[4]} of {length} bytes"
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            record[10] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if writer is not None:
                writer.close()
        return record

    async def listener(self, stop: asyncio.Event, index: int) -> None:
        await asyncio.sleep(self.random.uniform(0, self.args.ramp))
        last: tuple[int, int] | None = None
        while not stop.is_set():
            if last is not None and self.random.random() < self.args.repeat_share:
                visitor, profile = last
            else:
                visitor, profile = self.visitors.new(), self.random.randrange(self.args.profiles)
            last = (visitor, profile)
            self.plays.append(await self.play(visitor, profile))
            try:
                await asyncio.wait_for(stop.wait(), self.random.uniform(0.5, 2.0))
            except TimeoutError:
                pass

    async def work(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.listener(stop, i) for i in range(self.args.listeners)))


async def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, required=True)
    parser.add_argument("--kbps", type=float, default=320.0, help="read at this bitrate (0: as fast as served)")
    parser.add_argument("--profiles", type=int, default=100)
    parser.add_argument("--isrc", default="USRC17607839")
    parser.add_argument("--slug-prefix", default="rh-")
    parser.add_argument("--base-domain", default="hep.gg")
    parser.add_argument("--repeat-share", type=float, default=0.1)
    parser.add_argument("--ramp", type=float, default=5.0, help="listeners start spread over this many seconds")
    args = parser.parse_args()
    load = MusicLoad(args)
    runner = Runner(args, load.sample)
    await runner.run(load.work)
    runner.write({"kind": "music", "plays": load.plays})


if __name__ == "__main__":
    run_main(main)
