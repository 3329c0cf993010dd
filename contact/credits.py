"""The owner's SMS and email credits: a debit held until delivery is known, then settled or refunded.

`hold` is one `find_one_and_update({_id, field: {$gt: 0}}, {$inc: {field: -1},
$push: {credit_holds: {id, channel, at}}})`: a single-document operation, so any
number of concurrent sends from any number of processes spend exactly the
balance and no more, and the debit is never on disk without its hold.

Once delivery is known the hold is settled (delivered: the hold is removed) or
refunded (failed: the hold is removed and the credit given back, in one update
conditional on the hold still being there). Nothing is lost when MongoDB fails
in between or the process dies:

- a settle or refund that fails is retried by this process's sweeper
  (`CreditSweeper`, one per worker) every few seconds;
- a hold still pending after `hold_timeout` (the process died, or MongoDB was
  down all along) is refunded by whichever process's sweeper finds it first.

Every removal is conditional on the hold, so a hold is settled or refunded
exactly once whoever gets there first. Where the outcome is unknown (the worker
died mid-delivery, or a delivered send could not be settled before its hold
went stale) the owner gets the credit back: a message the owner did not pay
for, never a payment for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pymongo.errors import PyMongoError

from common.tasks import raise_if_cancelling
from store.clock import Clock
from store.models import CREDIT_FIELDS, CREDIT_HOLDS
from store.mongo import Database

log = logging.getLogger("hepgg.contact.credits")

MAX_RETRIES_HELD = 10_000  # settles/refunds waiting for MongoDB in one process; older ones fall to the stale sweep


def credit_hold_timeout(delivery_timeout: float) -> timedelta:
    """How long a hold may stay pending before a sweeper refunds it: well past any delivery's end
    (a send waits at most `delivery_timeout` per attempt, plus a queue for the SMTP threads)."""
    return timedelta(seconds=max(300.0, 10 * delivery_timeout))


class CreditsUnavailable(Exception):
    """MongoDB could not answer; the send must not go out unpaid."""


@dataclass(frozen=True)
class Hold:
    """One credit taken for one send, pending until the send's outcome is recorded."""

    owner_id: str
    channel: str
    id: str

    @property
    def field(self) -> str:
        return CREDIT_FIELDS[self.channel]


Outcome = Literal["settle", "refund"]


class Credits:
    def __init__(self, db: Database, clock: Clock):
        self.users = db.users
        self.clock = clock
        self.unrecorded: dict[str, tuple[Hold, Outcome]] = {}  # outcomes MongoDB did not take yet (by hold id)

    async def hold(self, owner_id: str, channel: str) -> Hold | None:
        """Take one credit and record the hold in the same update; None when the balance is zero."""
        hold = Hold(owner_id, channel, uuid.uuid4().hex)
        try:
            doc = await self.users.find_one_and_update(
                {"_id": owner_id, hold.field: {"$gt": 0}},
                {
                    "$inc": {hold.field: -1},
                    "$push": {CREDIT_HOLDS: {"id": hold.id, "channel": channel, "at": self.clock.now()}},
                },
                projection={"_id": 1},
            )
        except PyMongoError as exc:
            raise CreditsUnavailable(str(exc)) from exc
        return hold if doc is not None else None

    async def settle(self, hold: Hold) -> None:
        """The send went out: the credit stays spent."""
        await self._record(hold, "settle")

    async def refund(self, hold: Hold) -> None:
        """The send failed: the credit goes back to the owner."""
        await self._record(hold, "refund")

    async def _record(self, hold: Hold, outcome: Outcome) -> None:
        try:
            await self._apply(hold, outcome)
        except PyMongoError as exc:
            raise_if_cancelling()
            log.warning(
                "could not %s %s credit hold %s of owner %s (%s); retrying",
                outcome,
                hold.channel,
                hold.id,
                hold.owner_id,
                type(exc).__name__,
            )
            if len(self.unrecorded) < MAX_RETRIES_HELD:
                self.unrecorded[hold.id] = (hold, outcome)

    async def _apply(self, hold: Hold, outcome: Outcome) -> bool:
        """Remove the hold (and give the credit back on a refund); False when it was already gone."""
        update: dict[str, object] = {"$pull": {CREDIT_HOLDS: {"id": hold.id}}}
        if outcome == "refund":
            update["$inc"] = {hold.field: 1}
        result = await self.users.update_one({"_id": hold.owner_id, f"{CREDIT_HOLDS}.id": hold.id}, update)
        return result.modified_count == 1

    async def retry_unrecorded(self) -> int:
        """Record the outcomes MongoDB missed; how many were recorded now."""
        done = 0
        for hold_id, (hold, outcome) in list(self.unrecorded.items()):
            try:
                await self._apply(hold, outcome)
            except PyMongoError:
                raise_if_cancelling()
                return done  # still down: the next round tries again
            del self.unrecorded[hold_id]
            done += 1
        return done

    async def refund_stale(self, hold_timeout: timedelta) -> int:
        """Refund every hold pending longer than `hold_timeout` (its process died or lost MongoDB); how many."""
        cutoff: datetime = self.clock.now() - hold_timeout
        refunded = 0
        owners = self.users.find({f"{CREDIT_HOLDS}.at": {"$lt": cutoff}}, {CREDIT_HOLDS: 1})
        async for owner in owners:
            for entry in owner.get(CREDIT_HOLDS) or []:
                if not isinstance(entry, dict) or entry.get("channel") not in CREDIT_FIELDS:
                    continue
                at = entry.get("at")
                if isinstance(at, datetime) and at < cutoff and entry.get("id") not in self.unrecorded:
                    hold = Hold(owner["_id"], entry["channel"], str(entry.get("id")))
                    if await self._apply(hold, "refund"):
                        log.warning(
                            "refunded a %s credit to owner %s: hold %s was pending since %s",
                            hold.channel,
                            hold.owner_id,
                            hold.id,
                            at.isoformat(),
                        )
                        refunded += 1
        return refunded


class CreditSweeper:
    """Each worker's loop: retry the outcomes MongoDB missed, refund holds left pending past the bound."""

    def __init__(self, credits: Credits, hold_timeout: timedelta, interval: float = 5.0):
        self.credits = credits
        self.hold_timeout = hold_timeout
        self.interval = interval

    async def sweep(self) -> int:
        await self.credits.retry_unrecorded()
        return await self.credits.refund_stale(self.hold_timeout)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except PyMongoError as exc:
                raise_if_cancelling()
                log.info("credit sweep skipped: MongoDB unavailable (%s)", type(exc).__name__)
