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
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from handlers.presence import PresenceFastPath
from handlers.services import Services
from runtime.accept import AcceptBackoff, add_accept_handler
from runtime.app import make_app

Address = tuple[Any, ...]  # the peer's address, as the socket gives it


class FirstLookHTTPServer(HTTPServer):
    first_look: Callable[[IOStream], bool | None] | None = None
    header_timeout = 5.0  # seconds a new connection may stay silent

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._silent: dict[int, tuple[IOStream, Address, float]] = {}  # fd -> (stream, address, deadline)
        self._sweeping = False
        self.accept_backoff = AcceptBackoff()

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
    services: Services, *, json_logs: bool = False, header_timeout: float = 5.0, **params: Any
) -> HTTPServer:
    """The app's HTTPServer (`params` as for tornado's), with the SSE stream fast path."""
    server = FirstLookHTTPServer(make_app(services, json_logs=json_logs), **params)
    server.first_look = PresenceFastPath(services)
    server.header_timeout = header_timeout
    return server
