"""Shedding a stream request: the 200 + `retry:` answer (presence/sse.py), sent at once or after a hold.

A stream we cannot take gets its whole answer in one send and is closed: the
connection is new and the answer small, so the IOStream's write path (a future
and a callback per shed) only takes what the socket would not.

A stream shed because its address opens streams too fast (common/address_caps.py)
is held `HOLD_SECONDS` first. A browser waits the hint (5-20 s) whenever its answer
comes, so the hold costs it nothing; a client that reconnects as soon as it is
answered (the reconnect storm: issue 18's bench, a script ignoring `retry:`) is
slowed to one connect per hold per connection it holds, and the per-address cap
(`--connections-per-address`) bounds those. Answered at once, it came straight
back: shedding costs about as much as streaming (~250 µs of CPU per connect),
and at ~1,000 connects/s the visitors' connections queued behind the storm's.
Held streams are answered by one sweep timer, oldest first; at most `MAX_HELD`
are held (more are shed at once), and a drain answers them all.
"""

from __future__ import annotations

import collections

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from presence.sse import shed_answer

HOLD_SECONDS = 1.0
SWEEP_SECONDS = 0.05  # releases spread out: at 0.25 s, 200 held storm clients came back in waves of ~50
MAX_HELD = 1000  # per worker; each is a descriptor, as a silent connection is for --header-timeout


def shed(stream: IOStream, chunked: bool, *, draining: bool = False) -> None:
    """Answer 200 with a jittered retry hint (the drain's when `draining`, else overload's), then close."""
    answer = shed_answer(chunked, draining=draining)
    if not isinstance(stream, SSLIOStream) and not stream.writing():
        try:
            sent = stream.socket.send(answer)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = len(answer)  # gone (reset, closed): nothing more to say
        if sent == len(answer):
            stream.close()
            return
        answer = answer[sent:]
    try:
        stream.write(answer).add_done_callback(lambda _f: stream.close())
    except StreamClosedError:
        pass


class HeldSheds:
    """Streams to shed once their hold is over (one timer for all of them)."""

    def __init__(self, hold: float = HOLD_SECONDS, max_held: int = MAX_HELD):
        self.hold = hold
        self.max_held = max_held
        self.held: collections.deque[tuple[float, IOStream, bool]] = collections.deque()  # (due, stream, chunked)
        self.draining = False
        self._sweeping = False

    def later(self, stream: IOStream, chunked: bool) -> None:
        if self.draining or len(self.held) >= self.max_held:
            return shed(stream, chunked)
        loop = IOLoop.current()
        self.held.append((loop.time() + self.hold, stream, chunked))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        loop = IOLoop.current()
        now, held = loop.time(), self.held
        while held and held[0][0] <= now:
            _, stream, chunked = held.popleft()
            shed(stream, chunked)
        if held:
            loop.call_later(SWEEP_SECONDS, self._sweep)
        else:
            self._sweeping = False

    async def drain(self, _grace: float = 0.0) -> None:
        """Shutdown (drain, or close without one): answer every held stream now, and hold no more."""
        self.draining = True
        while self.held:
            _, stream, chunked = self.held.popleft()
            shed(stream, chunked)
