"""The two handler bases: HTML pages and the JSON API.

Both receive the process's `Services` through the route tuple (`initialize`
only stores it) and expose what they need as properties. Features raise `ApiError`
(status, visitor-facing message, headers) or translate their own domain errors
into it; `write_error` never shows a traceback or a log message to a visitor.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web
from pymongo.errors import ConnectionFailure as MongoUnreachable, ExecutionTimeout as MongoTimeout
from redis.exceptions import ConnectionError as RedisUnreachable, TimeoutError as RedisTimeout
from tornado.iostream import StreamClosedError

from handlers.services import Services
from render.security import COMMON_HEADERS, DOCUMENT_HEADERS, NON_DOCUMENT_CSP, STATIC_DOCUMENT_CSP

log = logging.getLogger("hepgg.handlers")

SECURITY_HEADERS = COMMON_HEADERS  # every response, streams and static files included

# A store that cannot be reached (down, restarting, not answering in time) is a 503 with
# Retry-After on every route, never a 500: the request was fine and will work again.
# (MongoUnreachable covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError; MongoTimeout
# is the client's timeoutMS running out server-side.)
STORE_OUTAGES = (MongoUnreachable, MongoTimeout, RedisUnreachable, RedisTimeout)
STORE_RETRY_AFTER = "5"  # seconds; a restarting store is usually back within a few


class BaseHandler(tornado.web.RequestHandler):
    services: Services

    def initialize(self, services: Services) -> None:
        self.services = services

    @property
    def client_ip(self) -> str:
        """The socket peer, or X-Forwarded-For's client when the peer is a trusted proxy."""
        peer = self.request.remote_ip or ""
        return self.services.trusted_proxies.client_ip(peer, self.request.headers.get("X-Forwarded-For"))

    _store_outage = False

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", NON_DOCUMENT_CSP)
        if self._store_outage:  # send_error() clears the headers and calls us again
            self.set_header("Retry-After", STORE_RETRY_AFTER)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 500 and isinstance(exc, STORE_OUTAGES):
            self._store_outage = True
            status_code = 503
        super().send_error(status_code, **kwargs)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # A path segment that is not UTF-8 names no profile or track: decoded with U+FFFD it fails
        # the handler's own id check and gets that endpoint's documented answer (404 "Not found",
        # "Profile not found", the music 400/404) instead of Tornado's generic 400.
        if name is None:  # path arguments; query and body arguments keep Tornado's strict decoding
            return value.decode("utf-8", errors="replace")
        return super().decode_argument(value, name)

    def log_exception(self, typ, value, tb) -> None:
        # Expected client-side ends are not server errors.
        if isinstance(value, StreamClosedError):
            return
        if isinstance(value, STORE_OUTAGES):  # one line, not a traceback per request during an outage
            log.warning(
                "%s %s answered 503: store unavailable (%s)",
                self.request.method,
                self.request.path,
                type(value).__name__,
            )
            return
        super().log_exception(typ, value, tb)


class PageHandler(BaseHandler):
    """HTML pages: short plain error pages, never a traceback.

    The default policy is the closed one every bare HTML answer (404, redirect) gets;
    the profile page replaces it with the policy for what it loads.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in DOCUMENT_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", STATIC_DOCUMENT_CSP)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        reason = tornado.httputil.responses.get(status_code, "Error")
        self.finish(
            f"<!doctype html><meta charset=utf-8><title>{status_code} {reason}</title><h1>{status_code} {reason}</h1>"
        )


class StaticHandler(tornado.web.StaticFileHandler):
    """/_static/ files (CSS, JS) with the headers every response carries."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)


class ApiError(tornado.web.HTTPError):
    """An API failure whose `message` is shown to the caller in the envelope."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code, reason=None)
        self.message = message
        self.headers = headers or {}


# Response headers a profile page on another origin may read.
CORS_EXPOSE = (
    "Content-Length, Content-Range, Accept-Ranges, Retry-After, ETag, "
    "X-Track-Title, X-Track-Artist, X-Track-Duration, X-Track-Album, X-Track-Artwork"
)


class ApiHandler(BaseHandler):
    """JSON API: the `{"ok": ...}` envelope and CORS for any origin.

    These endpoints are public and take no cookies, so `Access-Control-Allow-Origin: *`
    is safe and lets a profile on its own domain call them.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE)
        self.set_header("Cache-Control", "no-store")

    def options(self, *args: Any) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Content-Type, Range")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    def write_ok(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"ok": True, "data": data}, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_status(exc.status_code)
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif status_code == 404:
            message = "Not found"
        elif status_code == 405:
            message = "Method not allowed"
        elif status_code == 413:
            message = "Request body too large"
        elif status_code == 503:
            message = "Service temporarily unavailable"
        elif status_code < 500:
            message = "Bad request"
        else:
            message = "Internal error"
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"ok": False, "error": message}, separators=(",", ":")))
