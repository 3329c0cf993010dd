"""The PresenceSnapshot: validation, normalisation, and the Redis names it lives under.

One key per user (`presence:<userID>`, a JSON string with a TTL) and one pub/sub
channel of the same name. Plain data only: no Redis, no Tornado.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

PRESENCE_TTL = 300.0  # seconds a snapshot lives in Redis without an update
STATUSES = ("online", "idle", "dnd", "offline")
ACTIVITY_TYPES = {0: "Playing", 1: "Streaming", 2: "Listening to", 3: "Watching", 4: "Custom", 5: "Competing in"}
KEY_PREFIX = "presence:"
MAX_USER_ID = 128
MAX_TEXT = 512  # Discord caps these at 128; leave room but keep events small
MAX_IMAGE = 2048
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z

_TEXT_FIELDS = {
    "name": MAX_TEXT,
    "details": MAX_TEXT,
    "state": MAX_TEXT,
    "largeText": MAX_TEXT,
    "largeImage": MAX_IMAGE,
}
_TIME_FIELDS = ("startedAt", "endsAt")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SnapshotError(ValueError):
    """A snapshot (or user id) the writer refuses; the message names the field."""


def check_user_id(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise SnapshotError("userID required")
    if len(user_id) > MAX_USER_ID or _CONTROL.search(user_id):
        raise SnapshotError(f"userID must be at most {MAX_USER_ID} printable characters")
    return user_id


def presence_key(user_id: str) -> str:
    """The Redis key, and also the pub/sub channel, of one user's presence."""
    return KEY_PREFIX + user_id


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as the spec's examples."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _activity(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SnapshotError("activity must be an object")
    unknown = sorted(set(raw) - set(_TEXT_FIELDS) - set(_TIME_FIELDS) - {"type"})
    if unknown:
        raise SnapshotError(f"activity has unknown field(s): {', '.join(unknown)}")
    if "type" not in raw:
        raise SnapshotError("activity.type is required (0-5)")
    if not _is_int(raw["type"]) or raw["type"] not in ACTIVITY_TYPES:
        raise SnapshotError("activity.type must be an integer from 0 to 5")
    activity: dict[str, Any] = {}
    for name in ("name", "type", "details", "state", "startedAt", "endsAt", "largeImage", "largeText"):
        if name not in raw or raw[name] is None:
            continue
        value = raw[name]
        if name in _TEXT_FIELDS:
            if not isinstance(value, str):
                raise SnapshotError(f"activity.{name} must be a string")
            if len(value) > _TEXT_FIELDS[name]:
                raise SnapshotError(f"activity.{name} must be at most {_TEXT_FIELDS[name]} characters")
        elif name in _TIME_FIELDS:
            if not _is_int(value) or not 0 <= value <= MAX_EPOCH_MS:
                raise SnapshotError(f"activity.{name} must be a Unix epoch in milliseconds (a whole number)")
        activity[name] = value
    if "startedAt" in activity and "endsAt" in activity and activity["endsAt"] < activity["startedAt"]:
        raise SnapshotError("activity.endsAt must not be before activity.startedAt")
    return activity


def validate_snapshot(raw: Any, now: datetime) -> dict[str, Any]:
    """A clean snapshot in canonical field order with `updatedAt` = now, or SnapshotError.

    A caller's own `updatedAt` is replaced: the writer is the clock of record.
    """
    if not isinstance(raw, dict):
        raise SnapshotError("snapshot must be an object")
    unknown = sorted(set(raw) - {"status", "activity", "updatedAt"})
    if unknown:
        raise SnapshotError(f"snapshot has unknown field(s): {', '.join(unknown)}")
    status = raw.get("status")
    if status not in STATUSES:
        raise SnapshotError(f"status must be one of {', '.join(STATUSES)}")
    clean: dict[str, Any] = {"status": status}
    if raw.get("activity") is not None:
        clean["activity"] = _activity(raw["activity"])
    clean["updatedAt"] = iso_timestamp(now)
    return clean


def encode_snapshot(snapshot: dict[str, Any] | None) -> str:
    """Compact JSON; json.dumps escapes control characters, so it never holds a raw newline."""
    return json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False)


def decode_snapshot(payload: str | bytes | None) -> dict[str, Any] | None:
    """A stored snapshot, or None for a missing or unreadable value."""
    if payload is None:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
