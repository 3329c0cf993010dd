"""One upstream music transfer streamed into one response, with flow control.

Why libcurl callbacks of our own (installed in `prepare_curl_callback`) rather
than Tornado's `streaming_callback`/`header_callback`: Tornado delivers those
later through IOLoop callbacks and pauses only when its own queue passes 1 MiB,
so it cannot tell libcurl "stop, the listener is slow" at the moment a chunk
arrives, and headers may be seen after the first body chunk. Our WRITEFUNCTION
runs inside libcurl and only does cheap, non-reentrant work: trim, append to the
handler's buffer, and return WRITEFUNC_PAUSE while more than `high_water` bytes
are waiting for the listener. A chunk is flushed straight from the callback
when nothing is in flight: a listener that keeps up takes it in the same call,
so a fast stream costs no task, pause or resume per chunk (profiles showed the
pause/resume churn, with its epoll and timer updates, as a fifth of the CPU).
Only a write the kernel did not take whole starts the pump (an ordinary
coroutine), which awaits `flush()` and, once the listener has taken everything,
resumes the transfer with `curl.pause(PAUSE_CONT)` (libcurl then re-delivers
the chunk it kept). Memory per
stream is bounded by `high_water` + one chunk in Python + one chunk libcurl keeps
while paused, whatever the listener's speed; the rest waits in the kernel.

Stopping (listener gone, owner's key revoked, shutdown): shut down the upstream
socket so the music worker sees the close at once, and unpause so libcurl runs
our write callback, which answers 0 and fails the transfer.

The curl handle is only touched while `self._fetch` is not done: Tornado resolves
that future synchronously in `_finish`, just before it resets the handle and
hands it to the next transfer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import pycurl
from tornado import httputil
from tornado.curl_httpclient import CurlAsyncHTTPClient
from tornado.httpclient import HTTPRequest
from tornado.iostream import StreamClosedError

from common.metrics import PROXIED_BYTES
from music.plays import PlayRule, play_rule
from music.ranges import ByteRange, content_range, resolve

log = logging.getLogger("hepgg.music")

# Exactly these upstream headers reach the browser (spec, "Embedded music proxy").
FORWARDED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Last-Modified",
    "ETag",
    "X-Track-Title",
    "X-Track-Artist",
    "X-Track-Duration",
    "X-Track-Album",
    "X-Track-Artwork",
)

# Outcomes of run().
COMPLETE = "complete"  # the response is whole: finish it
UPSTREAM_FAILED = "upstream_failed"  # nothing reached the listener yet: answer 502
BROKEN = "broken"  # failed after bytes reached the listener: abort the connection
STOPPED = "stopped"  # stopped by us (revoked, shutdown) or the listener left

LISTENER_GONE = "listener gone"
WRITEFUNC_PAUSE: int = pycurl.WRITEFUNC_PAUSE
COUNT_EVERY = 1 << 20  # PROXIED_BYTES is updated per MiB sent (and at the end of each stream)


class Sink(Protocol):
    """The response being written: a tornado RequestHandler fits."""

    def set_status(self, status_code: int, reason: str | None = None) -> None: ...
    def set_header(self, name: str, value: str) -> None: ...
    def write(self, chunk: bytes) -> None: ...
    def flush(self) -> asyncio.Future[None]: ...


class Relay:
    def __init__(
        self,
        client: CurlAsyncHTTPClient,
        url: str,
        method: str,
        music_key: str,
        range_header: str | None,
        wanted: ByteRange | None,
        sink: Sink,
        *,
        connect_timeout: float,
        stall_timeout: float,
        chunk_bytes: int,
        high_water: int,
        on_play: Callable[[], None] | None = None,
    ):
        self.client = client
        self.url = url
        self.method = method
        self.music_key = music_key
        self.range_header = range_header
        self.wanted = wanted
        self.sink = sink
        self.connect_timeout = connect_timeout
        self.stall_timeout = max(1, round(stall_timeout))
        self.chunk_bytes = chunk_bytes
        self.high_water = high_water
        self.on_play = on_play  # called once, when this answer becomes a play (music/plays.py)

        self.status: int | None = None  # the status the listener gets
        self.length_known = False  # the listener's response carries a Content-Length
        self.committed = False  # bytes (headers at least) were handed to the listener's socket
        self.sent = 0  # body bytes flushed to the listener
        self.stop_reason: str | None = None
        self.failure: str | None = None  # why the upstream answer could not be used

        self._curl: pycurl.Curl | None = None
        self._fetch: asyncio.Future[Any] | None = None
        self._upstream_status: int | None = None
        self._upstream_headers = httputil.HTTPHeaders()
        self._headers_done = False
        self._no_body = False
        self._skip = 0  # bytes still to drop before the wanted range (Range emulation)
        self._take: int | None = None  # bytes still to pass before the range's end
        self._trimmed = False  # the wanted range is complete; the rest of the upstream body is unwanted
        self.paused_since: float | None = None  # monotonic time the listener stopped keeping up; None: flowing
        self._queued = 0  # written to the sink, not yet flushed
        self._inflight = 0  # being flushed
        self._discard = False
        self._pump_task: asyncio.Task[None] | None = None
        self._uncounted = 0  # bytes sent but not yet added to PROXIED_BYTES
        self._play: PlayRule | None = None  # how this answer becomes a play; None once counted or never

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    @property
    def buffered(self) -> int:
        """Body bytes this stream holds in Python (queued for or being flushed to the listener)."""
        return self._queued + self._inflight

    # ------------------------------------------------------------ driving

    async def run(self) -> str:
        headers = {"Authorization": f"Bearer {self.music_key}", "Accept": "*/*"}
        if self.range_header:
            headers["Range"] = self.range_header
        request = HTTPRequest(
            self.url,
            method=self.method,
            headers=headers,
            follow_redirects=False,
            decompress_response=False,
            connect_timeout=self.connect_timeout,
            request_timeout=0,  # streams last as long as the listener listens; stalls are caught below
            prepare_curl_callback=self._prepare_curl,
        )
        self._fetch = asyncio.ensure_future(self.client.fetch(request, raise_error=False))
        error: str | None = None
        try:
            await self._fetch  # with raise_error=False an upstream 4xx/5xx is an answer, not an error
        except Exception as exc:  # CurlError (599): connect failure, timeout, reset, our own abort
            error = str(exc)
        finally:
            self._curl = None  # the handle already belongs to the next transfer
        pump = self._pump_task
        if pump is not None:
            if self.stop_reason is None and (self._trimmed or (error is None and self.failure is None)):
                # The upstream is done; the listener still takes the rest at its own pace (stop() cancels this).
                await asyncio.gather(pump, return_exceptions=True)
            elif not self.committed:
                self._discard = True  # nothing was flushed yet: a clean 502 is still possible
            # else: the handler closes the connection, which ends the pump's pending flush.
        self._count_sent()
        outcome = self._outcome(error)
        if outcome == COMPLETE and self._play is not None and self._play.whole_track_body and self.sent > 0:
            self._played()
        return outcome

    def _outcome(self, error: str | None) -> str:
        if self.stop_reason is not None:
            return STOPPED
        if self._trimmed or (error is None and self._headers_done and self.failure is None):
            return COMPLETE
        reason = self.failure or error or "no response"
        if self.committed:
            log.warning("music upstream failed after %d bytes: %s", self.sent, reason)
            return BROKEN
        log.warning("music upstream failed before the first byte: %s", reason)
        return UPSTREAM_FAILED

    def stop(self, reason: str) -> None:
        """End the transfer now (listener gone, key revoked, shutdown); run() then returns STOPPED."""
        if self.stop_reason is None:
            self.stop_reason = reason
        curl = self._active_curl()
        if curl is None:
            # The upstream is done; only the pump may still wait for the listener.
            pump = self._pump_task
            if pump is not None and pump is not asyncio.current_task():
                pump.cancel()
            return
        try:
            fd = curl.getinfo(pycurl.ACTIVESOCKET)
        except pycurl.error:
            fd = -1
        if fd >= 0:
            # The music worker sees its connection close now, even while the transfer is paused or idle.
            sock = socket.socket(fileno=fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.detach()  # libcurl owns the descriptor
        self._resume(curl)

    def _active_curl(self) -> pycurl.Curl | None:
        if self._fetch is None or self._fetch.done():
            return None
        return self._curl

    def _resume(self, curl: pycurl.Curl) -> None:
        if self.paused_since is None:
            return
        self.paused_since = None
        try:
            # May call _on_body synchronously with the chunk libcurl kept while paused.
            curl.pause(pycurl.PAUSE_CONT)
        except pycurl.error:
            pass  # the transfer failed while paused; the fetch reports it

    # ------------------------------------------------------------ libcurl side (runs inside socket_action)

    def _prepare_curl(self, curl: pycurl.Curl) -> None:
        self._curl = curl
        curl.setopt(pycurl.HEADERFUNCTION, self._on_header_line)
        curl.setopt(pycurl.WRITEFUNCTION, self._on_body)
        curl.setopt(pycurl.BUFFERSIZE, self.chunk_bytes)
        # Nothing received for stall_timeout seconds fails the transfer; paused time does not count.
        curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        curl.setopt(pycurl.LOW_SPEED_TIME, self.stall_timeout)

    def _on_header_line(self, raw: bytes) -> int | None:
        try:
            if self.stop_reason is not None:
                return 0  # fails the transfer
            if self._headers_done:
                return None  # trailers of a chunked body: ignored
            line = raw.decode("latin1").rstrip("\r\n")
            if line.startswith("HTTP/"):
                self._upstream_status = httputil.parse_response_start_line(line).code
                self._upstream_headers = httputil.HTTPHeaders()
            elif line:
                self._upstream_headers.parse_line(line)
            elif self._upstream_status is not None and not 100 <= self._upstream_status < 200:
                self._headers_done = True
                if not self._start_response():
                    return 0  # nothing more to read (416): end the transfer now
            return None
        except Exception as exc:
            self.failure = f"bad upstream headers ({type(exc).__name__})"
            return 0

    def _start_response(self) -> bool:
        """Decide the listener's status and headers from the upstream's; False when no body is wanted."""
        status = self._upstream_status
        upstream = self._upstream_headers
        if status is None or not 200 <= status <= 599:
            raise ValueError(f"unusable upstream status {status}")
        length = _framing(upstream)
        out = {name: upstream[name] for name in FORWARDED_HEADERS if name in upstream}
        if length is None:
            out.pop("Content-Length", None)
        else:
            out["Content-Length"] = str(length)
        if status == 200 and length is not None:
            # We can serve ranges ourselves from a whole, sized answer (the worker ignores Range).
            if upstream.get("Accept-Ranges", "").strip().lower() != "none":
                out["Accept-Ranges"] = "bytes"
            if self.wanted is not None:
                span = resolve(self.wanted, length)
                out.pop("Content-Range", None)
                if span is None:
                    status = 416
                    for name in ("Content-Length", "Content-Type"):
                        out.pop(name, None)
                    out["Content-Range"] = f"bytes */{length}"
                    self._no_body = True
                else:
                    first, last = span
                    status = 206
                    out["Content-Range"] = f"bytes {first}-{last}/{length}"
                    out["Content-Length"] = str(last - first + 1)
                    self._skip, self._take = first, last - first + 1
        if status in (204, 304) or self.method == "HEAD":
            self._no_body = True
        self._play = self._play_rule(status, length, out.get("Content-Range"))
        self.status = status
        self.length_known = "Content-Length" in out
        self.sink.set_status(status)
        for name, value in out.items():
            self.sink.set_header(name, value)
        if self._no_body and self.method == "GET":
            self._trimmed = True  # the response is decided; the upstream body is not needed
            return False
        return True

    def _on_body(self, chunk: bytes) -> int | None:
        try:
            if self.stop_reason is not None or self._trimmed or not self._headers_done:
                return 0  # fails the transfer (stopped, or the wanted range is complete)
            if self._no_body:
                return None
            if self._queued + self._inflight >= self.high_water:
                if self.paused_since is None:
                    self.paused_since = time.monotonic()
                return WRITEFUNC_PAUSE  # libcurl keeps this chunk and offers it again on resume
            data = chunk
            if self._skip:
                if len(data) <= self._skip:
                    self._skip -= len(data)
                    return None
                data = data[self._skip :]
                self._skip = 0
            if self._take is not None:
                if len(data) >= self._take:
                    data = data[: self._take]
                    self._trimmed = True
                self._take -= len(data)
            if data:
                self.sink.write(data)
                self._queued += len(data)
                if self._pump_task is None:
                    self._flush_now()
            return 0 if self._trimmed else None
        except Exception as exc:
            self.failure = f"relay error ({type(exc).__name__}: {exc})"
            return 0

    # ------------------------------------------------------------ listener side

    def _play_rule(self, status: int, length: int | None, range_header: str | None) -> PlayRule | None:
        if status == 200:
            return play_rule(self.method, status, 0, length)
        if status == 206:
            span = content_range(range_header)  # ours (emulated) or the worker's
            if span is not None:
                return play_rule(self.method, status, span[0], span[1])
        return None

    def _played(self) -> None:
        self._play = None
        if self.on_play is not None:
            self.on_play()

    def _commit(self) -> None:
        self.committed = True

    def _flush_now(self) -> None:
        """Hand the queued bytes to the listener's socket at once (inside the write callback).

        A listener that keeps up takes the whole write in the same call (Tornado resolves
        the flush synchronously), so the transfer goes on with no task, no pause and no
        resume per chunk. Only a write the kernel did not take whole starts the pump.
        No curl call happens here, so this is safe inside libcurl's callback.
        """
        self._commit()
        self._inflight, self._queued = self._queued, 0
        flushed = self.sink.flush()
        if flushed.done() and flushed.exception() is None:
            self._sent(self._inflight)
            return
        self._pump_task = asyncio.get_running_loop().create_task(self._pump(flushed))

    def _sent(self, count: int) -> None:
        self.sent += count
        self._inflight = 0
        if self._play is not None and self.sent >= self._play.threshold:
            self._played()
        self._uncounted += count
        if self._uncounted >= COUNT_EVERY:
            self._count_sent()

    def _count_sent(self) -> None:
        # One shared-memory metric write per MiB, not per chunk (multiprocess counters take a lock each time).
        if self._uncounted:
            PROXIED_BYTES.inc(self._uncounted)
            self._uncounted = 0

    async def _pump(self, pending: asyncio.Future[None] | None = None) -> None:
        """Wait for the listener to take what is in flight, flush what queued meanwhile, then resume the transfer."""
        try:
            if pending is not None:
                await pending
                self._sent(self._inflight)
            while not self._discard:
                if self._queued:
                    self._commit()
                    self._inflight, self._queued = self._queued, 0
                    await self.sink.flush()
                    self._sent(self._inflight)
                    continue
                curl = self._active_curl() if self.paused and self.stop_reason is None else None
                if curl is None:
                    break
                self._resume(curl)  # may queue more synchronously (the chunk libcurl kept); the loop goes on
                if not self._queued:
                    break
        except StreamClosedError:
            self.stop(LISTENER_GONE)
        finally:
            self._pump_task = None
            self._count_sent()


def _framing(headers: httputil.HTTPHeaders) -> int | None:
    """The upstream body's Content-Length (None: chunked or close-delimited), or ValueError for framing a proxy
    must not forward (RFC 9112 §6.3): Content-Length with Transfer-Encoding, an invalid or conflicting
    Content-Length, a transfer coding other than chunked. Nothing has reached the listener then: a 502."""
    lengths = headers.get_list("Content-Length")
    codings = headers.get_list("Transfer-Encoding")
    if codings:
        if lengths:
            raise ValueError("upstream sent both Content-Length and Transfer-Encoding")
        if [coding.strip().lower() for coding in ",".join(codings).split(",")] != ["chunked"]:
            raise ValueError("upstream transfer coding is not chunked")
        return None
    if not lengths:
        return None
    values = {value.strip() for value in ",".join(lengths).split(",")}
    if len(values) != 1:
        raise ValueError("upstream sent conflicting Content-Length values")
    value = values.pop()
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise ValueError("upstream Content-Length is invalid")
    return int(value)
