"""Finds the Site (profile + owner) for a host or a profile id, through a short-lived cache.

Staleness bound: an entry is served for at most `ttl` seconds (default 2 s) after
it was read, and is dropped sooner when `invalidate` is called (change streams,
see store/changes.py). Misses for one key share one lookup, and negative answers
are cached too, so a crawler hammering unknown hosts costs one query per TTL.
Visibility is not cached: callers decide it against the clock on every request.

A page lookup (`by_host`) of a profile whose view counter is on reads its count
in the same load, so the counter costs one more query per host per TTL, never
one per page request, and the page rendered for that Site (kept on it) stays
valid as long as the Site: the count shown is at most TTL old, plus the view
flush interval and the 30 s de-duplication window of the views it counts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from common.singleflight import SingleFlight
from store.models import Owner, Profile, Site
from store.mongo import Database
from store.stats import view_count


class SiteDirectory:
    def __init__(self, db: Database, ttl: float = 2.0, max_entries: int = 50_000):
        self.db = db
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Site | None]] = OrderedDict()
        self._flights: SingleFlight[Site | None] = SingleFlight()

    async def by_host(self, host: str) -> Site | None:
        domain = host.strip().lower().rstrip(".")
        return await self._cached(("host", domain), lambda: self._load({"domain": domain}, views=True))

    async def by_id(self, profile_id: str) -> Site | None:
        return await self._cached(("id", profile_id), lambda: self._load({"_id": profile_id}))

    def invalidate(
        self, *, profile_id: str | None = None, owner_id: str | None = None, domain: str | None = None
    ) -> None:
        """Drop entries for a changed profile or owner (everything when called with no argument)."""
        if profile_id is None and owner_id is None and domain is None:
            self._entries.clear()
            return
        for key, (_, site) in list(self._entries.items()):
            if (
                key == ("id", profile_id)
                or key == ("host", domain)
                or (site is not None and (site.profile.id == profile_id or site.owner.id == owner_id))
            ):
                self._entries.pop(key, None)

    async def _cached(self, key: tuple[str, str], load: Callable[[], Awaitable[Site | None]]) -> Site | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]

        async def load_and_store() -> Site | None:
            site = await load()
            self._store(key, site)
            return site

        return await self._flights.run(key, load_and_store)

    def _store(self, key: tuple[str, str], site: Site | None) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, site)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def _load(self, query: dict[str, Any], views: bool = False) -> Site | None:
        """The site matching `query`; with `views`, its view count too when the page shows it."""
        profile_doc = await self.db.profiles.find_one(query)
        if profile_doc is None:
            return None
        owner_doc = await self.db.users.find_one({"_id": profile_doc["owner_id"]})
        if owner_doc is None:
            return None
        profile = Profile.from_doc(profile_doc)
        count = await view_count(self.db, profile.id) if views and profile.toggle("view_counter") else None
        return Site(profile, Owner.from_doc(owner_doc), count)
