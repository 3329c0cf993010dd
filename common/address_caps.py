"""Open connections per client address: one table per worker (issue 18).

A client address (IPv6: its /64, as the rate limits count) may hold at most
`per_address` open connections, SSE streams included. Who counts where:

- a new connection counts against its socket peer when it is accepted
  (runtime/http_server.py), unless the peer is a trusted proxy, whose clients are many;
- an SSE stream that arrives through a trusted proxy counts, when it opens
  (handlers/presence.py), against the client the proxy forwards, as the one
  client-address rule reads X-Forwarded-For (common/client_ip.py). A client
  that is itself a trusted proxy (no header, or only trusted hops) is not counted.

A count is released when the connection's descriptor is closed, whoever closes it
(`CountedIOStream`). Refusals are counted, and logged once per `LOG_INTERVAL`.
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

    def close_fd(self) -> None:
        try:
            super().close_fd()
        finally:
            release, self.on_close_fd = self.on_close_fd, None
            if release is not None:
                release()


class AddressCaps:
    def __init__(self, per_address: int, trusted: TrustedProxies):
        self.per_address = per_address
        self.trusted = trusted
        self.open: dict[str, int] = {}  # subject -> connections it holds (absent: none)
        self.refused: Counter[str] = Counter()  # what was refused ("connections", "SSE streams") -> how many
        self._logged_at = 0.0

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

    def take(self, subject: str, what: str = "connections") -> bool:
        """Count one more for `subject`; False (counted as refused, nothing taken) when it holds its share."""
        held = self.open.get(subject, 0)
        if held < self.per_address:
            self.open[subject] = held + 1
            return True
        self.refused[what] += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            log.warning(
                "refused %d %s in all: %s (among others) holds %d, the most one address may",
                self.refused[what],
                what,
                subject,
                self.per_address,
            )
        return False

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
