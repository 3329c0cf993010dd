"""Views and plays: recorded in memory on the hot path, written in batches, each counted exactly once.

`record_view` and `record_play` only append to a list. A flusher (started by
the server, every `interval` seconds, and once more on shutdown) does the rest:

1. views and plays are de-duplicated per visitor for 30 s with Redis
   `SET NX EX` (global across processes): a view per profile + address +
   User-Agent, a play per profile + track + address + User-Agent (the address
   as the rate limits count it: IPv6 by /64). A profile's keys share its hash
   tag, so one script claims all of a profile's keys in a batch (one command
   per profile, not per view), pipelined per Redis master;
2. accepted events are grouped per profile into a *unit* with a fixed id (a
   round of units carries a bounded number of events, and a flush writes
   rounds back to back while they succeed: a backlog never becomes one write
   too big for the operation timeout). A
   unit's events are inserted into `stat_events` (fixed ids: a retry is
   idempotent), then its counters are added to `profile_stats` by one update
   that only matches while the document does not yet list the unit's id, and
   records it (`applied`, the last few ids). So a retry after a lost reply, a
   timeout or a crash between the two writes never adds a unit twice, and a
   unit whose write failed is never partly applied.

Units are independent: one profile's broken `profile_stats` document (a counter
that is not a number) fails only its own update (`ordered=False`); the other
profiles' counters are written. A unit refused by MongoDB itself PARK_AFTER
times is parked in `stats_parked` with its counters and an error log line (its
events are already in `stat_events`), so it never blocks or inflates anything.
A profile has at most one unit in flight: its newer events wait behind it.

Nothing is dropped when a store is down: views not yet de-duplicated stay in
the first queue, accepted events and units wait for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from common.client_ip import rate_limit_subject
from common.metrics import STATS_FLUSHED
from store.errors import describe_error
from store.mongo import Database
from store.redis_connect import RedisConnector
from store.redis_keys import claim

log = logging.getLogger("hepgg.stats")

DEDUP_SECONDS = 30
DOCUMENTED_KEPT = 100_000  # profile ids remembered as having a profile_stats document (then forgotten at once)
# Building and reading a pipeline is Python work on the event loop: a second's views of a busy process
# (thousands) in one pipeline stalled page requests by tens of ms, so they go in slices.
DEDUP_SLICE = 500
# A write round (events inserted, then counters applied) carries at most this many events, a profile's unit at
# most a unit's worth: a backlog (a burst past what MongoDB takes, or the queue an outage left) is written in
# rounds that each fit in the operation timeout. One unit of every waiting event timed out, was retried whole,
# and grew no smaller: 50,000 of 61,000 views of one profile were still unwritten when bench/cluster_views_ab.py
# stopped waiting for them (2026-12-02).
MAX_UNIT_EVENTS = 1_000
MAX_ROUND_EVENTS = 2_000
MAX_ROUND_SCAN = 10_000  # accepted events looked at to form one round (see _form_units)
MAX_ROUNDS_PER_FLUSH = 50  # rounds written back to back in one flush while each succeeds (the rest: next tick)
MAX_PENDING = 200_000  # past this, oldest undeduplicated events are counted without dedup rather than dropped
APPLIED_KEPT = 64  # unit ids kept per profile_stats document: one unit per profile and process is in flight
PARK_AFTER = 5  # updates refused by MongoDB (not outages) before a unit is parked
MAX_ISRC_KEYS = 200  # distinct tracks counted in one profile's plays_by_isrc; plays beyond still count in `plays`
DUPLICATE_KEY = 11000


@dataclass
class _Event:
    kind: str  # "view" or "play"
    profile_id: str
    owner_id: str
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)
    id: ObjectId = field(default_factory=ObjectId)  # fixed at record time, so a retried insert is idempotent

    def dedup_key(self) -> str:
        if self.kind == "play":
            return play_dedup_key(self.profile_id, self.fields["isrc"], self.fields["ip"], self.fields["user_agent"])
        return view_dedup_key(self.profile_id, self.fields["ip"], self.fields["user_agent"])

    def document(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "kind": self.kind,
            "profile_id": self.profile_id,
            "owner_id": self.owner_id,
            "at": self.at,
            **self.fields,
        }


@dataclass(eq=False)
class _Unit:
    """One profile's accepted events of one flush, and the counters they add (applied exactly once)."""

    profile_id: str
    owner_id: str
    events: list[_Event]
    id: ObjectId = field(default_factory=ObjectId)
    inserted: bool = False  # its events are in stat_events
    refusals: int = 0
    last_error: str = ""

    def increments(self, known_isrcs: set[str] | None = None) -> dict[str, int]:
        """`views`, `plays` and `plays_by_isrc.<ISRC>` (new ISRC keys only while the document has room)."""
        inc: dict[str, int] = defaultdict(int)
        room = MAX_ISRC_KEYS - len(known_isrcs) if known_isrcs is not None else MAX_ISRC_KEYS
        for event in self.events:
            inc[f"{event.kind}s"] += 1
            if event.kind == "play":
                isrc = event.fields["isrc"]
                key = f"plays_by_isrc.{isrc}"
                if key not in inc and not (known_isrcs is not None and isrc in known_isrcs):
                    if room <= 0:
                        continue
                    room -= 1
                inc[key] += 1
        return dict(inc)


