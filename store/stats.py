"""Views and plays: recorded in memory on the hot path, written in batches.

`record_view` and `record_play` only append to a list. A flusher (started by
the server, every `interval` seconds, and once more on shutdown) does the rest:

1. views are de-duplicated per profile + IP + User-Agent for 30 s with Redis
   `SET NX EX` (one pipeline for the batch, so it is global across processes);
2. accepted views and plays become one `insert_many` of events and one
   `$inc` per profile in `profile_stats`.

Nothing is dropped when a store is down: a batch that fails goes back to the
front of its queue and is retried on the next tick (views not yet
de-duplicated stay in the first queue; accepted ones wait in the second, so a
retry never double counts).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from common.client_ip import rate_limit_subject
from common.metrics import STATS_FLUSHED
from store.errors import describe_error
from store.mongo import Database
from store.redis_connect import RedisConnector
from store.redis_keys import AddCommand, per_key

log = logging.getLogger("hepgg.stats")

VIEW_DEDUP_SECONDS = 30
# Building and reading a pipeline is Python work on the event loop: a second's views of a busy process
# (thousands) in one pipeline stalled page requests by tens of ms, so they go in slices.
DEDUP_SLICE = 500
MAX_PENDING = 200_000  # past this, oldest undeduplicated views are counted without dedup rather than dropped


@dataclass
class _Event:
    kind: str  # "view" or "play"
    profile_id: str
    owner_id: str
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)
    id: ObjectId = field(default_factory=ObjectId)  # fixed at record time, so a retried insert is idempotent


def view_dedup_key(profile_id: str, ip: str, user_agent: str) -> str:
    digest = hashlib.blake2b(f"{rate_limit_subject(ip)}\x00{user_agent}".encode(), digest_size=12).hexdigest()
    return f"hepgg:viewdedup:{profile_id}:{digest}"


def _claim(keys: list[str], ids: list[str]) -> AddCommand:
    """SET key id NX EX GET for the i-th view. The value is the event's id and GET returns what was there:
    when an earlier try's SET landed but its reply was lost (Redis hung or died), the retry sees its own id."""

    def add(pipe: Pipeline | ClusterPipeline, i: int) -> object:
        return pipe.set(keys[i], ids[i], nx=True, ex=VIEW_DEDUP_SECONDS, get=True)

    return add


class StatsWriter:
    def __init__(self, db: Database, redis: RedisConnector, interval: float = 1.0):
        self.db = db
        self.redis = redis
        self.interval = interval
        self._undeduped: list[_Event] = []  # views awaiting the Redis dedup check
        self._accepted: list[_Event] = []  # views and plays to write to MongoDB
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.flushed = {"view": 0, "play": 0}

    def record_view(
        self, profile_id: str, owner_id: str, at: datetime, ip: str, user_agent: str, referer: str | None
    ) -> None:
        self._undeduped.append(
            _Event(
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
        )

    def record_play(self, profile_id: str, owner_id: str, at: datetime, isrc: str) -> None:
        self._accepted.append(_Event("play", profile_id, owner_id, at, {"isrc": isrc}))

    @property
    def pending(self) -> int:
        return len(self._undeduped) + len(self._accepted)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stats-flusher")

    async def stop(self) -> None:
        """Stop the ticker and write everything still pending (retrying briefly).

        The ticker is asked to stop, never cancelled: cancelling it mid-flush would drop the batch it
        had taken off the queue (CancelledError skips the keep-for-retry path).
        """
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        for attempt in range(20):
            await self.flush()
            if not self.pending:
                return
            await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
        log.error("shutting down with %d view/play events unwritten", self.pending)

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
            await self._dedup_views()
            await self._write_accepted()

    async def _dedup_views(self) -> None:
        batch, self._undeduped = self._undeduped, []
        kept: list[_Event] = []
        error: BaseException | None = None
        for start in range(0, len(batch), DEDUP_SLICE):
            views = batch[start : start + DEDUP_SLICE]
            keys = [view_dedup_key(e.profile_id, e.fields["ip"], e.fields["user_agent"]) for e in views]

            try:
                previous = await per_key(self.redis.client, keys, _claim(keys, [str(e.id) for e in views]))
            except BaseException:  # never drop what was taken off the queue (a bug, or a cancel)
                self._undeduped[:0] = kept + batch[start:]
                raise
            failed = [event for event, held in zip(views, previous, strict=True) if isinstance(held, BaseException)]
            self._accepted.extend(
                event
                for event, held in zip(views, previous, strict=True)
                if not isinstance(held, BaseException) and held in (None, str(event.id))
            )
            if failed:
                error = next(held for held in previous if isinstance(held, BaseException))
                kept.extend(failed)
                if len(failed) == len(views):  # nothing answered: keep the rest unsent, try next tick
                    kept.extend(batch[start + DEDUP_SLICE :])
                    break
        if kept:
            # A key whose master is down (or failing over) stays for the next tick; the others were counted.
            described = describe_error(error) if error is not None else "?"
            log.warning("view dedup failed for %d views (%s); kept for retry", len(kept), described)
            self._undeduped[:0] = kept
            if len(self._undeduped) > MAX_PENDING:
                overflow = len(self._undeduped) - MAX_PENDING
                self._accepted.extend(self._undeduped[:overflow])
                del self._undeduped[:overflow]

    async def _insert_events(self, batch: list[_Event]) -> None:
        docs = [
            {"_id": e.id, "kind": e.kind, "profile_id": e.profile_id, "owner_id": e.owner_id, "at": e.at, **e.fields}
            for e in batch
        ]
        try:
            await self.db.stat_events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                raise  # anything but "already written by an earlier try"

    async def _write_accepted(self) -> None:
        batch, self._accepted = self._accepted, []
        if not batch:
            return
        increments: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        owners: dict[str, str] = {}
        for event in batch:
            owners[event.profile_id] = event.owner_id
            increments[event.profile_id][f"{event.kind}s"] += 1
            if event.kind == "play":
                increments[event.profile_id][f"plays_by_isrc.{event.fields['isrc']}"] += 1
        try:
            await self._insert_events(batch)
            await self.db.profile_stats.bulk_write(
                [
                    UpdateOne({"_id": pid}, {"$inc": dict(inc), "$set": {"owner_id": owners[pid]}}, upsert=True)
                    for pid, inc in increments.items()
                ],
                ordered=False,
            )
        except Exception as exc:
            # Keep the batch: a retry re-inserts events idempotently (fixed ids) and re-applies the counters.
            log.warning("stats write failed (%s); %d events kept for retry", describe_error(exc), len(batch))
            self._accepted[:0] = batch
            return
        for event in batch:
            self.flushed[event.kind] += 1
        for kind in ("view", "play"):
            count = sum(1 for event in batch if event.kind == kind)
            if count:
                STATS_FLUSHED.labels(kind).inc(count)


async def read_stats(db: Database, profile_id: str) -> dict[str, Any]:
    doc = await db.profile_stats.find_one({"_id": profile_id}) or {}
    return {
        "profile_id": profile_id,
        "views": int(doc.get("views", 0)),
        "plays": int(doc.get("plays", 0)),
        "plays_by_isrc": {k: int(v) for k, v in (doc.get("plays_by_isrc") or {}).items()},
    }
