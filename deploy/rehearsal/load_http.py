"""Page visitors and contact senders: open-loop arrivals at a steady rate, every answer recorded.

    python -m deploy.rehearsal.load_http --target 10.213.0.1:8080 --out pages.json --seconds 600 \
        --page-rate 40 --contact-rate 3 --profiles 100

Open loop: a request starts on its schedule whether or not earlier ones have been answered (a slow server
does not slow the visitors down, so the latencies are not flattered); at most --max-inflight are open,
and a start that would exceed it is counted as `skipped` (reported, never silently dropped).

Pages: each visit is a new connection from the visitor's own address with its own User-Agent; a share of
visits (--repeat-share) come back from a visitor seen within the last REPEAT_WINDOW seconds on the same
profile, which the server must not count again. Contacts: the three forms in turn, each from a new
visitor, with a token the Turnstile fake accepts. Each record is
`[t_start, seconds, status, retry_after, local_port, ...]` (status 0: no HTTP answer).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
import time
from typing import Any

from deploy.rehearsal.loadbase import Runner, Visitors, base_parser, parse_head, run_main, target

REPEAT_WINDOW = 10.0  # well inside the server's 30 s de-duplication, measured from the first visit
CHANNELS = ("sms", "email", "discord")
TIMEOUT = 60.0


async def exchange(host: str, port: int, source: str, request: bytes) -> tuple[int, dict[str, str], int, int, str]:
    """One request on a new connection from `source`; (status, headers, body bytes, local port, error)."""
    writer = None
    local_port = 0
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), TIMEOUT)
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status, headers = parse_head(head[:-4])
        body = await asyncio.wait_for(reader.read(), TIMEOUT)  # Connection: close
        if "content-length" in headers and len(body) != int(headers["content-length"]):
            return status, headers, len(body), local_port, f"short body {len(body)}/{headers['content-length']}"
        if headers.get("transfer-encoding") == "chunked" and not body.endswith(b"0\r\n\r\n"):
            return status, headers, len(body), local_port, "chunked body without its last chunk"
        return status, headers, len(body), local_port, ""
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return 0, {}, 0, local_port, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if writer is not None:
            writer.close()


class HttpLoad:
    def __init__(self, args):
        self.args = args
        self.host, self.port = target(args)
        self.visitors = Visitors(args.visitor_base)
        self.random = random.Random(args.seed)
        self.pages: list[list[Any]] = []
        self.contacts: list[list[Any]] = []
        self.inflight = 0
        self.skipped = collections.Counter()
        self.errors = collections.Counter()
        self.recent: collections.deque[tuple[float, int, int]] = collections.deque()  # (t, visitor, profile)
        self.tasks: set[asyncio.Task] = set()
        self.done = collections.Counter()
        self.sends = 0

    def sample(self) -> dict[str, Any]:
        return {"inflight": self.inflight, **{f"done_{k}": v for k, v in self.done.items()}}

    def _spawn(self, kind: str, coro) -> None:
        if self.inflight >= self.args.max_inflight:
            self.skipped[kind] += 1
            coro.close()
            return
        self.inflight += 1
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.inflight -= 1

    def _visitor_for_page(self, now: float) -> tuple[int, int]:
        while self.recent and now - self.recent[0][0] > REPEAT_WINDOW - 2:
            self.recent.popleft()
        if self.recent and self.random.random() < self.args.repeat_share:
            _, visitor, profile = self.random.choice(self.recent)
            return visitor, profile
        visitor, profile = self.visitors.new(), self.random.randrange(self.args.profiles)
        self.recent.append((now, visitor, profile))
        return visitor, profile

    async def page(self, visitor: int, profile: int) -> None:
        request = (
            f"GET / HTTP/1.1\r\nHost: {self.args.slug_prefix}{profile}.{self.args.base_domain}\r\n"
            f"User-Agent: {self.visitors.agent(visitor)}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        ).encode()
        await self._timed("page", self.pages, visitor, request, [visitor, profile])

    async def contact(self, channel: str, visitor: int, profile: int) -> None:
        self.sends += 1  # a fresh single-use token per send, as the widget gives: a resent one is refused
        token = f"once-{self.args.visitor_base}-{visitor}-{self.sends}"
        form: dict[str, str] = {"message": f"rehearsal message from visitor {visitor}", "turnstileToken": token}
        if channel == "email":
            form.update(email=f"visitor{visitor}@example.org", subject="Rehearsal")
        elif channel == "discord":
            form.update(handle=f"visitor{visitor}")
        body = json.dumps(form).encode()
        request = (
            f"POST /api/v1/profiles/{self.args.slug_prefix}{profile}/contact/{channel} HTTP/1.1\r\n"
            f"Host: {self.args.slug_prefix}{profile}.{self.args.base_domain}\r\n"
            f"User-Agent: {self.visitors.agent(visitor)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        await self._timed("contact", self.contacts, visitor, request, [visitor, profile, channel])

    async def _timed(self, kind: str, records: list[list[Any]], visitor: int, request: bytes, what: list[Any]) -> None:
        """One exchange from the visitor's address, recorded as [t_start, seconds, status, retry_after, port, *what,
        error]."""
        started = time.monotonic()
        status, headers, _size, local_port, error = await exchange(
            self.host, self.port, self.visitors.address(visitor), request
        )
        if error:
            self.errors[error.split(":")[0]] += 1
        self.done[kind] += 1
        elapsed = round(time.monotonic() - started, 4)
        records.append([round(started, 4), elapsed, status, "retry-after" in headers, local_port, *what, error])

    async def schedule(self, stop: asyncio.Event, rate: float, start) -> None:
        """Start `start(now)` `rate` times a second on a fixed schedule until `stop`."""
        if rate <= 0:
            return
        period = 1.0 / rate
        next_at = time.monotonic()
        for _ in itertools.count():
            if stop.is_set():
                return
            now = time.monotonic()
            if now < next_at:
                try:
                    await asyncio.wait_for(stop.wait(), next_at - now)
                    return
                except TimeoutError:
                    pass
            start(time.monotonic())
            next_at += period

    async def work(self, stop: asyncio.Event) -> None:
        channels = itertools.cycle(CHANNELS)

        def start_page(now: float) -> None:
            visitor, profile = self._visitor_for_page(now)
            self._spawn("page", self.page(visitor, profile))

        def start_contact(now: float) -> None:
            profile = self.random.randrange(self.args.profiles)
            self._spawn("contact", self.contact(next(channels), self.visitors.new(), profile))

        await asyncio.gather(
            self.schedule(stop, self.args.page_rate, start_page),
            self.schedule(stop, self.args.contact_rate, start_contact),
        )
        if self.tasks:  # let the answers in flight arrive (bounded: every exchange has its timeout)
            await asyncio.wait(list(self.tasks), timeout=TIMEOUT + 5)


async def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--page-rate", type=float, default=40.0, help="page visits a second")
    parser.add_argument("--contact-rate", type=float, default=3.0, help="contact sends a second")
    parser.add_argument("--profiles", type=int, default=100)
    parser.add_argument("--slug-prefix", default="rh-")
    parser.add_argument("--base-domain", default="hep.gg")
    parser.add_argument("--repeat-share", type=float, default=0.2, help="visits by a visitor seen just before")
    parser.add_argument("--max-inflight", type=int, default=400)
    args = parser.parse_args()
    load = HttpLoad(args)
    runner = Runner(args, load.sample)
    await runner.run(load.work)
    runner.write(
        {
            "kind": "http",
            "pages": load.pages,
            "contacts": load.contacts,
            "skipped": dict(load.skipped),
            "errors": dict(load.errors),
        }
    )


if __name__ == "__main__":
    run_main(main)
