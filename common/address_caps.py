"""Open connections per client address, and how fast it opens SSE streams: one table each per worker (issue 18).

A client address (IPv6: its /64, as the rate limits count) may hold at most
`per_address` open connections, SSE streams included, and open SSE streams at
most `StreamOpens.per_second` a second after a burst (`StreamOpens`). Who counts where:

- a new connection counts against its socket peer when it is accepted
  (runtime/http_server.py), unless the peer is a trusted proxy, whose clients are many;
- an SSE stream that arrives through a trusted proxy counts, when it opens
  (handlers/presence.py), against the client the proxy forwards, as the one
  client-address rule reads X-Forwarded-For (common/client_ip.py). A client
  that is itself a trusted proxy (no header, or only trusted hops) is not counted.

A count is released when the connection's descriptor is closed, whoever closes it
(`CountedIOStream`). Refusals are counted, and logged once per `LOG_INTERVAL`.
A stream past its address's rate is shed, like a stream past its share
(handlers/presence.py), and counts against the same address as above: the
forwarded client's through a trusted proxy, else the socket peer's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable

from tornado.iostream import IOStream

from common.client_ip import TrustedProxies, rate_limit_subject

log = logging.getLogger("hepgg.http")

LOG_INTERVAL = 10.0  # seconds between lines about refusals


class CountedIOStream(IOStream):
    """An IOStream that says when its descriptor is closed, whoever closes it (the per-address count)."""

    on_close_fd: Callable[[], None] | None = None
    subject: str | None = None  # the key it was counted under when accepted (None: a trusted proxy's)

    def close_fd(self) -> None:
        try:
            super().close_fd()
        finally:
            release, self.on_close_fd = self.on_close_fd, None
            if release is not None:
                release()


class StreamOpens:
    """SSE streams opened per client address: a token bucket per subject, `burst` deep, `per_second` refill.

    A stream open costs the server a few hundred µs of CPU however soon it ends, so a client reconnecting in
    a loop (issue 18's reconnect storm: ~1,000 connects/s from one address) took a third of a core from every
    other visitor; the open-connection cap does not see it, since it holds only a few at a time. The burst
    is sized by the caller (runtime/services.py) for the reconnect wave after a deploy, which must never be
    shed. `per_second` 0: no limit.
    """

    def __init__(self, per_second: float, burst: float):
        self.per_second = per_second
        self.burst = max(1.0, burst)
        self.buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens left, when); absent: full
        self.clock: Callable[[], float] = time.monotonic  # tests move it
        self._pruned_at = 0.0

    def allow(self, subject: str) -> bool:
        """Take one token from `subject`'s bucket; False (nothing taken) when it has none."""
        if not self.per_second:
            return True
        now = self.clock()
        tokens, at = self.buckets.get(subject, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        if tokens < 1:
            return False
        self.buckets[subject] = (tokens - 1, now)
        if now - self._pruned_at >= self.burst / self.per_second:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Forget the buckets that are full again (as an absent one is): the table holds only recent openers."""
        self._pruned_at = now
        full = [s for s, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.per_second >= self.burst]
        for subject in full:
            del self.buckets[subject]


class AddressCaps:
    def __init__(self, per_address: int, trusted: TrustedProxies, stream_opens: StreamOpens | None = None):
        self.per_address = per_address
        self.trusted = trusted
        self.open: dict[str, int] = {}  # subject -> connections it holds (absent: none)
        self.stream_opens = stream_opens or StreamOpens(0, 1)  # (0: no limit)
        # what was refused ("connections", "SSE streams", "SSE streams opened too fast") -> how many
        self.refused: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}  # what -> when its last line was written

    def peer_subject(self, peer: str) -> str | None:
        """The key a new connection from `peer` counts under; None for a trusted proxy (not counted)."""
        if not peer or self.trusted.trusts(peer):
            return None
        return rate_limit_subject(peer)

    def forwarded_subject(self, peer: str, forwarded_for: str | None) -> str | None:
        """The key a stream from `peer` counts under when it opens: its forwarded client's, if `peer` is a
        trusted proxy. None when nothing more is counted: any other peer was counted when accepted, and a
        client that is itself a trusted proxy is not counted at all."""
        if not peer or not self.trusted.trusts(peer):
            return None
        client = self.trusted.client_ip(peer, forwarded_for)
        if self.trusted.trusts(client):
            return None
        return rate_limit_subject(client)

    def stream_subject(self, stream: IOStream, peer: str, forwarded_for: str | None) -> str | None:
        """The key a new SSE stream counts under: the forwarded client's through a trusted proxy, else the key
        its connection was counted under when accepted; None when neither is counted (a trusted proxy's own)."""
        forwarded = self.forwarded_subject(peer, forwarded_for)
        if forwarded is not None:
            return forwarded
        return stream.subject if isinstance(stream, CountedIOStream) else None

    def may_open_stream(self, subject: str) -> bool:
        """One more SSE stream opened by `subject`; False (counted as refused) past its address's rate."""
        if self.stream_opens.allow(subject):
            return True
        self._refuse("SSE streams opened too fast", subject, "opens streams faster than one address may")
        return False

    def take(self, subject: str, what: str = "connections") -> bool:
        """Count one more for `subject`; False (counted as refused, nothing taken) when it holds its share."""
        held = self.open.get(subject, 0)
        if held < self.per_address:
            self.open[subject] = held + 1
            return True
        self._refuse(what, subject, f"holds {self.per_address}, the most one address may")
        return False

    def _refuse(self, what: str, subject: str, why: str) -> None:
        """Count a refusal; one log line per LOG_INTERVAL says how many so far (a storm is not a line each)."""
        self.refused[what] += 1
        now = time.monotonic()
        if now - self._logged_at.get(what, -LOG_INTERVAL) >= LOG_INTERVAL:
            self._logged_at[what] = now
            log.warning("refused %d %s in all: %s (among others) %s", self.refused[what], what, subject, why)

    def release(self, subject: str) -> None:
        left = self.open.get(subject, 0) - 1
        if left > 0:
            self.open[subject] = left
        else:
            self.open.pop(subject, None)

    def hold(self, stream: IOStream, subject: str, what: str = "connections") -> bool:
        """Count `stream` against `subject` until its descriptor closes; False, counting nothing, past the cap.

        Only a stream no one counts yet (a trusted proxy's) can be held: the server makes every stream a
        `CountedIOStream`; anything else (or one already closed) is let through uncounted.
        """
        if not isinstance(stream, CountedIOStream) or stream.on_close_fd is not None or stream.closed():
            return True
        if not self.take(subject, what):
            return False
        stream.on_close_fd = functools.partial(self.release, subject)
        return True
