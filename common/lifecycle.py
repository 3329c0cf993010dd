"""A worker's lifecycle: what to close when it stops, what to drain first, and whether it is draining.

The composition root (runtime/services.py) registers a closer for everything it
starts; `close()` runs them last-in first-out, each bounded, so one that hangs
cannot keep a worker from exiting. Drainers run when the server stops accepting
(SSE streams get a retry hint and close, music streams may finish within the grace).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("hepgg.lifecycle")

Closer = Callable[[], Awaitable[None]]
Drainer = Callable[[float], Awaitable[None]]


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False  # set on SIGTERM: /readyz says 503, new streams are shed
        self.closers: list[Closer] = []
        self.drainers: list[Drainer] = []

    def on_close(self, closer: Closer) -> None:
        self.closers.append(closer)

    def on_drain(self, drainer: Drainer) -> None:
        self.drainers.append(drainer)

    async def drain(self, grace: float) -> None:
        """Mark the worker draining and run every drainer with the grace period, together."""
        self.draining = True
        results = await asyncio.gather(*(drainer(grace) for drainer in self.drainers), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("error while draining streams: %r", result)

    async def close(self, timeout_each: float = 30.0) -> list[str]:
        """Run the closers last-in first-out; returns the names of any that failed or hung.

        Each gets `timeout_each` seconds, so one stuck closer cannot keep a worker from exiting on SIGTERM.
        """
        failed = []
        while self.closers:
            closer = self.closers.pop()
            name = getattr(closer, "__qualname__", repr(closer))
            try:
                await asyncio.wait_for(closer(), timeout_each)
            except TimeoutError:
                log.error("closing %s took over %.0fs; moving on", name, timeout_each)
                failed.append(name)
            except Exception:
                log.exception("error while closing %s", name)
                failed.append(name)
        return failed
