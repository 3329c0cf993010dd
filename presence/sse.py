"""The presence stream's wire format, written once: its route, its response head and its framing.

The stream is written by hand on detached connections (presence/stream.py), so
nothing of Tornado's response machinery applies and every byte is decided here:

- `STREAM_ROUTE` is the path pattern. Tornado routes it (handlers/presence.py),
  the connect fast path (presence/fast_path.py) matches the same pattern on the
  same path, and deploy/nginx.conf's location is tested against it.
- `response_head` is the head of every stream answer, streams and shed answers
  alike, with the headers every answer carries (render/security.py).
- `Event` is one message in both body framings (HTTP/1.0 close-delimited,
  HTTP/1.1 chunked); `ending` frames the last message and the end of the body
  (a jittered `retry:` hint when a stream is shed).
"""

from __future__ import annotations

import random
import re

from render.security import COMMON_HEADERS, NON_DOCUMENT_CSP

STREAM_PREFIX = "/api/v1/profiles/presence/"
STREAM_ROUTE = STREAM_PREFIX + r"([^/]*)/stream"  # the userID, still percent-encoded, is group 1
STREAM_PATH = re.compile(STREAM_ROUTE.encode())  # matched whole (fullmatch), as Tornado anchors its routes

NULL_PAYLOAD = b"null"
MAX_PAYLOAD = 16 * 1024
SHED_RETRY_MS = (5000, 20000)  # overload: come back later, spread out
# Shutdown: come back soon (to another replica), spread out. The upper bound keeps the whole gap (the wait, then
# connect to first event, up to ~3 s on a loaded machine) within 10 s: with 15 s, 200 of 584 reconnects in the
# rehearsal (deploy/rehearse) took longer than 10 s, up to 15.9 s.
DRAIN_RETRY_MS = (500, 6000)
# A stream that reached a replica as it began to drain has had nothing from it yet: its gap is already running
# (it was lost elsewhere) and another replica takes it at once. With the drain's 0.5-6 s, a listener drained by
# one replica that came back to the next one just as that one drained waited 10.1 s in all (CI's short rehearsal).
ARRIVED_DRAINING_RETRY_MS = (250, 1000)
# Every stream starts with a hint too: a stream lost without one (its replica killed, a network cut) is otherwise
# retried after the browser's fixed default (3 s in Chromium) all at once, or after whatever hint the listener
# last got (after a rolling restart, up to the drain's bound: 10.9-13.2 s gaps after a kill -9 in the rehearsal).
STREAM_RETRY_MS = (1000, 5000)


class Event:
    """An SSE message encoded once, in both framings; shared by every listener."""

    __slots__ = ("chunked", "raw")

    def __init__(self, raw: bytes):
        self.raw = raw  # HTTP/1.0 (close-delimited) bodies
        self.chunked = b"%x\r\n%b\r\n" % (len(raw), raw)  # HTTP/1.1 chunked bodies


PING = Event(b": ping\n\n")


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
    return _presence_message(payload)


def _presence_message(payload: bytes) -> Event:
    return Event(b"event: presence\ndata: " + payload + b"\n\n")


NULL_EVENT = _presence_message(NULL_PAYLOAD)  # no snapshot (never shared, expired or cleared)
# A stream's opening `retry:` hints, framed once: a new stream picks one at random (no formatting per connect).
STREAM_RETRY_HINTS = tuple(
    Event(b"retry: %d\n\n" % ms) for ms in range(STREAM_RETRY_MS[0], STREAM_RETRY_MS[1] + 1, 100)
)


def retry_hint(low_ms: int, high_ms: int) -> bytes:
    """A jittered `retry:` field, so shed browsers come back spread out, not all at once."""
    return b"retry: %d\n\n" % random.randint(low_ms, high_ms)


def ending(message: bytes, chunked: bool) -> bytes:
    """`message`, then the end of the body (the last chunk; a close-delimited body ends with the close)."""
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(message), message) if chunked else message


# Every stream answer's headers but Connection and framing (a HEAD gets exactly these).
STREAM_HEAD_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
    "Access-Control-Allow-Origin": "*",
    **COMMON_HEADERS,
    "Content-Security-Policy": NON_DOCUMENT_CSP,
}


def response_head(chunked: bool, *, keep_alive: bool = True) -> bytes:
    """The 200 head of a stream (`keep_alive=False`: of an answer that closes after its body, a shed)."""
    head = [
        b"HTTP/1.1 200 OK",
        *(f"{name}: {value}".encode() for name, value in STREAM_HEAD_HEADERS.items()),
        b"Connection: keep-alive" if keep_alive else b"Connection: close",
    ]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(head) + b"\r\n\r\n"


HEAD_CHUNKED = response_head(True)
HEAD_PLAIN = response_head(False)


def stream_opening(chunked: bool) -> bytes:
    """A stream's head and its opening `retry:`: when to come back should the stream be lost without a word."""
    hint = random.choice(STREAM_RETRY_HINTS)
    return (HEAD_CHUNKED + hint.chunked) if chunked else (HEAD_PLAIN + hint.raw)


_SHED_HEAD_CHUNKED = response_head(True, keep_alive=False)
_SHED_HEAD_PLAIN = response_head(False, keep_alive=False)


def shed_answer(chunked: bool, *, draining: bool = False) -> bytes:
    """The whole answer to a stream request we cannot take now: 200, a retry hint, the end.

    200 because browsers never retry an EventSource that got any other status. A draining worker gives a short
    hint (another replica takes the stream at once), an overloaded one the longer overload hint: a
    stream that reached a replica in the moment after its SIGTERM was told 5-20 s, and the rehearsal's listener
    waited 13.9 s in all, past its 10 s bound.
    """
    head = _SHED_HEAD_CHUNKED if chunked else _SHED_HEAD_PLAIN
    return head + ending(retry_hint(*(ARRIVED_DRAINING_RETRY_MS if draining else SHED_RETRY_MS)), chunked)
