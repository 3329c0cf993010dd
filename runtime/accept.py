"""Accepting connections without spinning when the process is out of file descriptors.

Tornado's accept handler (tornado.netutil.add_accept_handler) lets EMFILE escape:
the listening socket stays readable, so the loop calls it again at once, and each
turn logged a traceback (issue 18: 2.87 M lines, 242 MB in 25 s, 75 % CPU, /healthz
unreachable). Here an accept that fails for want of descriptors or memory takes the
socket out of the loop for a pause (10 ms doubling to 1 s, back to 10 ms after an
accept succeeds), and the refusals are counted into one log line per interval.
The connections wait in the kernel's backlog meanwhile; the header and idle
timeouts (runtime/http_server.py) are what free descriptors up.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop

log = logging.getLogger("hepgg.accept")

OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
PAUSE = (0.01, 1.0)  # first pause, ceiling (doubling in between)
LOG_INTERVAL = 10.0  # seconds between lines about refused accepts
ACCEPTS_PER_TURN = 128  # then let other callbacks run (Tornado uses its listen backlog, 128)


class AcceptBackoff:
    """Counts accepts refused for want of resources; says so at most once per LOG_INTERVAL."""

    def __init__(self) -> None:
        self.pause = PAUSE[0]
        self.refused = 0  # since the last log line
        self._logged_at = 0.0

    def refuse(self, error: OSError) -> float:
        """One more refusal; returns how long to pause accepting."""
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            log.error(
                "accept failed %d times in the last %.0fs (%s): pausing accepts, up to %.1fs at a time",
                self.refused,
                LOG_INTERVAL,
                errno.errorcode.get(error.errno or 0, str(error)),
                PAUSE[1],
            )
            self.refused = 0
        pause = self.pause
        self.pause = min(self.pause * 2, PAUSE[1])
        return pause

    def accepted(self) -> None:
        self.pause = PAUSE[0]


def add_accept_handler(
    sock: socket.socket, callback: Callable[[socket.socket, Any], None], backoff: AcceptBackoff
) -> Callable[[], None]:
    """As tornado.netutil.add_accept_handler, with `backoff` on EMFILE and its kin; returns the remover."""
    io_loop = IOLoop.current()
    state = {"removed": False, "paused": False}

    def resume() -> None:
        if not state["removed"]:
            state["paused"] = False
            io_loop.add_handler(sock, accept, IOLoop.READ)

    def accept(_fd: Any, _events: int) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            if state["removed"] or state["paused"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                state["paused"] = True
                io_loop.remove_handler(sock)
                io_loop.call_later(backoff.refuse(exc), resume)
                return
            backoff.accepted()
            callback(connection, address)

    def remove() -> None:
        if not state["removed"] and not state["paused"]:
            io_loop.remove_handler(sock)
        state["removed"] = True

    io_loop.add_handler(sock, accept, IOLoop.READ)
    return remove
