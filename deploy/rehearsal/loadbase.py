"""What every load process of the rehearsal shares: options, the stop signal, the per-second timeline, results.

A load process is started by the rehearsal inside the load namespace (deploy/rehearsal/netns.py), one kind of
visitor per process (a process holds at most ~19,900 sockets here, and the visitors must not share one
event loop with the server's CPU budget in mind). It runs until SIGTERM or its `--seconds` bound, then
writes one JSON file: its counts, its raw records and a timeline sampled once a second, all stamped with
`time.monotonic()`, which every process on the machine shares (network namespaces do not change clocks),
so the rehearsal lines them up with its own event times.

Visitors are the way a browser would be: each has its own source address (the load namespace routes a
/17 to itself, see netns.VISITORS) and a User-Agent of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.rehearsal.netns import visitor_address  # noqa: E402

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 hepgg-rehearsal/{}"


def visitor_agent(n: int) -> str:
    """A User-Agent of visitor `n`: a browser's (never taken for a bot) that names the visitor."""
    return BROWSER_UA.format(n)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", default="", help="host:port of nginx")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results (JSON)")
    parser.add_argument("--seconds", type=float, required=True, help="hard bound on the run")
    parser.add_argument("--visitor-base", type=int, default=0, help="first visitor number (keeps processes apart)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def target(args: argparse.Namespace) -> tuple[str, int]:
    host, _, port = args.target.rpartition(":")
    return host, int(port)


class Visitors:
    """Hands out visitor numbers: an address and a User-Agent each."""

    def __init__(self, base: int):
        self.next = base

    def new(self) -> int:
        n = self.next
        self.next += 1
        return n

    @staticmethod
    def address(n: int) -> str:
        return visitor_address(n)

    @staticmethod
    def agent(n: int) -> str:
        return visitor_agent(n)


class Runner:
    """Runs `work(stop)` until SIGTERM/SIGINT or the deadline; samples `sample()` every second."""

    def __init__(self, args: argparse.Namespace, sample: Callable[[], dict[str, Any]]):
        self.args = args
        self.sample = sample
        self.timeline: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    async def _sampler(self) -> None:
        live = self.args.out.with_suffix(".live")
        while not self.stop.is_set():
            sample = {"t": round(time.monotonic(), 3), **self.sample()}
            self.timeline.append(sample)
            live.write_text(json.dumps(sample))  # the rehearsal follows progress (e.g. the SSE ramp) from it
            try:
                await asyncio.wait_for(self.stop.wait(), 1.0)
            except TimeoutError:
                pass

    async def run(self, work: Callable[[asyncio.Event], Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        loop.call_later(self.args.seconds, self.stop.set)
        sampler = asyncio.create_task(self._sampler())
        try:
            await work(self.stop)
        finally:
            self.stop.set()
            await sampler
            self.timeline.append({"t": round(time.monotonic(), 3), **self.sample()})

    def write(self, results: dict[str, Any]) -> None:
        results = {"started": self.started, "stopped": time.monotonic(), "timeline": self.timeline, **results}
        tmp = self.args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, separators=(",", ":")))
        tmp.replace(self.args.out)


def run_main(main: Callable[[], Any]) -> None:
    """asyncio.run with uvloop when installed (as the server uses it), and the whole fd limit."""
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of an HTTP/1.1 response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers
