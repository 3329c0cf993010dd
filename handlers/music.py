"""GET/HEAD /api/v1/profiles/<profileID>/music/<isrc>: the embedded music proxy (spec: "Embedded music proxy").

Errors have empty bodies (400 malformed, 404 not visible / no music key / a
track the profile does not list, 416 several ranges, 502 upstream failure).
The streaming itself lives in music/relay.py; this handler validates, resolves the profile, runs one Relay and maps its outcome:
a failure after the first byte closes the connection, so a browser never takes
a truncated track for a whole one.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado.http1connection import HTTP1Connection

from common.client_ip import rate_limit_subject
from common.metrics import OPEN_STREAMS
from handlers.base import ApiHandler
from handlers.errors import shutting_down
from music import ranges
from music.relay import COMPLETE, LISTENER_GONE, STOPPED, UPSTREAM_FAILED, Relay
from music.service import REVOKED, SHUTTING_DOWN, MusicService, OpenStream
from store.formats import ID_PATTERN, ISRC_PATTERN

_MUSIC_STREAMS = OPEN_STREAMS.labels(kind="music")  # bound once: labels() per request costs a lookup and a lock

# A stream stopped before its first byte answers as a new request would now.
STOP_STATUS = {REVOKED: 404}  # SHUTTING_DOWN: a 503 with Retry-After (handlers/errors.shutting_down)


class MusicHandler(ApiHandler):
    relay: Relay | None = None

    @property
    def music(self) -> MusicService:
        return self.services.music

    def compute_etag(self) -> None:
        return None  # never hash a proxied body; the upstream's ETag is forwarded as is

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Music errors are status-only: empty body, no envelope.
        self.clear_header("Content-Type")
        self.finish()

    async def head(self, profile_id: str = "", isrc: str = "") -> None:
        await self._proxy("HEAD", profile_id, isrc)

    async def get(self, profile_id: str = "", isrc: str = "") -> None:
        await self._proxy("GET", profile_id, isrc)

    async def _proxy(self, method: str, profile_id: str, isrc: str) -> None:
        if not profile_id or not ISRC_PATTERN.fullmatch(isrc):
            raise tornado.web.HTTPError(400)
        if not ID_PATTERN.fullmatch(profile_id):
            raise tornado.web.HTTPError(404)  # could never exist: no lookup
        if self.services.draining:
            raise shutting_down()
        wanted = ranges.parse(self.request.headers.get("Range"))
        if isinstance(wanted, ranges.Several):
            raise tornado.web.HTTPError(416)  # one range at a time (docs/music.md); nothing asked upstream
        visitor_ip = self.client_ip
        subject = rate_limit_subject(visitor_ip)
        # A slot (within the address's share and the queue timeout) before any other work: a refused
        # request, such as each of one address's thousand non-reading GETs past its share, costs no lookup.
        await self.music.admit(subject)
        stream: OpenStream | None = None
        try:
            now = self.services.clock.now()
            site = await self.services.sites.by_id(profile_id)
            if site is None or not site.is_visible(now) or not site.owner.music_key:
                raise tornado.web.HTTPError(404)
            isrc = isrc.upper()
            if not site.profile.lists_track(isrc):
                raise tornado.web.HTTPError(404)  # the owner's key plays only what the profile shows
            user_agent = self.request.headers.get("User-Agent", "")

            def on_play() -> None:
                now = self.services.clock.now()
                self.services.stats.record_play(site.profile.id, site.owner.id, now, isrc, visitor_ip, user_agent)

            self.relay = self.music.relay(
                url=self.music.track_url(isrc),
                method=method,
                music_key=site.owner.music_key,
                range_header=wanted.header() if wanted is not None else None,
                wanted=wanted,
                sink=self,
                on_play=on_play,
            )
            stream = OpenStream(site.profile.id, self.relay, subject)
            self.music.opened(stream)
        finally:
            if stream is None:
                self.music.release(subject)  # admitted, never streamed (404, a store outage)
        _MUSIC_STREAMS.inc()
        try:
            outcome = await self.relay.run()
        finally:
            _MUSIC_STREAMS.dec()
            self.music.closed(stream)
        self._answer(outcome)

    def _answer(self, outcome: str) -> None:
        relay = self.relay
        assert relay is not None
        if outcome == COMPLETE:
            if self.request.method == "HEAD" and not relay.length_known:
                self.flush()  # headers now, so Tornado does not claim Content-Length: 0
            self.finish()
        elif outcome == UPSTREAM_FAILED or (outcome == STOPPED and not relay.committed):
            if relay.stop_reason == LISTENER_GONE:
                return  # nobody to answer
            self.clear()
            if relay.stop_reason == SHUTTING_DOWN:
                raise shutting_down()
            raise tornado.web.HTTPError(STOP_STATUS.get(relay.stop_reason or "", 502))
        else:  # BROKEN, or STOPPED mid-body: no clean end (no last chunk, short Content-Length)
            connection = self.request.connection
            assert isinstance(connection, HTTP1Connection)
            connection.close()

    def on_connection_close(self) -> None:
        if self.relay is not None:
            self.relay.stop(LISTENER_GONE)


ROUTES = [
    (r"/api/v1/profiles/([^/]*)/music/(.*)", MusicHandler),
    (r"/api/v1/profiles/([^/]*)/music/?", MusicHandler),  # no ISRC: 400
    (r"/api/v1/profiles/music/.*", MusicHandler),  # no profile ID: 400
]
