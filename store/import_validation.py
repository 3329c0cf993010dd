"""The import format's validation: every field of every record checked, every problem reported.

Records are validated field by field (unknown fields are errors) and normalised
into the documents stored in MongoDB; `check_document` runs this on a whole
file and adds the rules that span records (unique ids and domains). Everything
that could stop a write is checked here, before the first one: types, lengths,
patterns, whole numbers within MongoDB's 64-bit range, text that UTF-8 (and so
BSON) can carry, and finally each document as BSON within MongoDB's size limit.
store/importer.py adds the rules that need the database and writes nothing
unless all pass. The format is documented in docs/import.md and
docs/import.schema.json (tests/test_import_schema.py holds the two together).

Every message starts with its record, `users[i] (id)` or `profiles[i] (id)`,
then the field's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bson
from bson.errors import BSONError

from store.formats import (
    AVATAR_URL_PATTERN,
    DISCORD_CHANNEL_PATTERN,
    DOMAIN_PATTERN,
    EMAIL_PATTERN,
    ID_PATTERN,
    ISRC_PATTERN,
    LINK_URL_PATTERN,
    PHONE_PATTERN,
    TIMESTAMP_PATTERN,
    parse_time,
)
from store.safety import image_origin, safe_link
from store.theme import TEMPLATES, theme_errors

LIMITS = {"display_name": 80, "bio": 600, "label": 60, "url": 2048, "title": 200, "links": 50, "music": 20}
MAX_SLOTS = 1000
# The owner's own address goes into a To: header: printable ASCII only, on top of the address shape.
OWNER_ADDRESS = re.compile(r"(?=[!-~]+\Z)" + EMAIL_PATTERN.pattern)  # EMAIL_PATTERN is anchored \A...\Z
MAX_COUNT = 2**63 - 1  # a BSON int64
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 - 64 * 1024  # MongoDB's 16 MiB, less room for what the importer adds


def where(kind: str, index: int, record: Any) -> str:
    """A record's name in messages: users[0] (u1), or users[0] when it has no usable id."""
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"{kind}[{index}]" + (f" ({record_id})" if isinstance(record_id, str) and is_text(record_id) else "")


def whole(value: Any) -> int | None:
    """A JSON whole number (1 and 1.0 are the same number in JSON), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def is_text(value: str) -> bool:
    """Whether UTF-8 (and so BSON) can carry `value`: False for a lone surrogate (JSON's "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: str) -> str:
    """A name from the file, safe to print whatever it holds."""
    return value if is_text(value) and value.isprintable() else ascii(value)


class _Checker:
    """Collects every problem in one record, with a path for each."""

    def __init__(self, where: str):
        self.where = where
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.where}: {path} {message}")

    def problem(self, message: str) -> None:
        """A message that names its own field (theme_errors' messages do)."""
        self.errors.append(f"{self.where}: {message}")

    def fields(
        self, obj: Any, path: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            self.error(path, "must be an object")
            return {}
        for key in sorted(set(obj) - allowed):
            self.error(f"{path}.{shown(key)}" if path else shown(key), "is not a known field")
        for key in sorted(required - set(obj)):
            self.error(f"{path}.{key}" if path else key, "is required")
        return obj

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        *,
        max_len: int,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        nullable: bool = False,
        blank_is_unset: bool = False,
    ) -> Any:
        value = obj.get(key)
        label = f"{path}.{key}" if path else key
        if blank_is_unset and value == "":  # dashboard exports write "" for a setting never filled in
            value = None
        if value is None:
            if required and not nullable:
                self.error(label, "is required")
            return None
        if not isinstance(value, str):
            self.error(label, "must be a string")
            return None
        if not is_text(value):
            self.error(label, "must be valid Unicode text (it holds a lone surrogate)")
            return None
        if len(value) > max_len:
            self.error(label, f"must be at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self.error(label, "has an invalid format")
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str, *, int_ok: bool = False) -> bool:
        value = obj.get(key, False)
        ok = isinstance(value, bool) or (int_ok and whole(value) in (0, 1))
        if not ok:
            self.error(f"{path}.{key}" if path else key, "must be true or false" + (" (or 0/1)" if int_ok else ""))
            return False
        return bool(value)

    def count(self, obj: dict[str, Any], key: str) -> int:
        value = whole(obj.get(key, 0))
        if value is None or not 0 <= value <= MAX_COUNT:
            self.error(key, f"must be a whole number from 0 to {MAX_COUNT}")
            return 0
        return value

    def time(self, obj: dict[str, Any], key: str, path: str = "") -> datetime | None:
        value = obj.get(key)
        try:
            if isinstance(value, str) and not TIMESTAMP_PATTERN.fullmatch(value):
                raise ValueError(value)
            return parse_time(value)
        except ValueError:
            self.error(f"{path}.{key}" if path else key, "must be an RFC 3339 time like 2026-01-01T00:00:00Z, or null")
            return None


