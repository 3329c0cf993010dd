"""The worker's HTTP server: Tornado's, with a look at each new connection before HTTP/1 parsing.

`first_look(stream, address)` may take a new connection whole (True) and Tornado's HTTP
layer then never sees it; that is how SSE stream requests skip per-request
machinery during connect storms (presence/fast_path.py). False hands the
connection to Tornado as usual. None means no byte has arrived yet (a client
that connects, then writes): the server looks once more when the socket turns
readable. A connection still silent after `header_timeout` is closed (issue 18:
silent sockets were held 85 s each and ran the process out of descriptors); one
sweep timer serves all waiting connections. Once bytes arrive, Tornado's
`idle_connection_timeout` bounds the rest of the request head and each idle
keep-alive wait. Accepting backs off when descriptors run out (runtime/accept.py).
One client address (IPv6: its /64, as the rate limits count) may hold at most
`--connections-per-address` open connections, SSE streams included
(common/address_caps.py); a trusted proxy's are not counted here (its clients
are many: a stream through it counts against the forwarded client when it
opens, handlers/presence.py). Past that a new connection gets a bare 503 with
Retry-After and is closed before anything is parsed.

On SIGTERM (runtime/shutdown.py) the server drains: `start_draining` makes every
response from then on, those of requests already in progress included, say
`Connection: close` and end its connection, so a keep-alive client (nginx's
upstream pool) takes its next request to another replica; `requests_finished`
waits for the requests in progress to be answered; only then are the idle
connections closed. (The rehearsal, deploy/rehearse, measured closing them all at
once: a contact POST still in delivery was cut and nginx, which does not retry a
POST, answered 502: 1 in the short run, 29 in the full one.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from common.address_caps import AddressCaps, CountedIOStream
from handlers.presence import PresenceFastPath
from handlers.services import Services
from runtime.accept import AcceptBackoff, add_accept_handler
from runtime.app import make_app

Address = tuple[Any, ...]  # the peer's address, as the socket gives it
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class _Tracked(httputil.HTTPMessageDelegate):
    """The app's delegate for one request, marking its connection busy from the request's head on.

    The mark goes when the connection's next request starts (Tornado starts one only once the response
    is finished) or the connection closes: `FirstLookHTTPServer.start_request` and `on_close`."""

    __slots__ = ("connection", "delegate", "request", "server")

    def __init__(
        self,
        server: FirstLookHTTPServer,
        connection: object,
        request: httputil.HTTPConnection,
        delegate: httputil.HTTPMessageDelegate,
    ):
        self.server = server
        self.connection = connection
        self.request = request
        self.delegate = delegate

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        self.server.started(self.connection, self.request)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class FirstLookHTTPServer(HTTPServer):
    first_look: Callable[[IOStream, Address], bool | None] | None = None
    header_timeout: float  # seconds a new connection may stay silent (set by make_http_server)
    caps: AddressCaps  # open connections per client address (set by make_http_server)

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._silent: dict[int, tuple[IOStream, Address, float]] = {}  # fd -> (stream, address, deadline)
        self._sweeping = False
        self.accept_backoff = AcceptBackoff()
        self.busy: dict[object, httputil.HTTPConnection] = {}  # connection -> its request in progress
        self.draining = False
        self._all_answered = asyncio.Event()  # set while draining once no request is in progress

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        """Tornado's (no TLS here: a proxy terminates it), counting connections per client address."""
        assert self.ssl_options is None
        subject = self.caps.peer_subject(address[0] if isinstance(address, tuple) and address else "")
        if subject is not None and not self.caps.take(subject):
            with contextlib.suppress(OSError):
                connection.setblocking(False)
                connection.send(TOO_MANY_CONNECTIONS)
            connection.close()
            return
        stream = CountedIOStream(connection, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
        if subject is not None:
            stream.subject = subject
            stream.on_close_fd = functools.partial(self.caps.release, subject)
        self.handle_stream(stream, address)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """As Tornado's, with an accept handler that pauses instead of spinning on EMFILE."""
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = add_accept_handler(sock, self._handle_connection, self.accept_backoff)

    @property
    def silent_connections(self) -> int:
        """Accepted connections that have not sent a byte yet (waiting for their first look)."""
        return len(self._silent)

    def handle_stream(self, stream: IOStream, address: Address) -> None:
        verdict = self.first_look(stream, address) if self.first_look is not None else False
        if verdict is None:
            fd = stream.socket.fileno()
            self._silent[fd] = (stream, address, time.monotonic() + self.header_timeout)
            IOLoop.current().add_handler(fd, self._readable, IOLoop.READ)
            self._schedule_sweep()
        elif not verdict:
            super().handle_stream(stream, address)

    def _readable(self, fd: int, _events: int) -> None:
        stream, address, _ = self._release(fd)
        assert self.first_look is not None  # only set when a first look can answer None
        if self.first_look(stream, address) is not True:  # not ours, or woken by an error/EOF: Tornado answers it
            super().handle_stream(stream, address)

    def _release(self, fd: int) -> tuple[IOStream, Address, float]:
        IOLoop.current().remove_handler(fd)
        return self._silent.pop(fd)

    def _schedule_sweep(self) -> None:
        if not self._sweeping:
            self._sweeping = True
            IOLoop.current().call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        self._sweeping = False
        now = time.monotonic()
        for fd in [fd for fd, (_, _, deadline) in self._silent.items() if deadline <= now]:
            self._release(fd)[0].close()  # sent nothing: its descriptor is worth more to someone else
        if self._silent:
            self._schedule_sweep()

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        self._answered(server_conn)  # Tornado reads a connection's next request once the last one is answered
        return _Tracked(self, server_conn, request_conn, super().start_request(server_conn, request_conn))

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        self._answered(server_conn)

    def started(self, server_conn: object, request_conn: httputil.HTTPConnection) -> None:
        self.busy[server_conn] = request_conn
        if self.draining:  # a request on a kept-alive connection, answered with `Connection: close`
            self._all_answered.clear()

    def _answered(self, server_conn: object) -> None:
        if self.busy.pop(server_conn, None) is not None and self.draining and not self.busy:
            self._all_answered.set()

    def start_draining(self) -> None:
        """From now on every response says `Connection: close` and ends its connection (in-progress ones too)."""
        self.draining = True
        self.conn_params.no_keep_alive = True  # requests whose head is read from now on
        for request in self.busy.values():
            # Read before the drain: Tornado decided keep-alive from their heads. Its own flag is the one
            # switch that makes it both send `Connection: close` (if the head is not written yet) and close.
            if isinstance(request, HTTP1Connection):
                request._disconnect_on_finish = True
        if not self.busy:
            self._all_answered.set()

    async def requests_finished(self, within: float) -> int:
        """Wait up to `within` seconds for the requests in progress to be answered; returns how many are not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), max(0.0, within))
        return len(self.busy)

    async def close_all_connections(self) -> None:
        for fd in list(self._silent):
            self._release(fd)[0].close()
        await super().close_all_connections()


def make_http_server(
    services: Services,
    *,
    json_logs: bool = False,
    header_timeout: float,
    **params: Any,
) -> FirstLookHTTPServer:
    """The app's HTTPServer (`params` as for tornado's), with the SSE stream fast path."""
    server = FirstLookHTTPServer(make_app(services, json_logs=json_logs), **params)
    server.first_look = PresenceFastPath(services)
    server.header_timeout = header_timeout
    server.caps = services.address_caps
    return server
