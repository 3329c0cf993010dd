"""Everything a worker process shares between requests, built once and closed once.

Handlers receive this object through their route tuple and see it as typed
attributes; nothing reaches for globals. Each feature adds its long-lived
service here (render pool, music client, presence hub, limiter...), with its
start in `build_services` and its stop in `Services.close`, in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from tornado.curl_httpclient import CurlAsyncHTTPClient
from pymongo.asynchronous.database import AsyncDatabase

import contact.service
import music.service
import og.service
import presence.service
from runtime import reconciler
from runtime.client_ip import TrustedProxies
from store import changes
from store.clock import Clock
from store.mongo import connect, ensure_indexes
from store.sites import SiteDirectory
from store.stats import StatsWriter

log = logging.getLogger("hepgg.services")

SHORT_REQUEST_MAX_BODY = 4 * 1024 * 1024  # no short third-party answer is larger (avatars cap at 2 MiB)


@dataclass
class Services:
    config: Any
    clock: Clock
    mongo: AsyncMongoClient
    db: AsyncDatabase
    redis: aioredis.Redis
    sites: SiteDirectory
    stats: StatsWriter
    trusted_proxies: TrustedProxies
    http: CurlAsyncHTTPClient  # short requests (Turnstile, SMS, Discord, avatars); music has its own
    draining: bool = False
    change_watcher: Any = None  # store/changes.py, when the server follows change streams
    # Feature services, attached by each feature's service.start(services).
    og: Any = None  # og/service.py: the OG card renderer (process pool + cache)
    music: Any = None  # music/service.py: the long-stream curl client and proxy settings
    contact: Any = None  # contact/service.py: limiter, Turnstile, credits, delivery
    presence: Any = None  # presence/service.py: the process-wide SSE hub
    # Stop callbacks, run last-in first-out by close().
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called with the grace period when the server stops accepting (SSE: retry hint + close; music: finish).
    _drainers: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    def on_drain(self, drainer: Callable[[float], Awaitable[None]]) -> None:
        self._drainers.append(drainer)

    async def shutdown_streams(self, grace: float) -> None:
        results = await asyncio.gather(*(drainer(grace) for drainer in self._drainers), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("error while draining streams: %r", result)

    async def ping_mongo(self) -> None:
        await self.mongo.admin.command("ping")

    async def ping_redis(self) -> None:
        await self.redis.ping()

    async def close(self, timeout_each: float = 30.0) -> list[str]:
        """Run the closers last-in first-out; returns the names of any that failed or hung.

        Each gets `timeout_each` seconds, so one stuck closer cannot keep a worker from exiting on SIGTERM.
        """
        failed = []
        while self._closers:
            closer = self._closers.pop()
            name = getattr(closer, "__qualname__", repr(closer))
            try:
                await asyncio.wait_for(closer(), timeout_each)
            except asyncio.TimeoutError:
                log.error("closing %s took over %.0fs; moving on", name, timeout_each)
                failed.append(name)
            except Exception:
                log.exception("error while closing %s", name)
                failed.append(name)
        return failed


def make_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        max_connections=200,
    )


async def build_services(
    config, mongo_uri: str, redis_url: str, *, clock: Clock | None = None, background: bool = True
) -> Services:
    """Connect to the stores and start the process-wide workers.

    `background=False` (CLI commands) skips the periodic tasks a server runs.
    """
    mongo, db = connect(mongo_uri, config.mongo_db)
    redis = make_redis(redis_url)
    services = Services(
        config=config,
        clock=clock or Clock(),
        mongo=mongo,
        db=db,
        redis=redis,
        sites=SiteDirectory(db, ttl=config.profile_cache_ttl),
        stats=StatsWriter(db, redis, interval=config.view_flush_interval),
        trusted_proxies=TrustedProxies(config.trusted_proxies),
        http=CurlAsyncHTTPClient(force_instance=True, max_clients=64, max_body_size=SHORT_REQUEST_MAX_BODY),
    )

    async def close_stores() -> None:
        services.http.close()
        await redis.aclose()
        await mongo.close()

    services.on_close(close_stores)
    try:
        await ensure_indexes(db)
        if background:
            services.stats.start()
            reconciler.start(services)
            changes.start(services)
        services.on_close(services.stats.stop)  # flushes pending views/plays
        if background:  # CLI commands need none of the serving features
            for feature in (og.service, music.service, contact.service, presence.service):
                await feature.start(services)
    except BaseException:
        await services.close()
        raise
    return services
