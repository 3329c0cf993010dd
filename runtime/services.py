"""The composition root: every long-lived object of a worker, built here once and closed once.

`build_services` connects to the stores, builds each feature's service with just
what that feature needs (the contact service gets the site directory, the clock,
the limiter, Turnstile, the credits and the senders; never this module's
objects), starts the background loops through `start_background`, and registers
every closer and drainer on one `Lifecycle`. Closers run last-in first-out, so
what was started last stops first and the stores close last. Handlers get the
result, a typed `Services` (handlers/services.py).

CLI commands need only the stores: `open_stores`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from tornado.curl_httpclient import CurlAsyncHTTPClient

from common.address_caps import AddressCaps, StreamOpens
from common.client_ip import TrustedProxies
from common.lifecycle import Lifecycle
from common.tasks import start_background
from contact.credits import Credits, CreditSweeper, credit_hold_timeout
from contact.delivery.discord import DiscordSender
from contact.delivery.email import EmailSender, SmtpSettings
from contact.delivery.sms import SmsSender
from contact.limiter import ContactLimiter
from contact.service import ContactService
from contact.turnstile import Turnstile
from demo.stand_ins import WIDGET_SCRIPT, DemoStandIns
from handlers.services import HandlerSettings, Services
from music.service import MusicService, MusicSettings
from og.service import OgService
from presence.demo import DemoPresence
from presence.hub import PresenceHub
from presence.service import PresenceService
from presence.shed import HeldSheds
from presence.ticker import keepalive
from render.og_fonts import FontTables
from render.page import PageSettings
from runtime import reconciler
from runtime.config import Config
from store.changes import ChangeWatcher
from store.clock import Clock
from store.mongo import Client, Database, connect, ensure_indexes
from store.redis_connect import RedisConnector
from store.sites import SiteDirectory
from store.stats import StatsWriter

log = logging.getLogger("hepgg.services")

SHORT_REQUEST_MAX_BODY = 4 * 1024 * 1024  # no short third-party answer is larger (avatars cap at 2 MiB)

__all__ = ["Services", "Stores", "build_services", "open_stores"]


@dataclass(frozen=True)
class Stores:
    """The store connections alone: what the CLI commands work with."""

    mongo: Client
    db: Database
    redis: RedisConnector  # one server, a Sentinel primary or a cluster: store/redis_connect.py
    clock: Clock


async def open_stores(
    config: Config, mongo_uri: str, redis_url: str, lifecycle: Lifecycle, *, clock: Clock | None = None
) -> Stores:
    """Connect to MongoDB and Redis (closed by `lifecycle`) and make sure the indexes exist."""
    mongo, db = connect(mongo_uri, config.mongo_db)
    redis = RedisConnector(redis_url)

    async def close_stores() -> None:
        await redis.close()
        await mongo.close()

    lifecycle.on_close(close_stores)
    await redis.start()  # one INFO cluster to the named node decides the client (docs/redis.md)
    await ensure_indexes(db)
    return Stores(mongo, db, redis, clock or Clock())


async def build_services(
    config: Config,
    mongo_uri: str,
    redis_url: str,
    *,
    clock: Clock | None = None,
    metrics_dir: str | None = None,
    warm_og: bool = False,
    og_fonts: FontTables | None = None,
) -> Services:
    """Connect to the stores, build every feature and start the worker's background loops.

    The OG render processes start on the first card, or here with `warm_og` (what `serve` does, so a
    first share waits for no process start and a missing font stops the worker before it takes traffic).
    `og_fonts`: the font tables `serve` read before forking (else the render pool reads them itself).
    """
    lifecycle = Lifecycle()
    try:
        return await _build(config, mongo_uri, redis_url, lifecycle, clock, metrics_dir, warm_og, og_fonts)
    except BaseException:
        await lifecycle.close()
        raise


async def _build(
    config: Config,
    mongo_uri: str,
    redis_url: str,
    lifecycle: Lifecycle,
    clock: Clock | None,
    metrics_dir: str | None,
    warm_og: bool,
    og_fonts: FontTables | None,
) -> Services:
    stores = await open_stores(config, mongo_uri, redis_url, lifecycle, clock=clock)
    db, redis, clock = stores.db, stores.redis, stores.clock
    if config.demo:
        config = await _start_demo(config, lifecycle)

    # Turnstile, SMS, Discord and avatars share one client for short requests; music has its own.
    http = CurlAsyncHTTPClient(force_instance=True, max_clients=64, max_body_size=SHORT_REQUEST_MAX_BODY)

    async def close_http() -> None:
        http.close()

    lifecycle.on_close(close_http)

    sites = SiteDirectory(db, ttl=config.profile_cache_ttl)
    stats = StatsWriter(db, redis, interval=config.view_flush_interval)
    stats.start()
    lifecycle.on_flush(stats)  # pending views/plays are written in the flush phase, within its budget
    if config.reconcile_interval > 0:
        loop = reconciler.run_forever(db, redis, clock, sites, config.reconcile_interval)
        start_background(lifecycle, loop, "plan-reconciler")
    change_watcher = ChangeWatcher(db, sites)
    start_background(lifecycle, change_watcher.run(), "change-watcher")

    og = _start_og(config, http, lifecycle, og_fonts)
    if warm_og:
        await og.warm()
    music = _start_music(config, sites, clock, lifecycle)
    contact = _start_contact(config, http, stores, sites, lifecycle)
    presence = _start_presence(config, redis, lifecycle)
    page = PageSettings(
        public_origin=config.public_origin,
        turnstile_sitekey=config.turnstile_sitekey,
        image_hosts=frozenset(config.image_hosts),
    )
    if config.demo:
        page = replace(page, turnstile_script=WIDGET_SCRIPT)
    settings = HandlerSettings(
        base_domain=config.base_domain,
        exempt_domains=config.exempt_domains,
        dashboard_url=config.dashboard_url,
        page=page,
        demo=config.demo,
    )
    trusted_proxies = TrustedProxies(config.trusted_proxies)
    return Services(
        settings=settings,
        clock=clock,
        mongo=stores.mongo,
        db=db,
        redis=redis,
        sites=sites,
        stats=stats,
        trusted_proxies=trusted_proxies,
        address_caps=AddressCaps(config.connections_per_address, trusted_proxies, stream_opens(config)),
        og=og,
        music=music,
        contact=contact,
        presence=presence,
        lifecycle=lifecycle,
        change_watcher=change_watcher,
        metrics_dir=metrics_dir,
    )


async def _start_demo(config: Config, lifecycle: Lifecycle) -> Config:
    """`--demo`: the stand-ins for the demo's third parties (demo/), and the config that points at them.

    Only on the embedded stores (runtime/config.py refuses anything else at start-up): the Turnstile
    stand-in passes its own widget's tokens, and messages land in an in-memory outbox, one log line each.
    """
    stand_ins = DemoStandIns()
    lifecycle.on_close(stand_ins.stop)
    await stand_ins.start()
    log.warning("demo mode: music, Turnstile and deliveries are local stand-ins; nothing is sent anywhere")
    return replace(config, **stand_ins.urls(), demo_presence=True)


def _start_og(config: Config, http: CurlAsyncHTTPClient, lifecycle: Lifecycle, fonts: FontTables | None) -> OgService:
    og = OgService(processes=config.og_render_processes, avatar_hosts=config.avatar_hosts, http=http, fonts=fonts)
    lifecycle.on_close(og.close)  # registered before any warm-up: a failed one still stops the workers
    return og


def _start_music(config: Config, sites: SiteDirectory, clock: Clock, lifecycle: Lifecycle) -> MusicService:
    client = CurlAsyncHTTPClient(force_instance=True, max_clients=config.music_max_streams)
    settings = MusicSettings(
        upstream_url=config.music_upstream_url,
        connect_timeout=config.music_connect_timeout,
        stall_timeout=config.music_stall_timeout,
        chunk_bytes=config.music_chunk_bytes,
        high_water=config.music_high_water,
        profile_cache_ttl=config.profile_cache_ttl,
        max_streams=config.music_max_streams,
        queue_timeout=config.music_queue_timeout,
        per_address=config.music_streams_per_address,
        pause_limit=config.music_pause_limit,
    )
    music = MusicService(client, sites, clock, settings)
    lifecycle.on_close(music.close)
    start_background(lifecycle, music.watch_revocations(), "music-revocation")  # stops before the client closes
    lifecycle.on_drain(music.drain)
    return music


def _start_contact(
    config: Config, http: CurlAsyncHTTPClient, stores: Stores, sites: SiteDirectory, lifecycle: Lifecycle
) -> ContactService:
    email = EmailSender(
        SmtpSettings(
            config.smtp_host,
            config.smtp_port,
            config.smtp_user,
            config.smtp_password,
            config.smtp_from,
            config.delivery_timeout,
        )
    )
    lifecycle.on_close(email.close)
    credits = Credits(stores.db, stores.clock)
    sweeper = CreditSweeper(credits, hold_timeout=credit_hold_timeout(config.delivery_timeout))
    start_background(lifecycle, sweeper.run(), "credit-sweeper")
    return ContactService(
        sites=sites,
        clock=stores.clock,
        limiter=ContactLimiter(stores.redis),
        turnstile=Turnstile(http, config.turnstile_verify_url, config.turnstile_secret, config.turnstile_timeout),
        credits=credits,
        sms=SmsSender(http, config.sms_api_url, config.delivery_timeout),
        email=email,
        discord=DiscordSender(http, config.discord_api_url, config.discord_bot_token, config.delivery_timeout),
    )


# The reconnect wave after a deploy: a drained worker's streams are told to come back spread over 0.5-6 s
# (presence/sse.py DRAIN_RETRY_MS; 1-5 s after a crash), and the bucket refills as the wave comes back, so
# an address reconnects the burst plus 5.5 s of the rate unshed (up to 115 streams at the default 10/s;
# one visitor's tabs, or a NAT of a few, are far fewer), and may open 60 at once (the suite's tests open 40
# from one address). Each token is a stream opened at full speed: the attack bench's storm spends the burst
# in its ramp (40-90 ms added to the visitors' requests sent at that instant; bench/README.md).
BURST_SECONDS = 6.0


def stream_opens(config: Config) -> StreamOpens:
    """The per-address rate on SSE stream opens (common/address_caps.py), its burst sized for a reconnect wave."""
    rate = config.sse_opens_per_address
    return StreamOpens(rate, burst=rate * BURST_SECONDS)


def _start_presence(config: Config, redis: RedisConnector, lifecycle: Lifecycle) -> PresenceService:
    # One pub/sub connection per Redis node; sharded pub/sub on a cluster, decided by what the server is.
    hub = PresenceHub(redis, max_buffer=config.sse_max_buffer, max_streams=config.sse_max_streams)
    hub.start()
    lifecycle.on_close(hub.close)
    start_background(lifecycle, keepalive(hub, config.sse_ping_interval), "presence-keepalive")  # stops first
    lifecycle.on_drain(hub.drain)
    held_sheds = HeldSheds()
    lifecycle.on_drain(held_sheds.drain)
    lifecycle.on_close(held_sheds.drain)
    if config.demo_presence:
        demo = DemoPresence(redis)
        start_background(lifecycle, demo.run(), "presence-demo")
    return PresenceService(redis, hub, held_sheds)
