"""Owners and profiles as the serving tier reads them: frozen read models built from stored documents.

`Owner`, `Profile` and `Site` decide visibility and premium status against a
clock passed in, never against a stored flag. Documents are read back
defensively: a document written around the importer is held to the same rules
(unsafe links dropped, text cleaned, an invalid theme replaced by the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from store.formats import ISRC_PATTERN, parse_time
from store.safety import clean_text, image_origin, safe_link
from store.theme import TEMPLATES, Theme, parse_theme

# The owner's paid message credits per channel (contact debits and refunds them; nothing cached reads them).
CREDIT_FIELDS = {"sms": "sms_credits", "email": "email_credits"}
# Credits taken for sends whose outcome is not recorded yet: [{id, channel, at}] (contact/credits.py).
CREDIT_HOLDS = "credit_holds"

Document = dict[str, Any]


def _text(value: object) -> str | None:
    """A stored string setting, stripped; None when missing, not a string or blank."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def _image_url(value: object) -> str | None:
    """An owner's image URL, when it has a host a CSP can name (store/safety.py); else None."""
    return value if isinstance(value, str) and image_origin(value) else None


def _section(doc: Document, name: str) -> Document:
    section = doc.get(name)
    return section if isinstance(section, dict) else {}


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = False
    key: str | None = None  # the owner's own SMS API key
    phone: str | None = None
    phone_verified: bool = False

    @classmethod
    def from_doc(cls, doc: Document) -> SmsSettings:
        return cls(
            enabled=doc.get("enabled") is True,
            key=_text(doc.get("key")),
            phone=_text(doc.get("phone")),
            phone_verified=doc.get("phone_verified") is True,
        )


@dataclass(frozen=True)
class EmailSettings:
    enabled: bool = False
    key: str | None = None
    address: str | None = None
    verified: bool = False

    @classmethod
    def from_doc(cls, doc: Document) -> EmailSettings:
        return cls(
            enabled=doc.get("enabled") is True,
            key=_text(doc.get("key")),
            address=_text(doc.get("address")),
            verified=doc.get("verified") is True,
        )


@dataclass(frozen=True)
class DiscordSettings:
    channel_id: str | None = None
    bot_present: bool = False  # the Hep.gg bot is in the owner's server

    @classmethod
    def from_doc(cls, doc: Document) -> DiscordSettings:
        return cls(channel_id=_text(doc.get("channel_id")), bot_present=doc.get("bot_present") is True)


@dataclass(frozen=True)
class Owner:
    id: str
    premium_until: datetime | None = None
    suspended: bool = False
    approved: bool = True
    slots: tuple[datetime | None, ...] = ()
    music_key: str | None = None  # only when music is enabled
    sms: SmsSettings = SmsSettings()
    email: EmailSettings = EmailSettings()
    discord: DiscordSettings = DiscordSettings()

    def is_premium(self, now: datetime) -> bool:
        return self.premium_until is not None and self.premium_until > now

    @classmethod
    def from_doc(cls, doc: Document) -> Owner:
        music = doc.get("music") or {}
        return cls(
            id=doc["_id"],
            premium_until=parse_time(doc.get("premium_until")),
            suspended=bool(doc.get("suspended")),
            approved=bool(doc.get("approved", True)),
            slots=tuple(parse_time(s["expires_at"]) for s in doc.get("slots") or []),
            music_key=music.get("key") if music.get("enabled") and music.get("key") else None,
            sms=SmsSettings.from_doc(_section(doc, "sms")),
            email=EmailSettings.from_doc(_section(doc, "email")),
            discord=DiscordSettings.from_doc(_section(doc, "discord")),
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
    background_url: str | None  # an image for the page's background (shown with toggles.background_image)
    banner_url: str | None  # an image for the banner at the top (shown with toggles.banner)
    links: tuple[Link, ...]
    music: tuple[Track, ...]
    toggles: dict[str, Any]
    version: str  # changes whenever the stored profile changes (cache keys, og:image ?v=)

    def toggle(self, name: str) -> bool:
        return bool(self.toggles.get(name))

    def lists_track(self, isrc: str) -> bool:
        """Whether the profile shows this track (ISRCs compare case-insensitively; stored upper-case)."""
        return any(track.isrc == isrc.upper() for track in self.music)

    @classmethod
    def from_doc(cls, doc: Document) -> Profile:
        content = doc.get("content") or {}
        template = doc["template"] if doc.get("template") in TEMPLATES else "classic"
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
            display_name=clean_text(content.get("display_name")),
            bio=clean_text(content.get("bio")),
            avatar_url=_image_url(content.get("avatar_url")),
            background_url=_image_url(content.get("background_url")),
            banner_url=_image_url(content.get("banner_url")),
            links=tuple(
                Link(clean_text(link.get("label")), link["url"])
                for link in content.get("links") or []
                if isinstance(link, dict) and isinstance(link.get("url"), str) and safe_link(link["url"])
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
    # The profile's view count as read with it (only for a page lookup of a profile that shows its
    # counter: store/sites.py), so it is as fresh as the cached site: --profile-cache-ttl.
    views: int | None = None
    # Values derived from this exact data (the rendered page), kept as long as this object: the site
    # directory replaces the object when the stored rows change, and the memo goes with it.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

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
