"""Process-wide music service: the long-stream curl client, the open streams, revocation and drain.

One `CurlAsyncHTTPClient` instance of our own (`force_instance`), sized by
`--music-max-streams`: Tornado's shared client has 10 slots, and a music stream
holds its slot for the whole track. One ticker (not one timer per stream)
re-checks, every quarter of the profile-cache TTL, that each open stream's
profile is still visible and its owner still has an enabled music key, and
stops the streams that lost it: revoking music access silences playing audio
within the cache bound. On shutdown, streams may finish within the grace; the
rest are stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from tornado.curl_httpclient import CurlAsyncHTTPClient

from music.relay import Relay
from runtime.tasks import cancel_and_wait, raise_if_cancelling

log = logging.getLogger("hepgg.music")

REVOKED = "music access revoked"
SHUTTING_DOWN = "server shutting down"


@dataclass(eq=False)
class OpenStream:
    profile_id: str
    relay: Relay


@dataclass
class MusicService:
    services: object
    client: CurlAsyncHTTPClient
    streams: set[OpenStream] = field(default_factory=set)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _ticker: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def config(self):
        return self.services.config

    def track_url(self, isrc: str) -> str:
        return f"{self.config.music_upstream_url.rstrip('/')}/tracks/{isrc}"

    def relay(self, *, url: str, method: str, music_key: str, range_header, wanted, sink, on_commit) -> Relay:
        config = self.config
        return Relay(
            self.client,
            url,
            method,
            music_key,
            range_header,
            wanted,
            sink,
            connect_timeout=config.music_connect_timeout,
            stall_timeout=config.music_stall_timeout,
            chunk_bytes=config.music_chunk_bytes,
            high_water=config.music_high_water,
            on_commit=on_commit,
        )

    def opened(self, stream: OpenStream) -> None:
        self.streams.add(stream)
        self._idle.clear()

    def closed(self, stream: OpenStream) -> None:
        self.streams.discard(stream)
        if not self.streams:
            self._idle.set()

    # ------------------------------------------------------------ revocation

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._watch(), name="music-revocation")

    async def _watch(self) -> None:
        interval = min(1.0, max(0.05, self.config.profile_cache_ttl / 4))
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
        now = self.services.clock.now()
        stopped = 0
        for profile_id, streams in by_profile.items():
            site = await self.services.sites.by_id(profile_id)  # cached: one lookup per profile per TTL
            if site is not None and site.is_visible(now) and site.owner.music_key:
                continue
            for stream in streams:
                stream.relay.stop(REVOKED)
                stopped += 1
        if stopped:
            log.info("stopped %d music streams whose access was revoked", stopped)
        return stopped

    # ------------------------------------------------------------ lifecycle

    async def drain(self, grace: float) -> None:
        """Let open streams finish within `grace` seconds, then stop the rest."""
        if self.streams:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
            except asyncio.TimeoutError:
                log.warning("stopping %d music streams still open after %.1fs", len(self.streams), grace)
                for stream in list(self.streams):
                    stream.relay.stop(SHUTTING_DOWN)
                try:
                    await asyncio.wait_for(self._idle.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    log.error("%d music streams did not stop", len(self.streams))

    async def close(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
            self._ticker = None
        self.client.close()


async def start(services) -> None:
    """Build the music client and attach it to `services`; register drain and close."""
    client = CurlAsyncHTTPClient(force_instance=True, max_clients=services.config.music_max_streams)
    music = MusicService(services, client)
    music.start()
    services.music = music
    services.on_close(music.close)
    services.on_drain(music.drain)
