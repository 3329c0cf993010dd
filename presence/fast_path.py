"""Open SSE streams without Tornado's HTTP/1 machinery when the whole request is already here.

A connect storm (every browser reconnecting after a deploy) is the costliest
thing the stream endpoint does, and most of a connect's CPU was Tornado's, not
ours: an HTTP1ServerConnection and its coroutine, a header-timeout timer, the
header parser, an HTTPServerRequest, the router, then `detach()`. Yet a stream
request is one GET line and headers we never read.

So for each new plain-TCP connection the server peeks (MSG_PEEK) at what has
arrived. If it is one complete request `GET /api/v1/profiles/presence/<id>/stream`
(HTTP/1.0 or 1.1, no body, a valid userID), the header bytes are consumed and
the IOStream goes straight to the hub, exactly as the routed handler would
(X-Forwarded-For included: through a trusted proxy a stream counts against the
forwarded client's address, common/address_caps.py).
Anything else (not arrived yet, another path or method, a body, an odd header
line, a bad userID, TLS) is left untouched for Tornado, which answers it as
before: this is only a shortcut for the common case, never a second parser
with its own rules.
"""

from __future__ import annotations

import enum
import re
import socket
from typing import Literal, NamedTuple
from urllib.parse import unquote_to_bytes

from tornado.iostream import IOStream, SSLIOStream

from presence.sse import STREAM_PATH, STREAM_PREFIX

PEEK_BYTES = 8192  # a stream request with cookies fits; a larger one takes the ordinary path
PREFIX = b"GET " + STREAM_PREFIX.encode()
HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t -~\x80-\xff]*")
BODY_HEADERS = (b"content-length", b"transfer-encoding")
FORWARDED_FOR = b"x-forwarded-for"
HTTP_WHITESPACE = b" \t"  # what Tornado strips around a header value


class StreamRequest(NamedTuple):
    user_id: bytes  # raw: percent-decoded, not yet UTF-8 decoded or checked
    chunked: bool  # HTTP/1.1: the body is chunked; HTTP/1.0: it ends with the close
    header_length: int  # bytes to consume before the connection is the stream's
    forwarded_for: str | None = None  # X-Forwarded-For as Tornado would read it (several lines: joined by ",")


class NothingYet(enum.Enum):
    NOTHING_YET = "nothing yet"


NOTHING_YET = NothingYet.NOTHING_YET


def parse_stream_request(data: bytes) -> StreamRequest | None:
    """The complete, bodiless stream GET at the start of `data`; None for anything else."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    # The routed pattern, on the path as Tornado splits it off the target (before any `?`).
    match = STREAM_PATH.fullmatch(parts[1].partition(b"?")[0])
    if match is None:
        return None
    forwarded: list[str] = []
    for line in lines[1:]:
        if not HEADER_LINE.fullmatch(line):
            return None  # folded, malformed or control characters: let Tornado judge it
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in BODY_HEADERS:
            return None
        if name == FORWARDED_FOR:
            forwarded.append(value.strip(HTTP_WHITESPACE).decode("latin-1"))
    return StreamRequest(
        unquote_to_bytes(match.group(1)), parts[2] == b"HTTP/1.1", end + 4, ",".join(forwarded) if forwarded else None
    )


def peek_stream_request(stream: IOStream) -> StreamRequest | Literal[NothingYet.NOTHING_YET] | None:
    """What `parse_stream_request` finds in the bytes already received on a new connection, without consuming them.

    NOTHING_YET when no byte has arrived (the caller may look again once the socket is readable).
    """
    if isinstance(stream, SSLIOStream):
        return None  # TLS: the bytes on the socket are not the request (a subclass of IOStream is fine)
    try:
        data = stream.socket.recv(PEEK_BYTES, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return NOTHING_YET
    except OSError:  # reset: the ordinary path deals with it
        return None
    if not data.startswith(PREFIX):
        return None
    return parse_stream_request(data)


def consume(sock: socket.socket, length: int) -> None:
    """Drop the request bytes peeked at; they are already in the kernel's buffer, so this never blocks."""
    while length > 0:
        chunk = sock.recv(length)
        if not chunk:
            return
        length -= len(chunk)
