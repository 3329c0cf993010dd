"""A worker's lifecycle: what to drain, flush and close when it stops, and whether it is draining.

The composition root (runtime/services.py) registers a drainer for every kind of
stream, a flusher for every batch of writes and a closer for everything it
starts. On SIGTERM the worker spends its grace in phases (`ShutdownBudget`):
drain (SSE streams get a retry hint and close, music streams may finish, requests
in progress are answered with `Connection: close`), close the connections (once
those requests are answered; one still running then is cut), flush (batched views
and plays are written), close (closers run last-in first-out), and the process
that started embedded stores stops them.
Each phase has a hard deadline, so a hung store, upstream or closer costs its
phase's share and no more. Whatever could not be written is reported by the
flushers (`unwritten`), for one log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("hepgg.lifecycle")

Closer = Callable[[], Awaitable[None]]
Drainer = Callable[[float], Awaitable[None]]  # gets the seconds it may take


class Flusher(Protocol):
    """Batched writes: `stop` writes what it can within `budget` seconds; `unwritten` counts what is left."""

    async def stop(self, budget: float) -> None: ...
    def unwritten(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class ShutdownBudget:
    """How the grace of one SIGTERM is spent, in seconds from the signal.

    Each later phase takes a share of the grace capped at a few seconds (they need seconds whatever
    the grace); the drain gets the rest. With the default 10 s: drain 3 s, connections 1 s, flush
    2.5 s, closers 1 s, embedded stores 1.5 s, the exit itself 1 s. The exit's share
    is what a loaded machine took here to reap killed workers and end the process (0.5-0.8 s at load 20).
    """

    grace: float

    @property
    def exit(self) -> float:
        """Kept at the end for the process to go (reaping, teardown, the kernel freeing a big process)."""
        return min(1.0, 0.15 * self.grace)

    @property
    def stores(self) -> float:
        """Stopping embedded stores (the process that started them, after its workers)."""
        return min(2.0, 0.15 * self.grace)

    @property
    def close(self) -> float:
        return min(1.0, 0.1 * self.grace)

    @property
    def flush(self) -> float:
        return min(3.0, 0.25 * self.grace)

    @property
    def connections(self) -> float:
        return min(1.0, 0.1 * self.grace)

    @property
    def drain(self) -> float:
        return max(0.0, self.grace - self.exit - self.stores - self.close - self.flush - self.connections)

    @property
    def worker(self) -> float:
        """When a worker under a supervisor must have exited: before the stores' and the exit's shares."""
        return self.grace - self.stores - self.exit

    @property
    def slack(self) -> float:
        """Kept between an orderly step's deadline and the watchdog's, for the exit itself."""
        return min(0.5, 0.1 * self.grace)


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False  # set on SIGTERM: /readyz says 503, new streams are shed
        self.closers: list[Closer] = []
        self.drainers: list[Drainer] = []
        self.flushers: list[Flusher] = []
        self._flushed = False

    def on_close(self, closer: Closer) -> None:
        self.closers.append(closer)

    def on_drain(self, drainer: Drainer) -> None:
        self.drainers.append(drainer)

    def on_flush(self, flusher: Flusher) -> None:
        self.flushers.append(flusher)

    async def drain(self, budget: float) -> None:
        """Mark the worker draining and run every drainer with the budget, together; never longer."""
        self.draining = True
        tasks = [asyncio.ensure_future(drainer(budget)) for drainer in self.drainers]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("error while draining streams: %r", task.exception())

    async def flush(self, budget: float) -> dict[str, int]:
        """Let every flusher write what it holds within `budget` seconds; returns what is left unwritten."""
        self._flushed = True
        tasks = [asyncio.ensure_future(flusher.stop(budget)) for flusher in self.flushers]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=budget)  # each stop keeps its own budget too
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=0.05)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("error while flushing: %r", task.exception())
        return self.unwritten()

    def unwritten(self) -> dict[str, int]:
        """What the flushers still hold, by kind (safe to call from another thread: it only counts)."""
        counts: dict[str, int] = {}
        for flusher in self.flushers:
            for kind, count in flusher.unwritten().items():
                counts[kind] = counts.get(kind, 0) + count
        return counts

    async def close(self, budget: float | None = None, timeout_each: float = 30.0) -> list[str]:
        """Flush (if not done yet), then run the closers last-in first-out; returns the names of any that failed.

        Each closer gets `timeout_each` seconds and all of them together `budget`, so a stuck
        closer cannot keep a worker from exiting on SIGTERM.
        """
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        if not self._flushed:
            await self.flush(timeout_each if budget is None else budget / 2)
        failed = []
        while self.closers:
            closer = self.closers.pop()
            name = getattr(closer, "__qualname__", repr(closer))
            allowed = timeout_each if deadline is None else max(0.05, min(timeout_each, deadline - loop.time()))
            try:
                await asyncio.wait_for(closer(), allowed)
            except TimeoutError:
                log.error("closing %s took over %.1fs; moving on", name, allowed)
                failed.append(name)
            except Exception:
                log.exception("error while closing %s", name)
                failed.append(name)
        return failed


def describe_unwritten(counts: dict[str, int]) -> str:
    """'3 views, 1 play' (kinds with nothing left are left out); 'nothing' when all was written."""
    parts = [f"{count} {kind if count != 1 else kind.rstrip('s')}" for kind, count in sorted(counts.items()) if count]
    return ", ".join(parts) if parts else "nothing"
