"""`import FILE.json`: validate every record, then upsert users and profiles.

All-or-nothing at the validation step: every bad record is reported and
nothing is written when any record (or any cross-record rule, such as two
profiles claiming one domain) fails. Each profile gets a new `version` when its
stored content changes, which the page uses for og:image cache busting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store.import_validation import validate_profile, validate_user
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


def validate_document(data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    errors: list[str] = []
    if not isinstance(data, dict):
        return [], [], ['the file must hold a JSON object like {"users": [...], "profiles": [...]}']
    unknown = set(data) - {"users", "profiles"}
    if unknown:
        errors.append(f"unknown top-level fields: {', '.join(sorted(unknown))}")
    users_in, profiles_in = data.get("users", []), data.get("profiles", [])
    if not isinstance(users_in, list) or not isinstance(profiles_in, list):
        return [], [], [*errors, "users and profiles must be lists"]
    users, profiles = [], []
    for i, record in enumerate(users_in):
        doc, errs = validate_user(record, i)
        errors += errs
        if doc:
            users.append(doc)
    for i, record in enumerate(profiles_in):
        doc, errs = validate_profile(record, i)
        errors += errs
        if doc:
            profiles.append(doc)
    _check_unique(users, "_id", "user id", errors)
    _check_unique(profiles, "_id", "profile id", errors)
    _check_unique(profiles, "domain", "domain", errors)
    return users, profiles, errors


def _check_unique(docs: list[dict[str, Any]], key: str, what: str, errors: list[str]) -> None:
    seen: set[Any] = set()
    for doc in docs:
        if doc[key] in seen:
            errors.append(f"{what} {doc[key]!r} appears more than once in the file")
        seen.add(doc[key])


async def import_document(db: Database, data: Any) -> ImportReport:
    users, profiles, errors = validate_document(data)
    report = ImportReport(errors=errors)
    if errors:
        return report
    # Rules that need the database: owners exist, and a domain belongs to one profile.
    known_users = {u["_id"] for u in users}
    owner_ids = {p["owner_id"] for p in profiles} - known_users
    if owner_ids:
        found = {d["_id"] async for d in db.users.find({"_id": {"$in": list(owner_ids)}}, {"_id": 1})}
        for missing in sorted(owner_ids - found):
            report.errors.append(f"owner {missing!r} is neither in the file nor already imported")
    if profiles:
        taken = db.profiles.find({"domain": {"$in": [p["domain"] for p in profiles]}}, {"domain": 1})
        claims = {p["domain"]: p["_id"] for p in profiles}
        async for existing in taken:
            if claims[existing["domain"]] != existing["_id"]:
                report.errors.append(f"domain {existing['domain']!r} already belongs to profile {existing['_id']!r}")
    if report.errors:
        return report

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
