"""Owner plans: how many profiles an owner may publish, and what to change when that moves.

Allowance = 1 for a free approved account, 2 for a premium one, plus one per
bought 30-day slot that has not expired (none for an unapproved account).

When the published count is over the allowance, the newest profiles (by
`created_at`) are unpublished, keeping their data and recording why in
`plan_unpublished_at` / `plan_unpublished_reason`. When the allowance grows back,
profiles the *plan* unpublished come back, oldest-unpublished first (then oldest
created). A profile the owner unpublished has no `plan_unpublished_at` and is
never republished here.

`decide` is pure; `apply_changes` writes with conditional filters so that a
repeated or concurrent run changes nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from store.formats import parse_time
from store.models import Owner
from store.mongo import Database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PlanChange:
    profile_id: str
    owner_id: str
    action: str  # "unpublish" or "republish"
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile_id, "owner": self.owner_id, "action": self.action, "reason": self.reason}


def allowance(owner: Owner, now: datetime) -> int:
    if not owner.approved:
        return 0
    base = 2 if owner.is_premium(now) else 1
    return base + sum(1 for expires in owner.slots if expires is not None and expires > now)


def _why_over(owner: Owner, now: datetime) -> str:
    if owner.premium_until is not None and owner.premium_until <= now:
        return "premium lapsed"
    if any(expires is not None and expires <= now for expires in owner.slots):
        return "profile slot expired"
    return "over plan allowance"


def decide(owner: Owner, profiles: list[dict[str, Any]], now: datetime) -> list[PlanChange]:
    """The changes that bring one owner's published profiles within their allowance."""
    limit = allowance(owner, now)

    def created(doc: dict[str, Any]) -> datetime:
        return parse_time(doc.get("created_at")) or EPOCH

    published = sorted((p for p in profiles if p.get("is_public") in (1, True)), key=lambda p: (created(p), p["_id"]))
    if len(published) > limit:
        excess = published[limit:]  # newest last, so the tail is unpublished
        reason = _why_over(owner, now)
        return [PlanChange(p["_id"], owner.id, "unpublish", reason) for p in reversed(excess)]
    held = sorted(
        (p for p in profiles if p.get("is_public") not in (1, True) and p.get("plan_unpublished_at") is not None),
        key=lambda p: (parse_time(p["plan_unpublished_at"]), created(p), p["_id"]),
    )
    room = limit - len(published)
    return [PlanChange(p["_id"], owner.id, "republish", "allowance restored") for p in held[:room]]


async def reconcile_owner(db: Database, owner_doc: dict[str, Any], now: datetime) -> list[PlanChange]:
    owner = Owner.from_doc(owner_doc)
    profiles = [
        doc
        async for doc in db.profiles.find(
            {"owner_id": owner.id}, {"is_public": 1, "created_at": 1, "plan_unpublished_at": 1}
        )
    ]
    applied = []
    for change in decide(owner, profiles, now):
        if await apply_change(db, change, now):
            applied.append(change)
    return applied


async def apply_change(db: Database, change: PlanChange, now: datetime) -> bool:
    if change.action == "unpublish":
        result = await db.profiles.update_one(
            {"_id": change.profile_id, "is_public": 1},
            {"$set": {"is_public": 0, "plan_unpublished_at": now, "plan_unpublished_reason": change.reason}},
        )
    else:
        result = await db.profiles.update_one(
            {"_id": change.profile_id, "is_public": 0, "plan_unpublished_at": {"$ne": None}},
            {"$set": {"is_public": 1}, "$unset": {"plan_unpublished_at": "", "plan_unpublished_reason": ""}},
        )
    if result.modified_count:
        await db.plan_changes.insert_one({**change.as_dict(), "at": now})
    return bool(result.modified_count)


async def reconcile_all(db: Database, now: datetime) -> list[PlanChange]:
    changes: list[PlanChange] = []
    async for owner_doc in db.users.find({}):
        changes += await reconcile_owner(db, owner_doc, now)
    return changes
