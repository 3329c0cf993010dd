"""The worker's HTTP server: Tornado's, with a look at each new connection before HTTP/1 parsing.

`first_look(stream)` may take a new connection whole (True) and Tornado's HTTP
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
`per_address` open connections, SSE streams included; a trusted proxy's are not
counted (its clients are many). Past that a new connection gets a bare 503 with
Retry-After and is closed before anything is parsed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from common.client_ip import TrustedProxies, rate_limit_subject
from handlers.presence import PresenceFastPath
from handlers.services import Services
from runtime.accept import AcceptBackoff, add_accept_handler
from runtime.app import make_app

log = logging.getLogger("hepgg.http")

Address = tuple[Any, ...]  # the peer's address, as the socket gives it
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
REFUSAL_LOG_INTERVAL = 10.0  # seconds between lines about refused connections


class CountedIOStream(IOStream):
    """An IOStream that says when its descriptor is closed, whoever closes it (the per-address count)."""

    on_close_fd: Callable[[], None] | None = None

    def close_fd(self) -> None:
        try:
            super().close_fd()
        finally:
            release, self.on_close_fd = self.on_close_fd, None
            if release is not None:
                release()


class FirstLookHTTPServer(HTTPServer):
    first_look: Callable[[IOStream], bool | None] | None = None
    header_timeout: float  # seconds a new connection may stay silent (set by make_http_server)
    per_address: int  # open connections per client address, IPv6: its /64 (set by make_http_server)
    trusted_proxies = TrustedProxies(())

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._silent: dict[int, tuple[IOStream, Address, float]] = {}  # fd -> (stream, address, deadline)
        self._sweeping = False
        self.accept_backoff = AcceptBackoff()
        self.open_by_address: dict[str, int] = {}
        self.refused_connections = 0
        self._refusals_logged_at = 0.0

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        """Tornado's (no TLS here: a proxy terminates it), counting connections per client address."""
        assert self.ssl_options is None
        peer = address[0] if isinstance(address, tuple) and address else ""
        subject = rate_limit_subject(peer) if peer and not self.trusted_proxies.trusts(peer) else None
        if subject is not None:
            if self.open_by_address.get(subject, 0) >= self.per_address:
                self._refuse(connection, subject)
                return
            self.open_by_address[subject] = self.open_by_address.get(subject, 0) + 1
        stream = CountedIOStream(connection, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
        if subject is not None:
            stream.on_close_fd = functools.partial(self._release_address, subject)
        self.handle_stream(stream, address)

    def _release_address(self, subject: str) -> None:
        left = self.open_by_address.get(subject, 0) - 1
        if left > 0:
            self.open_by_address[subject] = left
        else:
            self.open_by_address.pop(subject, None)

    def _refuse(self, connection: socket.socket, subject: str) -> None:
        with contextlib.suppress(OSError):
            connection.setblocking(False)
            connection.send(TOO_MANY_CONNECTIONS)
        connection.close()
        self.refused_connections += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSAL_LOG_INTERVAL:
            self._refusals_logged_at = now
            log.warning(
                "refused %d connections in all: %s (among others) holds %d, the most one address may",
                self.refused_connections,
                subject,
                self.per_address,
            )

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """As Tornado's, with an accept handler that pauses instead of spinning on EMFILE."""
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = add_accept_handler(sock, self._handle_connection, self.accept_backoff)

    def handle_stream(self, stream: IOStream, address: Address) -> None:
        verdict = self.first_look(stream) if self.first_look is not None else False
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
        if self.first_look(stream) is not True:  # not ours, or woken by an error/EOF: Tornado answers it
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

    async def close_all_connections(self) -> None:
        for fd in list(self._silent):
            self._release(fd)[0].close()
        await super().close_all_connections()


def make_http_server(
    services: Services,
    *,
    json_logs: bool = False,
    header_timeout: float,
    connections_per_address: int,
    **params: Any,
) -> HTTPServer:
    """The app's HTTPServer (`params` as for tornado's), with the SSE stream fast path."""
    server = FirstLookHTTPServer(make_app(services, json_logs=json_logs), **params)
    server.first_look = PresenceFastPath(services)
    server.header_timeout = header_timeout
    server.per_address = connections_per_address
    server.trusted_proxies = services.trusted_proxies
    return server
