"""Owners and profiles as the serving tier reads them, and the import format's validation.

Import documents are validated field by field (unknown fields are errors) and
normalised into the documents stored in MongoDB. The read models (`Owner`,
`Profile`, `Site`) are frozen and decide visibility and premium status against a
clock passed in, never against a stored flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from store.theme import TEMPLATES, Theme, parse_theme, theme_errors

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ISRC_PATTERN = re.compile(r"^[A-Za-z0-9]{12}$")
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
EMAIL_PATTERN = re.compile(
    r"^[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
SAFE_LINK_SCHEMES = ("http", "https", "mailto")

LIMITS = {"display_name": 80, "bio": 600, "label": 60, "url": 2048, "title": 200, "links": 50, "music": 20}


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (a trailing Z allowed) -> aware UTC datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 timestamp or null")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def safe_link(url: str) -> bool:
    """Only http(s) and mailto links may reach a page (no javascript:, data: ...)."""
    if not isinstance(url, str) or any(ch in url for ch in "\x00\r\n\t") or url != url.strip():
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() not in SAFE_LINK_SCHEMES:
        return False
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        return False
    return True


# A URL host we are willing to name in a CSP source list: DNS labels, IPv4, or a bracketed IPv6.
_SOURCE_HOST = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$|^\[[0-9a-f:.]+\]$"
)


@lru_cache(maxsize=4096)
def image_origin(url: str) -> str | None:
    """scheme://host[:port] of an http(s) image URL, or None when it has no host that is safe to
    write into a Content-Security-Policy (no spaces, quotes, ';', ',' or userinfo tricks)."""
    if not safe_link(url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    host = host.lower()
    if not _SOURCE_HOST.match(host):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


# Characters that let owner text reorder or hide what is around it: bidi embeddings, overrides and
# isolates, invisible separators, and C0/C1 controls (newline and tab stay). LRM/RLM marks and the
# zero-width (non-)joiners stay: emoji sequences and several scripts need them.
_UNSAFE_TEXT = re.compile(
    "[\u202a-\u202e\u2066-\u2069\u061c\u200b\u2060-\u2064\ufeff\u180e\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def clean_text(value: Any) -> str:
    """Owner text as the page shows it: a string without bidi overrides or invisible characters."""
    return _UNSAFE_TEXT.sub("", value) if isinstance(value, str) else ""


# ---------------------------------------------------------------- read models


@dataclass(frozen=True)
class Owner:
    id: str
    premium_until: datetime | None = None
    suspended: bool = False
    approved: bool = True
    slots: tuple[datetime, ...] = ()
    music_key: str | None = None  # only when music is enabled
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def is_premium(self, now: datetime) -> bool:
        return self.premium_until is not None and self.premium_until > now

    @classmethod
    def from_doc(cls, doc: dict) -> "Owner":
        music = doc.get("music") or {}
        return cls(
            id=doc["_id"],
            premium_until=parse_time(doc.get("premium_until")),
            suspended=bool(doc.get("suspended")),
            approved=bool(doc.get("approved", True)),
            slots=tuple(parse_time(s["expires_at"]) for s in doc.get("slots") or []),
            music_key=music.get("key") if music.get("enabled") and music.get("key") else None,
            raw=doc,
        )


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Track:
    isrc: str
    title: str
    artist: str


@dataclass(frozen=True)
class Profile:
    id: str
    owner_id: str
    domain: str
    template: str
    is_public: bool
    suspended: bool
    expires_at: datetime | None
    created_at: datetime | None
    theme: Theme
    display_name: str
    bio: str
    avatar_url: str | None
    links: tuple[Link, ...]
    music: tuple[Track, ...]
    toggles: dict
    version: str  # changes whenever the stored profile changes (cache keys, og:image ?v=)

    def toggle(self, name: str) -> bool:
        return bool(self.toggles.get(name))

    @classmethod
    def from_doc(cls, doc: dict) -> "Profile":
        content = doc.get("content") or {}
        avatar = content.get("avatar_url")
        template = doc.get("template") if doc.get("template") in TEMPLATES else "classic"
        return cls(
            id=doc["_id"],
            owner_id=doc["owner_id"],
            domain=doc["domain"],
            template=template,
            is_public=doc.get("is_public") in (1, True),
            suspended=bool(doc.get("suspended")),
            expires_at=parse_time(doc.get("expires_at")),
            created_at=parse_time(doc.get("created_at")),
            theme=parse_theme(doc.get("theme") or {}),
            # Read back defensively too: a document written around the importer is held to the same rules.
            display_name=clean_text(content.get("display_name")),
            bio=clean_text(content.get("bio")),
            avatar_url=avatar if isinstance(avatar, str) and image_origin(avatar) else None,
            links=tuple(
                Link(clean_text(l.get("label")), l["url"])
                for l in content.get("links") or []
                if isinstance(l, dict) and isinstance(l.get("url"), str) and safe_link(l["url"])
            ),
            music=tuple(
                Track(t["isrc"].upper(), clean_text(t.get("title")), clean_text(t.get("artist")))
                for t in content.get("music") or []
                if isinstance(t, dict) and isinstance(t.get("isrc"), str) and ISRC_PATTERN.match(t["isrc"])
            ),
            toggles=dict(doc.get("toggles") or {}),
            version=str(doc.get("version") or "0"),
        )


@dataclass(frozen=True)
class Site:
    """A profile with its owner: everything a visitor-facing request needs."""

    profile: Profile
    owner: Owner
    # Values derived from this exact data (the rendered page), kept as long as this object: the site
    # directory replaces the object when the stored rows change, and the memo goes with it.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def is_visible(self, now: datetime) -> bool:
        profile, owner = self.profile, self.owner
        return (
            profile.is_public
            and not profile.suspended
            and not owner.suspended
            and (profile.expires_at is None or profile.expires_at > now)
        )

    def shows_presence(self, now: datetime) -> bool:
        return self.profile.toggle("presence") and self.owner.is_premium(now)

    def shows_powered_by(self, now: datetime) -> bool:
        return not self.owner.is_premium(now) or self.profile.toggle("powered_by")


# ---------------------------------------------------------------- import validation


class _Checker:
    """Collects every problem in one record, with a path for each."""

    def __init__(self, where: str):
        self.where = where
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.where}: {path} {message}")

    def fields(self, obj: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(obj, dict):
            self.error(path, "must be an object")
            return {}
        for key in sorted(set(obj) - allowed):
            self.error(f"{path}.{key}" if path else key, "is not a known field")
        for key in sorted(required - set(obj)):
            self.error(f"{path}.{key}" if path else key, "is required")
        return obj

    def string(
        self,
        obj: dict,
        key: str,
        path: str,
        *,
        max_len: int,
        required: bool = False,
        pattern: re.Pattern | None = None,
        nullable: bool = False,
    ) -> Any:
        value = obj.get(key)
        label = f"{path}.{key}" if path else key
        if value is None:
            if required and not nullable:
                self.error(label, "is required")
            return None
        if not isinstance(value, str):
            self.error(label, "must be a string")
            return None
        if len(value) > max_len:
            self.error(label, f"must be at most {max_len} characters")
        if pattern is not None and not pattern.match(value):
            self.error(label, "has an invalid format")
        return value

    def boolean(self, obj: dict, key: str, path: str, *, int_ok: bool = False) -> bool:
        value = obj.get(key, False)
        ok = isinstance(value, bool) or (int_ok and value in (0, 1) and isinstance(value, int))
        if not ok:
            self.error(f"{path}.{key}" if path else key, "must be true or false" + (" (or 0/1)" if int_ok else ""))
            return False
        return bool(value)

    def count(self, obj: dict, key: str) -> int:
        value = obj.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.error(key, "must be a whole number >= 0")
            return 0
        return value

    def time(self, obj: dict, key: str, path: str = "") -> datetime | None:
        try:
            return parse_time(obj.get(key))
        except ValueError:
            self.error(f"{path}.{key}" if path else key, "must be an ISO 8601 timestamp or null")
            return None


# The owner's paid message credits per channel (contact debits and refunds them; nothing cached reads them).
CREDIT_FIELDS = {"sms": "sms_credits", "email": "email_credits"}
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
TOGGLES = {"presence", "powered_by", "contact_sms", "contact_email", "contact_discord"}


def validate_user(record: Any, index: int) -> tuple[dict | None, list[str]]:
    c = _Checker(
        f"users[{index}]"
        + (f" ({record.get('id')})" if isinstance(record, dict) and isinstance(record.get("id"), str) else "")
    )
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
            "key": c.string(sms, "key", "sms", max_len=512),
            "phone": c.string(sms, "phone", "sms", max_len=16, pattern=PHONE_PATTERN),
            "phone_verified": c.boolean(sms, "phone_verified", "sms"),
        }
    if "email" in user:
        email = c.fields(user["email"], "email", {"enabled", "key", "address", "verified"})
        doc["email"] = {
            "enabled": c.boolean(email, "enabled", "email"),
            "key": c.string(email, "key", "email", max_len=512),
            "address": c.string(email, "address", "email", max_len=254, pattern=EMAIL_PATTERN),
            "verified": c.boolean(email, "verified", "email"),
        }
    if "discord" in user:
        discord = c.fields(user["discord"], "discord", {"channel_id", "bot_present"})
        doc["discord"] = {
            "channel_id": c.string(discord, "channel_id", "discord", max_len=32, pattern=re.compile(r"^[0-9]{1,32}$")),
            "bot_present": c.boolean(discord, "bot_present", "discord"),
        }
    if "music" in user:
        music = c.fields(user["music"], "music", {"enabled", "key"})
        doc["music"] = {
            "enabled": c.boolean(music, "enabled", "music"),
            "key": c.string(music, "key", "music", max_len=512),
        }
    slots = user.get("slots", [])
    if not isinstance(slots, list):
        c.error("slots", "must be a list")
        slots = []
    doc["slots"] = []
    for i, slot in enumerate(slots):
        slot = c.fields(slot, f"slots[{i}]", {"expires_at"}, {"expires_at"})
        expires = c.time(slot, "expires_at", f"slots[{i}]") if slot else None
        if slot and expires is None and "expires_at" in slot:
            c.error(f"slots[{i}].expires_at", "must be a timestamp")
        doc["slots"].append({"expires_at": expires})
    return (None if c.errors else doc), c.errors


def validate_profile(record: Any, index: int) -> tuple[dict | None, list[str]]:
    c = _Checker(
        f"profiles[{index}]"
        + (f" ({record.get('id')})" if isinstance(record, dict) and isinstance(record.get("id"), str) else "")
    )
    prof = c.fields(record, "", PROFILE_FIELDS, {"id", "owner_id", "domain"})
    if not prof:
        return None, c.errors
    doc: dict[str, Any] = {
        "_id": c.string(prof, "id", "", max_len=64, required=True, pattern=ID_PATTERN),
        "owner_id": c.string(prof, "owner_id", "", max_len=64, required=True, pattern=ID_PATTERN),
    }
    domain = prof.get("domain")
    if not isinstance(domain, str) or not DOMAIN_PATTERN.match(domain.strip().lower().rstrip(".")):
        c.error("domain", "must be a host name like alice.hep.gg")
    else:
        doc["domain"] = domain.strip().lower().rstrip(".")
    template = prof.get("template", "classic")
    if template not in TEMPLATES:
        c.error("template", f"must be one of {', '.join(TEMPLATES)}")
    doc["template"] = template
    doc["is_public"] = 1 if c.boolean(prof, "is_public", "", int_ok=True) else 0
    doc["suspended"] = 1 if c.boolean(prof, "suspended", "", int_ok=True) else 0
    doc["expires_at"] = c.time(prof, "expires_at")
    doc["created_at"] = c.time(prof, "created_at")
    for message in theme_errors(prof.get("theme", {})):
        c.error("theme", message.removeprefix("theme").lstrip(". ") if message.startswith("theme ") else message)
    doc["theme"] = prof.get("theme", {})

    content = c.fields(prof.get("content", {}), "content", {"display_name", "bio", "avatar_url", "links", "music"})
    doc["content"] = {
        "display_name": c.string(content, "display_name", "content", max_len=LIMITS["display_name"]) or "",
        "bio": c.string(content, "bio", "content", max_len=LIMITS["bio"]) or "",
        "avatar_url": c.string(content, "avatar_url", "content", max_len=LIMITS["url"], nullable=True),
        "links": [],
        "music": [],
    }
    avatar = doc["content"]["avatar_url"]
    if avatar is not None and not image_origin(avatar):
        c.error("content.avatar_url", "must be an http(s) URL with a plain host name, or null")
    links = content.get("links", [])
    if not isinstance(links, list) or len(links) > LIMITS["links"]:
        c.error("content.links", f"must be a list of at most {LIMITS['links']} links")
        links = []
    for i, link in enumerate(links):
        link = c.fields(link, f"content.links[{i}]", {"label", "url"}, {"label", "url"})
        label = c.string(link, "label", f"content.links[{i}]", max_len=LIMITS["label"], required=True) if link else None
        url = c.string(link, "url", f"content.links[{i}]", max_len=LIMITS["url"], required=True) if link else None
        if url is not None and not safe_link(url):
            c.error(f"content.links[{i}].url", "must be an http(s) or mailto URL")
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