USER_FIELDS = {
    "id",
    "premium_until",
    "suspended",
    "approved",
    "sms",
    "sms_credits",
    "email",
    "email_credits",
    "discord",
    "music",
    "slots",
}
PROFILE_FIELDS = {
    "id",
    "owner_id",
    "domain",
    "template",
    "is_public",
    "suspended",
    "expires_at",
    "created_at",
    "theme",
    "content",
    "toggles",
}
TOGGLES = {
    "presence",
    "powered_by",
    "contact_sms",
    "contact_email",
    "contact_discord",
    "background_image",  # show content.background_url behind the page
    "banner",  # show content.banner_url at the top of the page
    "view_counter",  # show how many visitors the page has had
}
IMAGE_FIELDS = ("avatar_url", "background_url", "banner_url")  # http(s) image URLs or null


def validate_user(record: Any, index: int) -> tuple[dict[str, Any] | None, list[str]]:
    c = _Checker(where("users", index, record))
    user = c.fields(record, "", USER_FIELDS, {"id"})
    if not user:
        return None, c.errors
    doc: dict[str, Any] = {"_id": c.string(user, "id", "", max_len=64, required=True, pattern=ID_PATTERN)}
    doc["premium_until"] = c.time(user, "premium_until")
    doc["suspended"] = c.boolean(user, "suspended", "")
    doc["approved"] = c.boolean(user, "approved", "") if "approved" in user else True
    doc["sms_credits"] = c.count(user, "sms_credits")
    doc["email_credits"] = c.count(user, "email_credits")
    if "sms" in user:
        sms = c.fields(user["sms"], "sms", {"enabled", "key", "phone", "phone_verified"})
        doc["sms"] = {
            "enabled": c.boolean(sms, "enabled", "sms"),
            "key": c.string(sms, "key", "sms", max_len=512, blank_is_unset=True),
            "phone": c.string(sms, "phone", "sms", max_len=16, pattern=PHONE_PATTERN, blank_is_unset=True),
            "phone_verified": c.boolean(sms, "phone_verified", "sms"),
        }
    if "email" in user:
        email = c.fields(user["email"], "email", {"enabled", "key", "address", "verified"})
        doc["email"] = {
            "enabled": c.boolean(email, "enabled", "email"),
            "key": c.string(email, "key", "email", max_len=512, blank_is_unset=True),
            "address": c.string(email, "address", "email", max_len=254, pattern=OWNER_ADDRESS, blank_is_unset=True),
            "verified": c.boolean(email, "verified", "email"),
        }
    if "discord" in user:
        discord = c.fields(user["discord"], "discord", {"channel_id", "bot_present"})
        doc["discord"] = {
            "channel_id": c.string(
                discord, "channel_id", "discord", max_len=32, pattern=DISCORD_CHANNEL_PATTERN, blank_is_unset=True
            ),
            "bot_present": c.boolean(discord, "bot_present", "discord"),
        }
    if "music" in user:
        music = c.fields(user["music"], "music", {"enabled", "key"})
        doc["music"] = {
            "enabled": c.boolean(music, "enabled", "music"),
            "key": c.string(music, "key", "music", max_len=512, blank_is_unset=True),
        }
    slots = user.get("slots", [])
    if not isinstance(slots, list) or len(slots) > MAX_SLOTS:
        c.error("slots", f"must be a list of at most {MAX_SLOTS} slots")
        slots = []
    doc["slots"] = []
    for i, slot in enumerate(slots):
        slot = c.fields(slot, f"slots[{i}]", {"expires_at"}, {"expires_at"})
        expires = c.time(slot, "expires_at", f"slots[{i}]") if slot else None
        if slot and expires is None and "expires_at" in slot:
            c.error(f"slots[{i}].expires_at", "must be an RFC 3339 time like 2026-01-01T00:00:00Z")
        doc["slots"].append({"expires_at": expires})
    return (None if c.errors else doc), c.errors


