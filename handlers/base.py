"""The two handler bases: HTML pages and the JSON API.

Both receive the worker's `Services` through the route tuple (`initialize`
only stores it) and reach each service as a typed attribute. Failures are
mapped to answers in one place (handlers/errors.py); the bases only write the
answer in their format, and `write_error` never shows a traceback or a log
message to a visitor.
"""

from __future__ import annotations

import json
import logging
from http.client import responses
from types import TracebackType
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from handlers.errors import ApiError, ErrorAnswer, answer_for
from handlers.services import Services
from render.security import COMMON_HEADERS, DOCUMENT_HEADERS, NON_DOCUMENT_CSP, STATIC_DOCUMENT_CSP
from store.errors import describe_error
from store.outages import is_store_outage

__all__ = ["NON_DOCUMENT_HEADERS", "ApiError", "ApiHandler", "BaseHandler", "PageHandler", "Route", "StaticHandler"]

log = logging.getLogger("hepgg.handlers")

# A route: a path pattern and its handler class (or, for the SSE stream, a callable taking the request).
Route = tuple[str, Any]


# What every answer that is not an HTML document carries (API, images, audio, the SSE stream's errors).
NON_DOCUMENT_HEADERS = {**COMMON_HEADERS, "Content-Security-Policy": NON_DOCUMENT_CSP}


def allowed_methods(handler: type[tornado.web.RequestHandler]) -> str:
    """The methods a handler class implements (a 405's Allow header, RFC 9110 §15.5.6)."""
    base = tornado.web.RequestHandler
    return ", ".join(
        method
        for method in handler.SUPPORTED_METHODS
        if getattr(handler, method.lower(), None) is not getattr(base, method.lower(), None)
    )


class BaseHandler(tornado.web.RequestHandler):
    services: Services
    _error: ErrorAnswer | None = None

    def initialize(self, services: Services) -> None:
        self.services = services

    @property
    def client_ip(self) -> str:
        """The socket peer, or X-Forwarded-For's client when the peer is a trusted proxy."""
        peer = self.request.remote_ip or ""
        return self.services.trusted_proxies.client_ip(peer, self.request.headers.get("X-Forwarded-For"))

    @property
    def request_scheme(self) -> str:
        """http or https as the visitor used it: X-Forwarded-Proto counts only from a trusted proxy."""
        peer = self.request.remote_ip or ""
        return self.services.trusted_proxies.scheme(
            peer, self.request.headers.get("X-Forwarded-Proto"), self.request.protocol
        )

    def set_default_headers(self) -> None:
        for name, value in NON_DOCUMENT_HEADERS.items():
            self.set_header(name, value)
        if self._error is not None:  # send_error() clears the headers and calls us again
            for name, value in self._error.headers.items():
                self.set_header(name, value)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        allow = allowed_methods(type(self)) if status_code == 405 else ""  # a 404 or 429 needs no Allow
        self._error = answer_for(status_code, exc, allow=allow)
        if self._error.reason:
            kwargs["reason"] = self._error.reason
        super().send_error(self._error.status, **kwargs)

    @property
    def error_answer(self) -> ErrorAnswer:
        """The answer being sent (inside write_error)."""
        return self._error or answer_for(self.get_status(), None)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # A path segment that is not UTF-8 names no profile or track: decoded with U+FFFD it fails
        # the handler's own id check and gets that endpoint's documented answer (404 "Not found",
        # "Profile not found", the music 400/404) instead of Tornado's generic 400.
        if name is None:  # path arguments; query and body arguments keep Tornado's strict decoding
            return value.decode("utf-8", errors="replace")
        return super().decode_argument(value, name)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Expected client-side ends are not server errors.
        if isinstance(value, StreamClosedError):
            return
        if is_store_outage(value):  # one line, not a traceback per request during an outage
            log.warning(
                "%s %s answered 503: store unavailable (%s)",
                self.request.method,
                self.request.path,
                describe_error(value),
            )
            return
        if not isinstance(value, tornado.web.HTTPError) and answer_for(500, value).expected:
            return  # a domain refusal (contact limits, a failed render already logged): not a server error
        super().log_exception(typ, value, tb)


class PageHandler(BaseHandler):
    """HTML pages: short plain error pages, never a traceback.

    The default policy is the closed one every bare HTML answer (404, redirect) gets;
    the profile page replaces it with the policy for what it loads.
    """

    @property
    def profile_host(self) -> str:
        """The Host as profiles are looked up: lower-cased, no port, no FQDN dot. "alice.hep.gg." names the
        same host as "alice.hep.gg", and an empty port ("alice.hep.gg:", RFC 3986 §3.2.3) names no port
        (Tornado leaves its colon on)."""
        return self.request.host_name.removesuffix(":").rstrip(".")

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in DOCUMENT_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", STATIC_DOCUMENT_CSP)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        reason = responses.get(status_code, "Error")
        self.finish(
            f"<!doctype html><meta charset=utf-8><title>{status_code} {reason}</title><h1>{status_code} {reason}</h1>"
        )


class StaticHandler(tornado.web.StaticFileHandler):
    """/_static/ files (CSS, JS) with the headers every response carries."""

    def set_default_headers(self) -> None:
        for name, value in COMMON_HEADERS.items():
            self.set_header(name, value)


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
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"ok": False, "error": self.error_answer.message}, separators=(",", ":")))
