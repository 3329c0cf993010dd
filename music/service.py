"""Process-wide music service: the long-stream curl client, the open streams, revocation and drain.

Built by runtime/services.py with its own `CurlAsyncHTTPClient` (`force_instance`),
sized by `--music-max-streams`: Tornado's shared client has 10 slots, and a music
stream holds its slot for the whole track. One loop (`watch_revocations`, not one
timer per stream) re-checks, every quarter of the profile-cache TTL, that each
open stream's profile is still visible and its owner still has an enabled music
key, and stops the streams that lost it: revoking music access silences playing
audio within the cache bound. On shutdown, streams may finish within the grace;
the rest are stopped.

Admission (issue 18: 2,000 GETs that never read held every slot and every other
music request waited without end in curl's queue): `admit` takes one of
`max_streams` slots, waiting at most `queue_timeout` for one (then `MusicBusy`,
a 503 with Retry-After), and refuses at once an address (an IPv6 /64) already
holding `per_address` streams or waiting for them. The handler admits before it
looks the profile up, so a refusal costs no lookup. The same loop that watches revocations drops a listener
whose transfer has been paused (it reads nothing) longer than `pause_limit`;
the player resumes with `Range`. While paused a listener holds at most
`high_water` unsent bytes plus the one chunk libcurl keeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tornado.curl_httpclient import CurlAsyncHTTPClient

from common.tasks import raise_if_cancelling
from music.errors import MusicBusy
from music.ranges import ByteRange
from music.relay import Relay, Sink
from store.clock import Clock
from store.sites import SiteDirectory

log = logging.getLogger("hepgg.music")

REVOKED = "music access revoked"
SHUTTING_DOWN = "server shutting down"
LISTENER_PAUSED = "listener paused too long"


@dataclass(eq=False)
class OpenStream:
    profile_id: str
    relay: Relay
    subject: str = ""  # the address (or IPv6 /64) it counts against


@dataclass(frozen=True)
class MusicSettings:
    upstream_url: str  # the music worker's base URL
    connect_timeout: float
    stall_timeout: float
    chunk_bytes: int
    high_water: int
    profile_cache_ttl: float  # revocation is checked every quarter of it (within 0.05-1 s)
    max_streams: int = 2000  # upstream transfers at once (the curl client's slots)
    queue_timeout: float = 5.0  # seconds a request may wait for a slot
    per_address: int = 32  # streams one address (IPv6: its /64) may hold
    pause_limit: float = 60.0  # seconds a listener may read nothing before it is dropped

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
    _slots: asyncio.Semaphore = field(init=False)
    _by_subject: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._idle.set()
        self._slots = asyncio.Semaphore(self.settings.max_streams)

    async def admit(self, subject: str) -> None:
        """Take a stream slot for `subject` (release it with `closed`); raises MusicBusy."""
        if self._by_subject.get(subject, 0) >= self.settings.per_address:
            raise MusicBusy(f"{subject} holds {self.settings.per_address} music streams")
        self._by_subject[subject] = self._by_subject.get(subject, 0) + 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.settings.queue_timeout)
        except TimeoutError:
            self._release_subject(subject)
            raise MusicBusy(f"no music stream slot within {self.settings.queue_timeout:g}s") from None
        except BaseException:
            self._release_subject(subject)
            raise

    def release(self, subject: str) -> None:
        """Give back a slot taken by `admit` that never became a stream (see `closed` for those that did)."""
        self._slots.release()
        self._release_subject(subject)

    def _release_subject(self, subject: str) -> None:
        left = self._by_subject.get(subject, 0) - 1
        if left > 0:
            self._by_subject[subject] = left
        else:
            self._by_subject.pop(subject, None)

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
        """The stream ended: its slot (taken by `admit`) is free again."""
        if stream in self.streams:
            self.streams.discard(stream)
            self.release(stream.subject)
        if not self.streams:
            self._idle.set()

    # ------------------------------------------------------------ revocation

    async def watch_revocations(self) -> None:
        """The loop the runtime runs in the background while the worker lives."""
        interval = self.settings.revocation_interval
        while True:
            await asyncio.sleep(interval)
            if self.streams:
                self.drop_paused()
                try:
                    await self.stop_revoked()
                except Exception:
                    raise_if_cancelling()
                    log.exception("music revocation check failed")

    def drop_paused(self, now: float | None = None) -> int:
        """Stop streams whose listener has read nothing for longer than `pause_limit` (not one timer each)."""
        now = time.monotonic() if now is None else now
        limit = self.settings.pause_limit
        dropped = 0
        for stream in list(self.streams):
            since = stream.relay.paused_since
            if since is not None and now - since > limit:
                stream.relay.stop(LISTENER_PAUSED)
                dropped += 1
        if dropped:
            log.info("dropped %d music listeners paused over %.0fs", dropped, limit)
        return dropped

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
