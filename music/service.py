"""Process-wide music service: the long-stream curl client, the open streams, revocation and drain.

Built by runtime/services.py with its own `CurlAsyncHTTPClient` (`force_instance`),
sized by `--music-max-streams`: Tornado's shared client has 10 slots, and a music
stream holds its slot for the whole track. One loop (`watch_revocations`, not one
timer per stream) re-checks, every quarter of the profile-cache TTL, that each
open stream's profile is still visible and its owner still has an enabled music
key, and stops the streams that lost it: revoking music access silences playing
audio within the cache bound. On shutdown, streams may finish within the grace;
the rest are stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tornado.curl_httpclient import CurlAsyncHTTPClient

from common.tasks import raise_if_cancelling
from music.ranges import ByteRange
from music.relay import Relay, Sink
from store.clock import Clock
from store.sites import SiteDirectory

log = logging.getLogger("hepgg.music")

REVOKED = "music access revoked"
SHUTTING_DOWN = "server shutting down"


@dataclass(eq=False)
class OpenStream:
    profile_id: str
    relay: Relay


@dataclass(frozen=True)
class MusicSettings:
    upstream_url: str  # the music worker's base URL
    connect_timeout: float
    stall_timeout: float
    chunk_bytes: int
    high_water: int
    profile_cache_ttl: float  # revocation is checked every quarter of it (within 0.05-1 s)

    @property
    def revocation_interval(self) -> float:
        return min(1.0, max(0.05, self.profile_cache_ttl / 4))


@dataclass
class MusicService:
    client: CurlAsyncHTTPClient
    sites: SiteDirectory
    clock: Clock
    settings: MusicSettings
    streams: set[OpenStream] = field(default_factory=set)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def track_url(self, isrc: str) -> str:
        return f"{self.settings.upstream_url.rstrip('/')}/tracks/{isrc}"

    def relay(
        self,
        *,
        url: str,
        method: str,
        music_key: str,
        range_header: str | None,
        wanted: ByteRange | None,
        sink: Sink,
        on_play: Callable[[], None],
    ) -> Relay:
        settings = self.settings
        return Relay(
            self.client,
            url,
            method,
            music_key,
            range_header,
            wanted,
            sink,
            connect_timeout=settings.connect_timeout,
            stall_timeout=settings.stall_timeout,
            chunk_bytes=settings.chunk_bytes,
            high_water=settings.high_water,
            on_play=on_play,
        )

    def opened(self, stream: OpenStream) -> None:
        self.streams.add(stream)
        self._idle.clear()

    def closed(self, stream: OpenStream) -> None:
        self.streams.discard(stream)
        if not self.streams:
            self._idle.set()

    # ------------------------------------------------------------ revocation

    async def watch_revocations(self) -> None:
        """The loop the runtime runs in the background while the worker lives."""
        interval = self.settings.revocation_interval
        while True:
            await asyncio.sleep(interval)
            if self.streams:
                try:
                    await self.stop_revoked()
                except Exception:
                    raise_if_cancelling()
                    log.exception("music revocation check failed")

    async def stop_revoked(self) -> int:
        """Stop streams whose profile is gone/hidden or whose owner's music key is disabled."""
        by_profile: dict[str, list[OpenStream]] = defaultdict(list)
        for stream in list(self.streams):
            by_profile[stream.profile_id].append(stream)
        now = self.clock.now()
        stopped = 0
        for profile_id, streams in by_profile.items():
            site = await self.sites.by_id(profile_id)  # cached: one lookup per profile per TTL
            if site is not None and site.is_visible(now) and site.owner.music_key:
                continue
            for stream in streams:
                stream.relay.stop(REVOKED)
                stopped += 1
        if stopped:
            log.info("stopped %d music streams whose access was revoked", stopped)
        return stopped

    # ------------------------------------------------------------ lifecycle

    async def drain(self, budget: float) -> None:
        """Let open streams finish, then stop the rest: all within `budget` seconds."""
        if not self.streams:
            return
        stopping_time = min(1.0, budget / 4)  # kept for the stopped streams to end
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=budget - stopping_time)
        except TimeoutError:
            log.warning("stopping %d music streams still open at shutdown", len(self.streams))
            for stream in list(self.streams):
                stream.relay.stop(SHUTTING_DOWN)
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=stopping_time)
            except TimeoutError:
                log.error("%d music streams did not stop", len(self.streams))

    async def close(self) -> None:
        self.client.close()
