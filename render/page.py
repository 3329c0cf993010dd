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
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from render.colour import CARD, GLOW, GLOW_2, HOVER, TINT, page_inks
from render.icons import CONTACT_ICONS, MUSIC_ICONS, PRESENCE_ICONS, link_icon, sprite
from render.security import TURNSTILE_ORIGIN, page_csp
from render.text import compact_count, initials
from store.models import Site
from store.safety import allowed_image_origin, image_origin
from store.theme import Theme

# Explicit rendering: static/contact.js loads the widget when a visitor first opens a form.
TURNSTILE_SCRIPT = f"{TURNSTILE_ORIGIN}/turnstile/v0/api.js?render=explicit"
CONTACT_CHANNELS = ("email", "sms", "discord")  # the order of the contact tabs
CONTACT_NAMES = {"email": "Email", "sms": "Text", "discord": "Discord"}


@dataclass(frozen=True)
class PageSettings:
    """The server's settings a page depends on (built once per worker: runtime/services.py)."""

    public_origin: str
    turnstile_sitekey: str
    # Cloudflare's script, or the demo's same-origin stand-in (`serve --demo`), which needs no CSP source.
    turnstile_script: str = TURNSTILE_SCRIPT
    # Hosts an owner's background image and banner may come from (--image-hosts); others are not shown.
    image_hosts: frozenset[str] = frozenset()

    @property
    def turnstile_is_third_party(self) -> bool:
        return self.turnstile_script.startswith(TURNSTILE_ORIGIN + "/")


def og_image_url(public_origin: str, site: Site) -> str:
    return f"{public_origin}/api/v1/profiles/{quote(site.profile.id)}/og.png?v={quote(site.profile.version)}"


def presence_stream_path(owner_id: str) -> str:
    return f"/api/v1/profiles/presence/{quote(owner_id, safe='')}/stream"


def _percent(fraction: float) -> str:
    return f"{round(fraction * 100, 1):g}%"


@lru_cache(maxsize=1024)
def theme_css(theme: Theme, backdrop: bool = False) -> str:
    """The page's one inline <style>: custom properties from validated hex colours, inks that reach WCAG AA
    on this theme (render/colour.py) and a font stack we wrote (store/theme.py), so nothing an owner typed
    reaches CSS. The CSP allows it by its hash."""
    inks = page_inks(theme, backdrop)
    strength = inks.decoration
    # The card's white, as render/colour.py modelled it when it chose the inks (light text: scaled with decoration).
    card_white = CARD["light-text"] * strength if inks.dark else CARD["dark-text"]
    card = f"rgba(255,255,255,{round(card_white, 3):g})"
    return (
        f":root{{--accent:{theme.accent};--bg:{theme.background_css};--bg-solid:{theme.background_from};"
        f"--font:{theme.font_stack};--fg:{inks.fg};--muted:{inks.muted};--on-accent:{inks.on_accent};"
        f"--accent-deep:{inks.accent_deep};--accent-text:{inks.accent_text};"
        f"--ok:{inks.ok};--err:{inks.error};--warn:{inks.warn};--card:{card};"
        f"--line:{'rgba(255,255,255,.12)' if inks.dark else 'rgba(0,0,0,.12)'};"
        f"--glow:color-mix(in srgb,var(--accent) {_percent(GLOW * strength)},transparent);"
        f"--glow2:{_percent(GLOW_2 * strength)};"
        f"--soft:color-mix(in srgb,var(--accent) {_percent(HOVER * strength)},transparent);"
        f"--tint:color-mix(in srgb,var(--fg) {_percent(TINT * strength)},transparent)"
        + (f";--backdrop:{inks.backdrop:g}" if backdrop else "")
        + "}"
    )


def page_context(site: Site, settings: PageSettings, now: datetime, canonical_origin: str) -> dict[str, Any]:
    """`canonical_origin` is scheme://host[:port] of the request that matched this profile."""
    profile, owner = site.profile, site.owner
    title = profile.display_name or profile.domain
    description = profile.bio[:200] if profile.bio else f"{title} on Hep.gg"
    show_presence = site.shows_presence(now)
    contact = {channel: profile.toggle(f"contact_{channel}") for channel in CONTACT_CHANNELS}
    channels = tuple(channel for channel in CONTACT_CHANNELS if contact[channel])
    tracks = profile.music if owner.music_key else ()
    icons = [link_icon(link.url) for link in profile.links] + (["go"] if profile.links else [])
    icons += [*(PRESENCE_ICONS if show_presence else ()), *(MUSIC_ICONS if tracks else ())]
    icons += [CONTACT_ICONS[channel] for channel in channels]
    # An owner's images: the avatar from any host (its origin goes into img-src), a background image and a
    # banner only when toggled on and from --image-hosts; a background only when some opacity lets the
    # text still read on it (render/colour.py).
    toggled = {name: profile.toggle(name) for name in ("background_image", "banner")}
    banner_origin = allowed_image_origin(profile.banner_url, settings.image_hosts) if toggled["banner"] else None
    backdrop_origin = (
        allowed_image_origin(profile.background_url, settings.image_hosts) if toggled["background_image"] else None
    )
    if backdrop_origin and not page_inks(profile.theme, True).backdrop:
        backdrop_origin = None
    if site.views is not None:
        icons.append("eye")
    css = theme_css(profile.theme, backdrop_origin is not None)
    avatar_origin = image_origin(profile.avatar_url) if profile.avatar_url else None
    csp = page_csp(
        image_origins=tuple(origin for origin in (avatar_origin, backdrop_origin, banner_origin) if origin),
        presence=show_presence,
        turnstile=bool(settings.turnstile_sitekey) and bool(channels) and settings.turnstile_is_third_party,
        inline_style=css,
    )
    return {
        "profile": profile,
        "theme": profile.theme,
        "theme_css": css,
        "dark": page_inks(profile.theme).dark,  # light text on a dark background (html class, color-scheme)
        "content_security_policy": csp,
        "title": title,
        "description": description,
        "initials": initials(title),
        "canonical_url": f"{canonical_origin}/",
        "og_image": og_image_url(settings.public_origin, site),
        "show_presence": show_presence,
        "presence_stream": presence_stream_path(owner.id) if show_presence else None,
        "presence_snapshot": f"/api/v1/profiles/presence/{quote(owner.id, safe='')}",
        "show_powered_by": site.shows_powered_by(now),
        "tracks": tracks,
        "contact": contact,
        "contact_channels": channels,
        "contact_names": CONTACT_NAMES,
        "contact_icons": CONTACT_ICONS,
        "any_contact": bool(channels),
        "turnstile_sitekey": settings.turnstile_sitekey,
        "turnstile_script": settings.turnstile_script,
        "sprite": sprite(tuple(icons)),
        "backdrop_url": profile.background_url if backdrop_origin else None,
        "banner_url": profile.banner_url if banner_origin else None,
        "views": site.views,
        "views_shown": compact_count(site.views) if site.views is not None else "",
        "link_icon": link_icon,
        # The avatar's origin is already in img-src; without one, our own initials icon (handlers/page.py).
        "favicon_url": profile.avatar_url or f"/favicon.svg?v={quote(profile.version)}",
        "music_url": lambda isrc: f"/api/v1/profiles/{quote(profile.id)}/music/{quote(isrc)}",
        "contact_url": lambda channel: f"/api/v1/profiles/{quote(profile.id)}/contact/{channel}",
    }
