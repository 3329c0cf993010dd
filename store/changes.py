"""Follow MongoDB change streams on profiles and users to drop cached sites early.

Where the server offers change streams (replica-set MongoDB, SecantusDB), a
profile or owner change reaches every process's SiteDirectory within
milliseconds instead of the TTL. Where it does not (a standalone mongod), the
watcher logs once and the TTL remains the bound. A broken stream is reopened
with backoff; after a gap, everything cached is dropped since changes may have
been missed. The runtime runs `ChangeWatcher.run` in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from common.tasks import raise_if_cancelling
from store.errors import describe_error
from store.models import CREDIT_FIELDS, CREDIT_HOLDS
from store.mongo import Database
from store.sites import SiteDirectory

log = logging.getLogger("hepgg.changes")

# A users update touching only these is not worth evicting for: every contact send moves a credit
# counter and its hold, and no cached site reads either (the debit itself is the atomic check).
UNCACHED_USER_FIELDS = frozenset({*CREDIT_FIELDS.values(), CREDIT_HOLDS})

# Codes meaning "this deployment has no change streams" (standalone mongod and similar).
UNSUPPORTED_CODES = {40573, 40324, 20}
AWAIT_MS = 1000  # how long the server holds one getMore open waiting for a change (inside timeoutMS)


class ChangeWatcher:
    def __init__(self, db: Database, sites: SiteDirectory):
        self.db = db
        self.sites = sites
        self.active = asyncio.Event()  # set while a stream is open (tests wait on it)

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except OperationFailure as exc:
                if exc.code in UNSUPPORTED_CODES:
                    log.info("change streams unavailable (%s); profile cache relies on its TTL", exc.code)
                    return
                log.warning("change stream failed (%s); reopening", describe_error(exc))
            except PyMongoError as exc:
                raise_if_cancelling()
                log.warning("change stream interrupted (%s); reopening", describe_error(exc))
            self.active.clear()
            self.sites.invalidate()  # we may have missed changes
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _follow(self) -> None:
        pipeline = [{"$match": {"ns.coll": {"$in": ["profiles", "users"]}}}]
        async with await self.db.watch(pipeline, full_document="updateLookup", max_await_time_ms=AWAIT_MS) as stream:
            self.active.set()
            # try_next, not `async for`: PyMongo applies the client's timeoutMS to a whole `next()`, which waits
            # for a change however long that takes, so an idle stream ended every 5 s (NetworkTimeout, and the
            # cache dropped each time). One try_next is one getMore that the server ends after AWAIT_MS with or
            # without a change: each stays inside timeoutMS, so a hung server is still noticed within 5 s.
            while stream.alive:
                started = time.monotonic()
                change = await stream.try_next()
                if change is not None:
                    self._apply(change)
                elif time.monotonic() - started < 0.05:
                    await asyncio.sleep(0.1)  # a server that ignores maxAwaitTimeMS must not make this spin

    def _apply(self, change: dict[str, Any]) -> None:
        collection = change.get("ns", {}).get("coll")
        key = (change.get("documentKey") or {}).get("_id")
        document = change.get("fullDocument") or {}
        if collection == "profiles":
            # the old domain's negative/positive entry is found through the cached site itself
            self.sites.invalidate(profile_id=key, domain=document.get("domain"))
        elif collection == "users" and not _only_uncached_fields(change):
            self.sites.invalidate(owner_id=key)


def _only_uncached_fields(change: dict[str, Any]) -> bool:
    if change.get("operationType") != "update":
        return False
    description = change.get("updateDescription") or {}
    changed = set(description.get("updatedFields") or {}) | set(description.get("removedFields") or [])
    changed |= {entry.get("field", "") for entry in description.get("truncatedArrays") or [] if isinstance(entry, dict)}
    top_level = {path.split(".", 1)[0] for path in changed}  # a $push reports "credit_holds.3"
    return bool(top_level) and top_level <= UNCACHED_USER_FIELDS
