"""What a worker's handlers are given: every long-lived object, each under its own type.

Built once per worker by the composition root (runtime/services.py) and passed to
every handler through its route tuple; `BaseHandler.initialize` only stores it.
A handler reaches a feature as `self.services.contact`, a `ContactService`, so a
reader (and mypy) can follow `self.services.contact.send(...)` to its definition.
The type lives here, beside its users, rather than in runtime/, so that imports
point one way: runtime builds it, handlers read it, features know nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.address_caps import AddressCaps
from common.client_ip import TrustedProxies
from common.lifecycle import Lifecycle
from contact.service import ContactService
from music.service import MusicService
from og.service import OgService
from presence.service import PresenceService
from render.page import PageSettings
from store.changes import ChangeWatcher
from store.clock import Clock
from store.mongo import Client, Database
from store.redis_connect import RedisConnector
from store.sites import SiteDirectory
from store.stats import StatsWriter


@dataclass(frozen=True)
class HandlerSettings:
    """The options handlers read (the rest of the configuration stays with the runtime)."""

    base_domain: str  # the apex; profile slots are <slug>.<base_domain>
    exempt_domains: tuple[str, ...]  # roots that always go to the dashboard
    dashboard_url: str
    page: PageSettings  # what the profile page depends on (Turnstile's site key and script, image hosts)
    demo: bool = False  # `serve --demo`: the demo's own assets are served at /_demo/


@dataclass
class Services:
    settings: HandlerSettings
    clock: Clock
    mongo: Client
    db: Database
    redis: RedisConnector  # read `.client` at each use: a late cluster detection replaces it
    sites: SiteDirectory  # cached profile + owner lookups
    stats: StatsWriter  # batched views and plays
    trusted_proxies: TrustedProxies
    address_caps: AddressCaps  # open connections (SSE streams included) per client address
    og: OgService  # the card renderer: process pool, card cache, avatar fetcher
    music: MusicService  # the long-stream curl client, open streams, revocation
    contact: ContactService  # limiter, Turnstile, credits, delivery
    presence: PresenceService  # snapshots and the process-wide SSE hub
    lifecycle: Lifecycle  # closers, drainers and the draining flag
    change_watcher: ChangeWatcher  # follows MongoDB change streams into `sites`
    metrics_dir: str | None = None  # where `serve`'s workers write metrics (None: this process only)

    @property
    def draining(self) -> bool:
        """True once the worker stopped accepting (SIGTERM): new streams are refused or shed."""
        return self.lifecycle.draining

    async def ping_mongo(self) -> None:
        await self.mongo.admin.command("ping")

    async def ping_redis(self) -> None:
        await self.redis.check()  # on a cluster: cluster_state:ok and every master answers PING
