"""One SSE listener on a detached connection (the bytes it is sent are framed in presence/sse.py).

The stream endpoint takes the socket over from Tornado's HTTP layer after the
request (`detach()`), so an open stream costs an IOStream and one small object
here: no RequestHandler, no future or timer per stream. Writes go straight to
the socket while nothing is queued; only a partial write falls back to the
IOStream's buffer, whose size is capped at `--sse-max-buffer` (a listener
that stops reading is cut off when it passes the cap).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from tornado.iostream import IOStream, SSLIOStream, StreamBufferFullError, StreamClosedError

from presence.sse import Event, ending

log = logging.getLogger("hepgg.presence")


class Listener:
    """A detached stream subscribed to one user's channel (`name` is the Redis channel)."""

    __slots__ = ("_on_gone", "chunked", "name", "sock", "stream")

    def __init__(
        self, name: str, stream: IOStream, chunked: bool, max_buffer: int, on_gone: Callable[[Listener], None]
    ):
        self.name = name
        self.stream = stream
        # TLS needs the IOStream's own write path; plain sockets take the fast path.
        self.sock: socket.socket | None = None if isinstance(stream, SSLIOStream) else stream.socket
        self.chunked = chunked
        self._on_gone = on_gone
        stream.max_write_buffer_size = max_buffer
        stream.set_close_callback(self._closed)  # also makes the IOStream watch for the peer's EOF

    def _closed(self) -> None:
        self._on_gone(self)

    @property
    def open(self) -> bool:
        return not self.stream.closed()

    def send(self, event: Event) -> None:
        self.write(event.chunked if self.chunked else event.raw)

    def write(self, data: bytes) -> None:
        stream = self.stream
        if stream.closed():
            return
        if self.sock is not None and not stream.writing():
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                stream.close()
                return
            if sent == len(data):
                return
            data = data[sent:]
        try:
            stream.write(data)
        except StreamBufferFullError:
            log.info("SSE listener on %s stopped reading; disconnecting", self.name)
            stream.close()
        except StreamClosedError:
            pass

    def shed(self, retry: bytes) -> None:
        """Send a retry hint, end the body, and close once it is flushed."""
        stream = self.stream
        if stream.closed():
            return
        self.write(ending(retry, self.chunked))
        if stream.closed():
            return
        if stream.writing():
            stream.max_write_buffer_size = None
            try:
                stream.write(b"").add_done_callback(lambda _f: stream.close())
            except StreamClosedError:
                pass
        else:
            stream.close()
