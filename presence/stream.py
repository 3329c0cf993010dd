"""One SSE listener on a detached connection, and the pre-encoded bytes it is sent.

The stream endpoint takes the socket over from Tornado's HTTP layer after the
request (`detach()`), so an open stream costs an IOStream and one small object
here: no RequestHandler, no future or timer per stream. Writes go straight to
the socket while nothing is queued; only a partial write falls back to the
IOStream's buffer, whose size is capped at `--sse-max-buffer` (a listener
that stops reading is cut off when it passes the cap).
"""

from __future__ import annotations

import logging
import random

from tornado.iostream import IOStream, SSLIOStream, StreamBufferFullError, StreamClosedError

log = logging.getLogger("hepgg.presence")


class Event:
    """An SSE message encoded once, in both framings; shared by every listener."""

    __slots__ = ("raw", "chunked")

    def __init__(self, raw: bytes):
        self.raw = raw  # HTTP/1.0 (close-delimited) bodies
        self.chunked = b"%x\r\n%b\r\n" % (len(raw), raw)  # HTTP/1.1 chunked bodies


PING = Event(b": ping\n\n")
NULL_PAYLOAD = b"null"
MAX_PAYLOAD = 16 * 1024


def presence_event(payload: bytes) -> Event | None:
    """The `event: presence` message for a published payload, or None if it is not a snapshot.

    The writer only publishes compact JSON objects or `null`; anything else
    (a line break would inject SSE fields) is dropped rather than forwarded.
    """
    if (
        len(payload) > MAX_PAYLOAD
        or b"\n" in payload
        or b"\r" in payload
        or not (payload == NULL_PAYLOAD or payload.startswith(b"{"))
    ):
        return None
    return Event(b"event: presence\ndata: " + payload + b"\n\n")


def retry_hint(low_ms: int, high_ms: int) -> bytes:
    """A jittered `retry:` field, so shed browsers come back spread out, not all at once."""
    return b"retry: %d\n\n" % random.randint(low_ms, high_ms)


def response_head(chunked: bool) -> bytes:
    head = [
        b"HTTP/1.1 200 OK",
        b"Content-Type: text/event-stream",
        b"Cache-Control: no-store",
        b"Connection: keep-alive",
        b"X-Accel-Buffering: no",  # a proxy in front must not hold events back
        b"Access-Control-Allow-Origin: *",
        b"X-Content-Type-Options: nosniff",
    ]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(head) + b"\r\n\r\n"


HEAD_CHUNKED = response_head(True)
HEAD_PLAIN = response_head(False)


class Listener:
    """A detached stream subscribed to one user's channel (`name` is the Redis channel)."""

    __slots__ = ("name", "stream", "sock", "chunked", "_on_gone")

    def __init__(self, name: str, stream: IOStream, chunked: bool, max_buffer: int, on_gone):
        self.name = name
        self.stream = stream
        # TLS needs the IOStream's own write path; plain sockets take the fast path.
        self.sock = None if isinstance(stream, SSLIOStream) else stream.socket
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
        ending = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(retry), retry)) if self.chunked else retry
        self.write(ending)
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