def _visitor(ip: str, user_agent: str) -> str:
    return hashlib.blake2b(f"{rate_limit_subject(ip)}\x00{user_agent}".encode(), digest_size=12).hexdigest()


# A profile's dedup keys carry its id as their hash tag (`{p1}`): on a cluster they share one slot, so one
# script claims them all (docs/redis.md: what renaming them meant at deploy).
def view_dedup_key(profile_id: str, ip: str, user_agent: str) -> str:
    return f"hepgg:viewdedup:{{{profile_id}}}:{_visitor(ip, user_agent)}"


def play_dedup_key(profile_id: str, isrc: str, ip: str, user_agent: str) -> str:
    return f"hepgg:playdedup:{{{profile_id}}}:{isrc}:{_visitor(ip, user_agent)}"


async def _claim(redis: RedisConnector, events: list[_Event]) -> list[bool | BaseException]:
    """Whether each event counts (its dedup key was free, or already holds its own id), or the error its
    profile's claim met. The key's value is the event's id: when an earlier try's claim landed but its reply
    was lost (Redis hung or died), the retry finds its own id and the event still counts, once."""
    by_profile: dict[str, list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        by_profile[event.profile_id].append(index)
    groups = list(by_profile.values())
    answers = await claim(
        redis.client,
        [[(events[i].dedup_key(), str(events[i].id)) for i in group] for group in groups],
        DEDUP_SECONDS,
    )
    counted: list[bool | BaseException] = [False] * len(events)
    for group, answer in zip(groups, answers, strict=True):
        for position, index in enumerate(group):
            counted[index] = answer if isinstance(answer, BaseException) else answer[position]
    return counted


class StatsWriter:
    def __init__(self, db: Database, redis: RedisConnector, interval: float = 1.0):
        self.db = db
        self.redis = redis
        self.interval = interval
        self._undeduped: list[_Event] = []  # events awaiting the Redis dedup check
        self._accepted: list[_Event] = []  # events to group into units
        self._units: dict[str, _Unit] = {}  # profile id -> its unit in flight
        self._documented: set[str] = set()  # profile ids whose profile_stats document is known to exist
        self._lock = asyncio.Lock()
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.flushed = {"view": 0, "play": 0}

    def record_view(
        self, profile_id: str, owner_id: str, at: datetime, ip: str, user_agent: str, referer: str | None
    ) -> ObjectId:
        """Queue a view; returns its event id (the value its dedup key will hold, and its `stat_events` _id)."""
        event = _Event(
            "view",
            profile_id,
            owner_id,
            at,
            {
                "ip": ip,
                "user_agent": user_agent[:512],
                "referer": (referer or "")[:1024] or None,
            },
        )
        self._undeduped.append(event)
        return event.id

    def record_play(self, profile_id: str, owner_id: str, at: datetime, isrc: str, ip: str, user_agent: str) -> None:
        """A visitor started a track (music/plays.py decides when); counted once per visitor and track per 30 s."""
        self._undeduped.append(
            _Event("play", profile_id, owner_id, at, {"isrc": isrc, "ip": ip, "user_agent": user_agent[:512]})
        )

    @property
    def pending(self) -> int:
        """Events recorded and not yet written (not a slice the dedup check has in flight: see `flushing`)."""
        return len(self._undeduped) + len(self._accepted) + sum(len(unit.events) for unit in self._units.values())

    @property
    def flushing(self) -> bool:
        """A flush is in progress (its batch is off the queues and not yet written)."""
        return self._flushing

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No flush runs inside (a flush in progress is waited out first): recorded events stay queued."""
        async with self._lock:
            yield

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stats-flusher")

    async def stop(self, budget: float = 10.0) -> None:
        """Stop the ticker and write everything still pending, retrying, for at most `budget` seconds.

        The ticker is asked to stop and given the time to finish the flush it is in; past the
        budget it is cancelled, and a cancelled flush puts its batch back (`unwritten` counts it).
        Shutdown calls this with its flush phase's share of `--shutdown-grace` (common/lifecycle.py).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        if self._task is not None:
            self._stopping.set()
            task, self._task = self._task, None
            done, _ = await asyncio.wait([task], timeout=max(0.0, deadline - loop.time()))
            if not done:
                task.cancel()  # nothing is lost: _dedup puts its slice back, units stay until written
                await asyncio.wait([task], timeout=0.05)
        attempt = 0
        while self.pending and loop.time() < deadline:
            try:
                await asyncio.wait_for(self.flush(), max(0.01, deadline - loop.time()))
            except TimeoutError:
                break
            if self.pending:
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0, max(0.0, deadline - loop.time())))
                attempt += 1

    def unwritten(self) -> dict[str, int]:
        """Views and plays recorded but not (known to be) written: what a stop past its budget leaves."""
        events = [*self._undeduped, *self._accepted, *(e for unit in self._units.values() for e in unit.events)]
        plays = sum(1 for event in events if event.kind == "play")
        return {"views": len(events) - plays, "plays": plays}

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                try:
                    await self.flush()
                except Exception:  # a bug must not stop the ticker: what it held is back in the queues
                    log.exception("stats flush failed; retrying next tick")

    async def flush(self) -> None:
        async with self._lock:
            self._flushing = True
            try:
                await self._dedup()
                await self._write_accepted()
            finally:
                self._flushing = False

    async def _dedup(self) -> None:
        batch, self._undeduped = self._undeduped, []
        kept: list[_Event] = []
        error: BaseException | None = None
        for start in range(0, len(batch), DEDUP_SLICE):
            events = batch[start : start + DEDUP_SLICE]
            try:
                counted = await _claim(self.redis, events)
            except BaseException:  # never drop what was taken off the queue (a bug, or a cancel)
                self._undeduped[:0] = kept + batch[start:]
                raise
            failed = [event for event, count in zip(events, counted, strict=True) if isinstance(count, BaseException)]
            self._accepted.extend(event for event, count in zip(events, counted, strict=True) if count is True)
            if failed:
                error = next(count for count in counted if isinstance(count, BaseException))
                kept.extend(failed)
                if len(failed) == len(events):  # nothing answered: keep the rest unsent, try next tick
                    kept.extend(batch[start + DEDUP_SLICE :])
                    break
        if kept:
            # A key whose master is down (or failing over) stays for the next tick; the others were counted.
            described = describe_error(error) if error is not None else "?"
            log.warning("stats dedup failed for %d events (%s); kept for retry", len(kept), described)
            self._undeduped[:0] = kept
            if len(self._undeduped) > MAX_PENDING:
                overflow = len(self._undeduped) - MAX_PENDING
                self._accepted.extend(self._undeduped[:overflow])
                del self._undeduped[:overflow]

    def _form_units(self) -> None:
        """Group accepted events into a unit per profile that has none in flight, in recorded order, within a
        round's bounds (MAX_UNIT_EVENTS a unit, MAX_ROUND_EVENTS with the units already in flight); the rest
        wait for the next round. At most MAX_ROUND_SCAN events are looked at: this runs on the event loop once
        per round: a scan of a whole 200,000-event backlog took 30-50 ms every round, this 10-17 ms (medians,
        `python -m bench.stats_rounds`)."""
        room = MAX_ROUND_EVENTS - sum(len(unit.events) for unit in self._units.values())
        waiting: list[_Event] = []
        grouped: dict[str, list[_Event]] = defaultdict(list)
        scanned = 0
        for event in self._accepted[:MAX_ROUND_SCAN]:
            if room <= 0:
                break
            scanned += 1
            events = grouped.get(event.profile_id)
            if event.profile_id in self._units or (events is not None and len(events) >= MAX_UNIT_EVENTS):
                waiting.append(event)
            else:
                grouped[event.profile_id].append(event)
                room -= 1
        self._accepted = waiting + self._accepted[scanned:]  # the order they were recorded in
        for profile_id, events in grouped.items():
            self._units[profile_id] = _Unit(profile_id, events[-1].owner_id, events)

    async def _write_accepted(self) -> None:
        """Write rounds back to back while each one is written in full and events wait."""
        for _ in range(MAX_ROUNDS_PER_FLUSH):
            if not await self._write_round() or not self._accepted:
                return

    async def _write_round(self) -> bool:
        """One round: True when every unit in it was written (or parked)."""
        self._form_units()
        units = list(self._units.values())
        if not units:
            return True
        try:
            await self._insert_events([unit for unit in units if not unit.inserted])
            ready = [unit for unit in units if unit.inserted]
            refused: dict[_Unit, str] = {}
            if ready:
                await self._ensure_documents(ready)
                refused = await self._apply(ready, await self._known_isrcs(ready))
            for unit in ready:
                if unit not in refused:
                    self._done(unit)
                elif self._refused(unit, refused[unit]):
                    await self._park(unit)
        except Exception as exc:
            # The store is down or did not answer: the units stay as they are (their ids make the retry exact).
            log.warning("stats write failed (%s); %d events kept for retry", describe_error(exc), self.pending)
            return False
        return not self._units

    async def _insert_events(self, units: list[_Unit]) -> None:
        """Insert the units' events; a unit is `inserted` once all of its events are stored."""
        if not units:
            return
        owner = [unit for unit in units for _ in unit.events]
        failed: set[int] = set()
        try:
            await self.db.stat_events.insert_many(
                [event.document() for unit in units for event in unit.events], ordered=False
            )
        except BulkWriteError as exc:  # "already written by an earlier try" is success; anything else: retry
            failed = {
                error["index"] for error in exc.details.get("writeErrors", []) if error.get("code") != DUPLICATE_KEY
            }
        failed_units = {id(owner[index]) for index in failed}
        for unit in units:
            unit.inserted = id(unit) not in failed_units

    async def _ensure_documents(self, units: list[_Unit]) -> None:
        """Each unit's profile_stats document exists (so the conditional update below never needs an upsert).

        Once per profile per process: nothing deletes a profile_stats document, so a busy profile costs no
        upsert per flush after its first (an operator who deletes one by hand should restart the servers)."""
        new = [unit for unit in units if unit.profile_id not in self._documented]
        if not new:
            return
        try:
            await self.db.profile_stats.bulk_write(
                [
                    UpdateOne({"_id": unit.profile_id}, {"$set": {"owner_id": unit.owner_id}}, upsert=True)
                    for unit in new
                ],
                ordered=False,
            )
        except BulkWriteError as exc:
            # Two processes creating one document race on _id: the loser's document exists all the same.
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                log.warning("profile_stats upsert refused: %s", exc.details.get("writeErrors", [])[:1])
                return
        if len(self._documented) > DOCUMENTED_KEPT:
            self._documented.clear()
        self._documented.update(unit.profile_id for unit in new)

    async def _known_isrcs(self, units: list[_Unit]) -> dict[str, set[str]]:
        """The ISRC keys already in plays_by_isrc, for the profiles whose units count plays."""
        ids = [unit.profile_id for unit in units if any(event.kind == "play" for event in unit.events)]
        if not ids:
            return {}
        known: dict[str, set[str]] = {}
        async for doc in self.db.profile_stats.find({"_id": {"$in": ids}}, {"plays_by_isrc": 1}):
            by_isrc = doc.get("plays_by_isrc")
            known[doc["_id"]] = set(by_isrc) if isinstance(by_isrc, dict) else set()
        return known

    async def _apply(self, units: list[_Unit], known: dict[str, set[str]]) -> dict[_Unit, str]:
        """Add each unit's counters unless its id is already recorded; returns the units MongoDB refused."""
        try:
            await self.db.profile_stats.bulk_write(
                [
                    UpdateOne(
                        {"_id": unit.profile_id, "applied": {"$ne": unit.id}},
                        {
                            "$inc": unit.increments(known.get(unit.profile_id)),
                            "$push": {"applied": {"$each": [unit.id], "$slice": -APPLIED_KEPT}},
                        },
                    )
                    for unit in units
                ],
                ordered=False,
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors"):
                raise  # not known to be durable: retry the lot (the ids make it exact)
            return {units[error["index"]]: str(error.get("errmsg", error.get("code")))[:300] for error in errors}
        return {}

    def _done(self, unit: _Unit) -> None:
        del self._units[unit.profile_id]
        for event in unit.events:
            self.flushed[event.kind] += 1
        for kind in ("view", "play"):
            count = sum(1 for event in unit.events if event.kind == kind)
            if count:
                STATS_FLUSHED.labels(kind).inc(count)

    def _refused(self, unit: _Unit, error: str) -> bool:
        """Note MongoDB's refusal of a unit's update; True when it is time to park the unit."""
        unit.refusals += 1
        unit.last_error = error
        if unit.refusals == 1:
            log.warning("profile_stats update for %s refused (%s); retrying", unit.profile_id, error)
        return unit.refusals >= PARK_AFTER

    async def _park(self, unit: _Unit) -> None:
        """Set aside a unit MongoDB keeps refusing: recorded in stats_parked with its counters, and logged."""
        increments = unit.increments()
        document = {
            "_id": unit.id,
            "profile_id": unit.profile_id,
            "owner_id": unit.owner_id,
            "increments": {key.replace(".", ":"): value for key, value in increments.items()},
            "event_ids": [event.id for event in unit.events],
            "error": unit.last_error,
        }
        try:
            await self.db.stats_parked.insert_one(document)
        except DuplicateKeyError:
            pass  # parked by an earlier try whose reply was lost
        del self._units[unit.profile_id]
        log.error(
            "profile_stats for %s refused %d times (%s): parked unit %s %s in stats_parked (events are in stat_events)",
            unit.profile_id,
            unit.refusals,
            unit.last_error,
            unit.id,
            increments,
        )


async def read_stats(db: Database, profile_id: str) -> dict[str, Any]:
    doc = await db.profile_stats.find_one({"_id": profile_id}) or {}
    return {
        "profile_id": profile_id,
        "views": int(doc.get("views", 0)),
        "plays": int(doc.get("plays", 0)),
        "plays_by_isrc": {k: int(v) for k, v in (doc.get("plays_by_isrc") or {}).items()},
    }


async def view_count(db: Database, profile_id: str) -> int:
    """The profile's counted views (what the page's view counter shows)."""
    doc = await db.profile_stats.find_one({"_id": profile_id}, {"views": 1}) or {}
    return int(doc.get("views", 0))
