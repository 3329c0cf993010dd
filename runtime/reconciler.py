"""Runs the plan reconciler (store/plans.py) under a Redis lock, on a schedule inside `serve`.

One run at a time across every process and host: `SET NX PX` on one key with a
random token, released only by its holder (compare-and-delete in Lua), and
expiring on its own if the holder dies. Every change is logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable
from datetime import datetime

from common.tasks import raise_if_cancelling
from store.clock import Clock
from store.errors import describe_error
from store.mongo import Database
from store.plans import PlanChange, reconcile_all
from store.redis_connect import RedisClient, RedisConnector
from store.sites import SiteDirectory

log = logging.getLogger("hepgg.reconciler")

LOCK_KEY = "hepgg:{reconciler}:lock"
LOCK_TTL_MS = 60_000
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class ReconcilerBusy(Exception):
    """Another process holds the lock."""


async def run_once(
    db: Database,
    redis: RedisClient,
    now: datetime,
    on_change: Callable[[PlanChange], None] | None = None,
) -> list[PlanChange]:
    token = secrets.token_hex(16)
    if not await redis.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        raise ReconcilerBusy()
    try:
        changes = await reconcile_all(db, now)
    finally:
        await redis.eval(_RELEASE, 1, LOCK_KEY, token)
    for change in changes:
        log.info(
            "plan reconciler: %s profile %s of owner %s (%s)",
            change.action,
            change.profile_id,
            change.owner_id,
            change.reason,
        )
        if on_change is not None:
            on_change(change)
    return changes


async def run_forever(db: Database, redis: RedisConnector, clock: Clock, sites: SiteDirectory, interval: float) -> None:
    """Reconcile every `interval` seconds (jittered), dropping changed profiles from the site cache."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # jitter: workers don't line up
        try:
            await run_once(db, redis.client, clock.now(), on_change=lambda c: sites.invalidate(profile_id=c.profile_id))
        except ReconcilerBusy:
            pass
        except Exception as exc:  # a store outage, or a bug: log it with its text, try again next time
            raise_if_cancelling()
            log.error("plan reconciler run failed (%s); will retry", describe_error(exc))