def validate_profile(record: Any, index: int) -> tuple[dict[str, Any] | None, list[str]]:
    c = _Checker(where("profiles", index, record))
    prof = c.fields(record, "", PROFILE_FIELDS, {"id", "owner_id", "domain"})
    if not prof:
        return None, c.errors
    doc: dict[str, Any] = {
        "_id": c.string(prof, "id", "", max_len=64, required=True, pattern=ID_PATTERN),
        "owner_id": c.string(prof, "owner_id", "", max_len=64, required=True, pattern=ID_PATTERN),
    }
    domain = prof.get("domain")  # any case, one trailing dot allowed; stored lower-cased without it
    host = domain.lower().removesuffix(".") if isinstance(domain, str) and domain.isascii() else ""
    if not DOMAIN_PATTERN.fullmatch(host):
        c.error("domain", "must be a host name like alice.hep.gg")
    else:
        doc["domain"] = host
    template = prof.get("template", "classic")
    if not isinstance(template, str) or template not in TEMPLATES:
        c.error("template", f"must be one of {', '.join(TEMPLATES)}")
    doc["template"] = template
    doc["is_public"] = 1 if c.boolean(prof, "is_public", "", int_ok=True) else 0
    doc["suspended"] = 1 if c.boolean(prof, "suspended", "", int_ok=True) else 0
    doc["expires_at"] = c.time(prof, "expires_at")
    doc["created_at"] = c.time(prof, "created_at")
    theme = _whole_angle(prof.get("theme", {}))
    for message in theme_errors(theme):
        c.problem(message)  # each names its field: "theme.accent must be ..."
    doc["theme"] = theme

    content = c.fields(prof.get("content", {}), "content", {"display_name", "bio", "links", "music", *IMAGE_FIELDS})
    doc["content"] = {
        "display_name": c.string(content, "display_name", "content", max_len=LIMITS["display_name"]) or "",
        "bio": c.string(content, "bio", "content", max_len=LIMITS["bio"]) or "",
        "links": [],
        "music": [],
    }
    for name in IMAGE_FIELDS:
        url = c.string(content, name, "content", max_len=LIMITS["url"], nullable=True)
        if url is not None and not (AVATAR_URL_PATTERN.fullmatch(url) and image_origin(url)):
            c.error(f"content.{name}", "must be an http(s) URL with a plain host name, or null")
        if name == "avatar_url" or url is not None:  # an unset background or banner is not stored
            doc["content"][name] = url
    links = content.get("links", [])
    if not isinstance(links, list) or len(links) > LIMITS["links"]:
        c.error("content.links", f"must be a list of at most {LIMITS['links']} links")
        links = []
    for i, link in enumerate(links):
        link = c.fields(link, f"content.links[{i}]", {"label", "url"}, {"label", "url"})
        label = c.string(link, "label", f"content.links[{i}]", max_len=LIMITS["label"], required=True) if link else None
        url = c.string(link, "url", f"content.links[{i}]", max_len=LIMITS["url"], required=True) if link else None
        if url is not None and not (LINK_URL_PATTERN.fullmatch(url) and safe_link(url)):
            c.error(f"content.links[{i}].url", "must be an http(s) or mailto URL in printable ASCII")
        doc["content"]["links"].append({"label": label, "url": url})
    tracks = content.get("music", [])
    if not isinstance(tracks, list) or len(tracks) > LIMITS["music"]:
        c.error("content.music", f"must be a list of at most {LIMITS['music']} tracks")
        tracks = []
    for i, track in enumerate(tracks):
        track = c.fields(track, f"content.music[{i}]", {"isrc", "title", "artist"}, {"isrc"})
        path = f"content.music[{i}]"
        isrc = c.string(track, "isrc", path, max_len=12, required=True, pattern=ISRC_PATTERN) if track else None
        doc["content"]["music"].append(
            {
                "isrc": isrc.upper() if isrc else isrc,
                "title": (c.string(track, "title", path, max_len=LIMITS["title"]) or "") if track else "",
                "artist": (c.string(track, "artist", path, max_len=LIMITS["title"]) or "") if track else "",
            }
        )
    toggles = c.fields(prof.get("toggles", {}), "toggles", TOGGLES)
    doc["toggles"] = {name: c.boolean(toggles, name, "toggles") for name in TOGGLES if name in toggles}
    return (None if c.errors else doc), c.errors


