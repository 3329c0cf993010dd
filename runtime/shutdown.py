"""SIGTERM to exit within `--shutdown-grace`, whatever hangs.

The grace is spent in phases with hard deadlines (common/lifecycle.ShutdownBudget):
drain → close connections → flush → close → stop the embedded stores. From the
signal on, requests in progress are answered (with `Connection: close`) until the
connections phase is nearly over; only then are connections closed. A hung
store or upstream costs its phase's share; the worker then writes ONE line
saying how long it took and what could not be written. Should something still
hold the process past its deadline (a thread in a C call, a closer that ignores
cancellation, an exit handler joining a stuck thread), a watchdog thread writes
that line itself and ends the process with `os._exit`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from common.lifecycle import Lifecycle, ShutdownBudget, describe_unwritten
from runtime.http_server import FirstLookHTTPServer

log = logging.getLogger("hepgg.serve")

HARD_EXIT_CODE = 70  # EX_SOFTWARE: the process had to be cut off at its deadline


class ShutdownClock:
    """When SIGTERM arrived and how its grace is divided; shared by the supervisor and its workers."""

    def __init__(self, grace: float):
        self.budget = ShutdownBudget(grace)
        self.signalled_at: float | None = None

    def start(self) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()

    def left(self, offset: float) -> float:
        """Seconds until `offset` seconds after the signal (the whole offset before it arrives)."""
        if self.signalled_at is None:
            return offset
        return max(0.0, self.signalled_at + offset - time.monotonic())


class Watchdog:
    """Ends the process at a deadline unless it has ended by then (a daemon thread: it dies with the process)."""

    def __init__(self, seconds: float, lifecycle: Lifecycle, before_exit: Callable[[], None] | None = None):
        self.lifecycle = lifecycle
        self.before_exit = before_exit
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        try:  # read from this thread while the loop may still change the queues: exiting must not depend on it
            unwritten = describe_unwritten(self.lifecycle.unwritten())
        except Exception:
            unwritten = "unknown (the queues changed while being counted)"
        line = f"worker {os.getpid()}: shutdown overran its grace; exiting now; not written: {unwritten}"
        # Logging takes the handler's lock, which the stuck thread might hold: log from another thread, and
        # exit whether or not that returns.
        writer = threading.Thread(target=log.error, args=(line,), daemon=True)
        writer.start()
        writer.join(0.2)
        if self.before_exit is not None:
            try:
                self.before_exit()
            except Exception:
                pass
        os._exit(HARD_EXIT_CODE)


async def shutdown_worker(
    clock: ShutdownClock, server: FirstLookHTTPServer, lifecycle: Lifecycle, exit_by: float
) -> None:
    """The orderly part: each phase until its deadline (seconds after the signal), then one line."""
    budget = clock.budget
    drain_end = budget.drain
    connections_end = drain_end + budget.connections
    flush_end = connections_end + budget.flush
    server.stop()  # stop accepting; requests in progress go on
    server.start_draining()  # every response from now on says `Connection: close` and ends its connection
    await lifecycle.drain(clock.left(drain_end))  # draining: /readyz 503, streams shed, music may finish
    # Requests in progress (a contact send in delivery, a render) are answered, then the idle connections
    # are closed; a request still running when only the closing's share of the phase is left is cut.
    closing = budget.connections / 4
    running = await server.requests_finished(clock.left(connections_end - closing))
    if running:
        log.warning("%d requests still in progress at their shutdown deadline; closing their connections", running)
    try:
        await asyncio.wait_for(server.close_all_connections(), max(0.01, clock.left(connections_end)))
    except TimeoutError:
        log.warning("connections still open at shutdown; leaving them to the exit")
    await lifecycle.flush(clock.left(flush_end))
    failed = await lifecycle.close(budget=clock.left(exit_by))
    unwritten = lifecycle.unwritten()
    elapsed = budget.grace - clock.left(budget.grace)
    level = logging.ERROR if any(unwritten.values()) else logging.INFO
    log.log(
        level,
        "worker %d stopped in %.1fs (grace %.0fs); not written: %s%s",
        os.getpid(),
        elapsed,
        budget.grace,
        describe_unwritten(unwritten),
        f"; closers cut off: {', '.join(failed)}" if failed else "",
    )
