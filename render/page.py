"""What a profile page shows, decided from plain data: no Tornado, no I/O.

`page_context` turns a Site, the settings and the current time into the
values the templates print. Premium-only features are decided here from the
owner's current state, every render: a stale toggle cannot show the presence
card or hide the footer for a non-premium owner. Templates autoescape every
value; URLs reaching href/src are already limited to http(s)/mailto.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from store.records import Site


@dataclass(frozen=True)
class PageSettings:
    public_origin: str
    turnstile_sitekey: str


def og_image_url(public_origin: str, site: Site) -> str:
    return f"{public_origin}/api/v1/profiles/{quote(site.profile.id)}/og.png?v={quote(site.profile.version)}"


def presence_stream_path(owner_id: str) -> str:
    return f"/api/v1/profiles/presence/{quote(owner_id, safe='')}/stream"


def initials(name: str) -> str:
    words = [w for w in name.split() if w]
    letters = "".join(w[0] for w in words[:2]) or "?"
    return letters.upper()


def page_context(site: Site, settings: PageSettings, now: datetime, canonical_origin: str) -> dict:
    """`canonical_origin` is scheme://host[:port] of the request that matched this profile."""
    profile, owner = site.profile, site.owner
    title = profile.display_name or profile.domain
    description = profile.bio[:200] if profile.bio else f"{title} on Hep.gg"
    show_presence = site.shows_presence(now)
    contact = {
        channel: profile.toggle(f"contact_{channel}") for channel in ("sms", "email", "discord")
    }
    return {
        "profile": profile,
        "theme": profile.theme,
        "title": title,
        "description": description,
        "initials": initials(title),
        "canonical_url": f"{canonical_origin}/",
        "og_image": og_image_url(settings.public_origin, site),
        "show_presence": show_presence,
        "presence_stream": presence_stream_path(owner.id) if show_presence else None,
        "presence_snapshot": f"/api/v1/profiles/presence/{quote(owner.id, safe='')}",
        "show_powered_by": site.shows_powered_by(now),
        "tracks": profile.music if owner.music_key else (),
        "contact": contact,
        "any_contact": any(contact.values()),
        "turnstile_sitekey": settings.turnstile_sitekey,
        "music_url": lambda isrc: f"/api/v1/profiles/{quote(profile.id)}/music/{quote(isrc)}",
        "contact_url": lambda channel: f"/api/v1/profiles/{quote(profile.id)}/contact/{channel}",
    }
