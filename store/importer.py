"""`import FILE.json`: validate every record, then upsert users and profiles.

All-or-nothing at the validation step: every bad record is reported and
nothing is written when any record (or any rule across records, such as two
profiles claiming one domain) fails; store/import_validation.py checks all of
it, down to what MongoDB can store, before the first write. Each profile gets
a new `version` when its stored content changes, which the page uses for
og:image cache busting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store.import_validation import check_document
from store.mongo import Database


@dataclass
class ImportReport:
    errors: list[str] = field(default_factory=list)
    users: int = 0
    profiles: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _version_of(doc: dict[str, Any]) -> str:
    payload = json.dumps({k: v for k, v in doc.items() if k != "version"}, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


async def import_document(db: Database, data: Any) -> ImportReport:
    checked = check_document(data)
    report = ImportReport(errors=checked.errors)
    if report.errors:
        return report
    # Rules that need the database: owners exist, and a domain belongs to one profile.
    known_users = {record.doc["_id"] for record in checked.users}
    owner_ids = {record.doc["owner_id"] for record in checked.profiles} - known_users
    found: set[str] = set()
    if owner_ids:
        found = {d["_id"] async for d in db.users.find({"_id": {"$in": list(owner_ids)}}, {"_id": 1})}
    for record in checked.profiles:
        owner_id = record.doc["owner_id"]
        if owner_id not in known_users and owner_id not in found:
            report.errors.append(f"{record.where}: owner {owner_id!r} is neither in the file nor already imported")
    if checked.profiles:
        claims = {record.doc["domain"]: record for record in checked.profiles}
        taken = db.profiles.find({"domain": {"$in": list(claims)}}, {"domain": 1})
        async for existing in taken:
            claim = claims[existing["domain"]]
            if claim.doc["_id"] != existing["_id"]:
                report.errors.append(
                    f"{claim.where}: domain {existing['domain']!r} already belongs to profile {existing['_id']!r}"
                )
    if report.errors:
        return report

    users = [record.doc for record in checked.users]
    profiles = [record.doc for record in checked.profiles]
    for user in users:
        # Plan fields are replaced; counters such as credits too (the file is the source of truth).
        await db.users.update_one({"_id": user["_id"]}, {"$set": user}, upsert=True)
        report.users += 1
    for profile in profiles:  # (the validated documents)
        profile["version"] = _version_of(profile)
        held = await db.profiles.find_one({"_id": profile["_id"]}, {"version": 1, "plan_unpublished_at": 1})
        update: dict[str, Any] = {"$set": profile}
        if profile["created_at"] is None:  # keep the first import's time: the reconciler orders by it
            del profile["created_at"]
            update["$setOnInsert"] = {"created_at": datetime.now(UTC)}
        if held is not None and held.get("plan_unpublished_at") is not None:
            # The file states the owner's intent (publish or unpublish); the reconciler's hold ends.
            update["$unset"] = {"plan_unpublished_at": "", "plan_unpublished_reason": ""}
        await db.profiles.update_one({"_id": profile["_id"]}, update, upsert=True)
        report.profiles += 1
    return report