def _whole_angle(theme: Any) -> Any:
    """The theme with a gradient angle written 90.0 read as 90 (the same JSON number)."""
    background = theme.get("background") if isinstance(theme, dict) else None
    if isinstance(background, dict) and isinstance(background.get("angle"), float):
        angle = whole(background["angle"])
        if angle is not None:
            return {**theme, "background": {**background, "angle": angle}}
    return theme


# ---------------------------------------------------------------- a whole file


@dataclass(frozen=True)
class Record:
    """A validated record, ready to store, and its name for messages."""

    where: str
    doc: dict[str, Any]


@dataclass
class CheckedImport:
    users: list[Record] = field(default_factory=list)
    profiles: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check_document(data: Any) -> CheckedImport:
    """Every record validated, the rules across records applied, each document proven storable."""
    checked = CheckedImport()
    errors = checked.errors
    if not isinstance(data, dict):
        errors.append('the file must hold a JSON object like {"users": [...], "profiles": [...]}')
        return checked
    unknown = set(data) - {"users", "profiles"}
    if unknown:
        errors.append(f"unknown top-level fields: {', '.join(shown(key) for key in sorted(unknown))}")
    users_in, profiles_in = data.get("users", []), data.get("profiles", [])
    for name, value in (("users", users_in), ("profiles", profiles_in)):
        if not isinstance(value, list):
            errors.append(f"{name} must be a list")
    if errors:
        return checked
    if not users_in and not profiles_in:
        errors.append("nothing to import: the file has no users and no profiles")
        return checked
    for kind, records, validate, into in (
        ("users", users_in, validate_user, checked.users),
        ("profiles", profiles_in, validate_profile, checked.profiles),
    ):
        for i, record in enumerate(records):
            doc, problems = validate(record, i)
            errors += problems
            if doc is not None:
                into.append(Record(where(kind, i, record), doc))
    _check_unique(checked.users, "_id", "user id", errors)
    _check_unique(checked.profiles, "_id", "profile id", errors)
    _check_unique(checked.profiles, "domain", "domain", errors)
    for record in (*checked.users, *checked.profiles):
        _check_storable(record, errors)
    return checked


def _check_unique(records: list[Record], key: str, what: str, errors: list[str]) -> None:
    first: dict[Any, Record] = {}
    for record in records:
        value = record.doc[key]
        if value in first:
            errors.append(
                f"{record.where}: {what} {value!r} appears more than once in the file (first in {first[value].where})"
            )
        else:
            first[value] = record


def _check_storable(record: Record, errors: list[str]) -> None:
    """The last line of defence: what the fields' checks let through must encode as BSON, within the size limit."""
    try:
        size = len(bson.encode(record.doc))
    except (BSONError, OverflowError, UnicodeEncodeError, TypeError, ValueError) as exc:
        errors.append(f"{record.where}: cannot be stored in MongoDB ({type(exc).__name__}: {exc})")
        return
    if size > MAX_DOCUMENT_BYTES:
        errors.append(f"{record.where}: is {size} bytes as BSON, over MongoDB's limit")


def validate_document(data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The stored documents of a file (users, profiles) and every problem found in it."""
    checked = check_document(data)
    return [r.doc for r in checked.users], [r.doc for r in checked.profiles], checked.errors
