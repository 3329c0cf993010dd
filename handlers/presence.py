"""Live Discord presence: the one-shot snapshot and the SSE stream.

The snapshot is an ordinary API handler. The stream is not a RequestHandler:
Tornado's router calls `PresenceStream` with the parsed request, which takes
the connection over (`detach()`) and hands the bare IOStream to the hub.
That keeps an open stream at a few KiB and makes connection set-up cheap,
which is what reconnect storms cost (see docs/presence.md for the numbers).
The stream's route, head and framing are presence/sse.py's.
"""

from __future__ import annotations

import json
import logging
from http.client import responses
from typing import Any

from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, HTTPServerRequest, ResponseStartLine
from tornado.iostream import IOStream

from handlers.base import NON_DOCUMENT_HEADERS, ApiHandler
from handlers.errors import ApiError, message_for
from handlers.services import Services
from presence.fast_path import NOTHING_YET, consume, peek_stream_request
from presence.shed import shed
from presence.snapshot import SnapshotError, check_user_id, presence_key
from presence.sse import STREAM_HEAD_HEADERS, STREAM_ROUTE
from store.redis_connect import REDIS_ERRORS, describe_error

log = logging.getLogger("hepgg.presence")


def parse_user_id(raw: str | bytes | None) -> str:
    """The path's userID, or ApiError(400) when it is missing, blank or unusable."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "userID invalid") from None
    if raw is None or not raw.strip():
        raise ApiError(400, "userID required")
    try:
        return check_user_id(raw)
    except SnapshotError:
        raise ApiError(400, "userID invalid") from None


class PresenceSnapshotHandler(ApiHandler):
    """GET /api/v1/profiles/presence/<userID>: {"presence": snapshot | null}.

    With Redis unreachable there is no cached snapshot to give, which the spec's
    answer already covers: null, as for an empty or expired cache (the card hides).
    """

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        if self.request.method not in ("GET", "HEAD"):
            return super().decode_argument(value, name)  # a preflight answers for any id
        return parse_user_id(value)  # bytes that are not UTF-8: 400 "userID invalid", as the stream says

    async def get(self, user_id: str) -> None:  # already checked by decode_argument
        try:
            snapshot = await self.services.presence.read(user_id)
        except REDIS_ERRORS as exc:
            log.warning("presence snapshot unavailable (%s); answering null", describe_error(exc))
            snapshot = None
        self.write_ok({"presence": snapshot})

    head = get  # Tornado sends the headers of the GET answer, without its body


class PresenceStream:
    """GET /api/v1/profiles/presence/<userID>/stream, called by Tornado's router as a plain callable."""

    def __call__(
        self,
        request: HTTPServerRequest,
        *,
        path_args: list[bytes],
        path_kwargs: dict[str, bytes],
        target_kwargs: dict[str, Any],
    ) -> None:
        services: Services = target_kwargs["services"]
        if request.method == "OPTIONS":
            return _answer(
                request,
                204,
                b"",
                {"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS", "Access-Control-Max-Age": "86400"},
            )
        if request.method not in ("GET", "HEAD"):
            return _answer_error(request, 405, message_for(405), {"Allow": "GET, HEAD, OPTIONS"})
        try:
            user_id = parse_user_id(path_args[0] if path_args else None)
        except ApiError as exc:
            return _answer_error(request, exc.status_code, exc.message)
        if request.method == "HEAD":
            return _answer_head(request)
        connection = request.connection
        assert isinstance(connection, HTTP1Connection)
        peer, forwarded_for = request.remote_ip or "", request.headers.get("X-Forwarded-For")
        open_stream(services, connection.detach(), user_id, request.version == "HTTP/1.1", peer, forwarded_for)


class PresenceFastPath:
    """Called by the HTTP server with each new connection: takes it if it is a complete stream request.

    See presence/fast_path.py. Returns False, having read nothing, for anything
    the routed `PresenceStream` should answer instead (an invalid userID gets its 400 there).
    """

    def __init__(self, services: Services):
        self.services = services

    def __call__(self, stream: IOStream, address: Any) -> bool | None:
        """True: taken; False: Tornado's; None: nothing has arrived yet, ask again when the socket is readable."""
        request = peek_stream_request(stream)
        if request is NOTHING_YET:
            return None
        if request is None:
            return False
        try:
            user_id = parse_user_id(request.user_id)
        except ApiError:
            return False
        try:
            consume(stream.socket, request.header_length)
        except OSError:
            stream.close()
            return True
        peer = address[0] if isinstance(address, tuple) and address else ""
        open_stream(self.services, stream, user_id, request.chunked, peer, request.forwarded_for)
        return True


def open_stream(
    services: Services, stream: IOStream, user_id: str, chunked: bool, peer: str, forwarded_for: str | None
) -> None:
    """A detached connection becomes a listener, or is shed with a retry hint when we cannot take it: the
    worker is draining or holds its most streams, the client's address opens streams faster than its rate,
    or (through a trusted proxy) the forwarded client's address holds its share of connections
    (common/address_caps.py)."""
    hub = services.presence.hub
    if services.draining or hub.draining:
        return shed(stream, chunked, draining=True)
    if hub.listener_count >= hub.max_streams:
        return shed(stream, chunked)
    caps = services.address_caps
    subject = caps.stream_subject(stream, peer, forwarded_for)
    if subject is not None:
        if not caps.hold(stream, subject, "SSE streams"):  # (a connection counted when accepted is not twice)
            return shed(stream, chunked)
        if not caps.may_open_stream(subject):
            return services.presence.held_sheds.later(stream, chunked)  # presence/shed.py: why it waits
    stream.set_nodelay(True)
    hub.add(presence_key(user_id), stream, chunked)


def _answer(request: HTTPServerRequest, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
    """A short non-stream answer (an error, a preflight) with the headers every API answer carries."""
    headers = HTTPHeaders({**NON_DOCUMENT_HEADERS, "Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"})
    if body:
        headers["Content-Type"] = "application/json; charset=utf-8"
    headers["Content-Length"] = str(len(body))
    for name, value in (extra or {}).items():
        headers[name] = value
    connection = request.connection
    assert connection is not None
    if request.method == "HEAD":
        body = b""  # the headers GET would get (Content-Length included), no body
    connection.write_headers(ResponseStartLine("HTTP/1.1", status, responses.get(status, "Error")), headers, body)
    connection.finish()


def _answer_head(request: HTTPServerRequest) -> None:
    """HEAD of a stream: the head a GET would get (RFC 9110 §9.3.2), no body, no listener."""
    connection = request.connection
    assert connection is not None
    connection.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"), HTTPHeaders(STREAM_HEAD_HEADERS))
    connection.finish()


def _answer_error(request: HTTPServerRequest, status: int, message: str, extra: dict[str, str] | None = None) -> None:
    _answer(request, status, json.dumps({"ok": False, "error": message}, separators=(",", ":")).encode(), extra)


ROUTES = [
    (STREAM_ROUTE, PresenceStream()),
    (r"/api/v1/profiles/presence/([^/]*)", PresenceSnapshotHandler),
]
