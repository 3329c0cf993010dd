"""Logging set-up and the access log (plain or JSON lines). No secrets, no query strings.

Refusals (429 and 503: rate limits, busy music slots, store outages, draining) come
in floods when someone attacks, and a line each was most of the log under attack
(issue 18: 28 lines/s from one address's 500 music GETs). The access log writes
the first refusal of a quiet spell as usual, then counts the rest into one line
per `REFUSAL_INTERVAL` (`RefusalSummary`); every other answer keeps its own line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.web import RequestHandler

access = logging.getLogger("hepgg.access")

REFUSED = frozenset({429, 503})  # statuses summarised rather than logged one by one
REFUSAL_INTERVAL = 10.0  # seconds between summary lines


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    # Drivers are chatty at INFO and may echo URIs; keep them at WARNING.
    for noisy in ("pymongo", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def level_for(status: int) -> int:
    if status < 400:
        return logging.INFO
    if status < 500:
        return logging.WARNING
    return logging.ERROR


class RefusalSummary:
    """Refused answers: the first of a quiet spell is logged as usual, the rest counted into one line per interval.

    The line says how many of each status, and the request line that was refused most. While refusals
    keep coming, one line per interval; an interval without any ends the spell (one timer, never one a request).
    """

    def __init__(self, json_lines: bool, interval: float):
        self.json_lines = json_lines
        self.interval = interval
        self.counts: Counter[int] = Counter()
        self.requests: Counter[str] = Counter()  # "GET host/path" -> refusals
        self.spell = False  # within an interval that began with a logged refusal

    def counted(self, status: int, method: str, host: str, path: str) -> bool:
        """True when this refusal is counted for the summary; False: log it as usual (it opens a spell)."""
        if self.spell:
            self.counts[status] += 1
            self.requests[f"{method} {host}{path}"] += 1
            return True
        self.spell = True
        IOLoop.current().call_later(self.interval, self._flush)
        return False

    def _flush(self) -> None:
        if not self.counts:
            self.spell = False  # a quiet interval: the next refusal is logged as usual
            return
        level = max(level_for(status) for status in self.counts)
        if access.isEnabledFor(level):
            (request, most), total = self.requests.most_common(1)[0], self.counts.total()
            if self.json_lines:
                access.log(level, json.dumps(self._record(request, most), separators=(",", ":")))
            else:
                statuses = ", ".join(f"{status} x {count}" for status, count in sorted(self.counts.items()))
                access.log(
                    level,
                    "%d more refused in the last %gs (%s); most: %s (%d)",
                    total,
                    self.interval,
                    statuses,
                    request,
                    most,
                )
        self.counts.clear()
        self.requests.clear()
        IOLoop.current().call_later(self.interval, self._flush)  # refusals may go on: the spell goes on

    def _record(self, request: str, most: int) -> dict[str, Any]:
        return {
            "ts": time.time(),
            "refused": {str(status): count for status, count in sorted(self.counts.items())},
            "seconds": self.interval,
            "most": {"request": request, "count": most},
        }


def access_logger(json_lines: bool) -> Callable[[RequestHandler], None]:
    """Tornado's log_function: one line per request (refusals summarised), the path without its query string."""
    refusals = RefusalSummary(json_lines, REFUSAL_INTERVAL)

    def log_request(handler: RequestHandler) -> None:
        request = handler.request
        status = handler.get_status()
        level = level_for(status)
        if not access.isEnabledFor(level):
            return
        if status in REFUSED and refusals.counted(status, request.method or "", request.host_name, request.path):
            return
        millis = 1000.0 * request.request_time()
        if json_lines:
            access.log(
                level,
                json.dumps(
                    {
                        "ts": time.time(),
                        "status": status,
                        "method": request.method,
                        "host": request.host_name,
                        "path": request.path,
                        "ms": round(millis, 2),
                        "ip": request.remote_ip,
                    },
                    separators=(",", ":"),
                ),
            )
        else:
            access.log(level, "%d %s %s%s %.2fms", status, request.method, request.host_name, request.path, millis)

    return log_request
