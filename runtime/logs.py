"""Logging set-up and the access log (plain or JSON lines). No secrets, no query strings."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from tornado.web import RequestHandler

access = logging.getLogger("hepgg.access")


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    # Drivers are chatty at INFO and may echo URIs; keep them at WARNING.
    for noisy in ("pymongo", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def access_logger(json_lines: bool) -> Callable[[RequestHandler], None]:
    """Tornado's log_function: one line per request, the path without its query string."""

    def log_request(handler: RequestHandler) -> None:
        request = handler.request
        status = handler.get_status()
        if status < 400:
            level = logging.INFO
        elif status < 500:
            level = logging.WARNING
        else:
            level = logging.ERROR
        if not access.isEnabledFor(level):
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
