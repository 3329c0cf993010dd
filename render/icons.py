"""The page's icons: brand marks for well-known link hosts and our own interface glyphs, as one inline sprite.

A page carries a hidden `<svg class="sprite">` with a `<symbol>` for each icon it uses, and every icon
is `<svg class="i"><use href="#id"/></svg>`: no request, nothing for the CSP to admit (inline SVG is
markup, not an image load), and only the symbols that page needs.

Brand paths are vendored from simple-icons (CC0-1.0; the marks stay their owners' trademarks) into
`render/brand_icons.json` by `scripts/refresh_brand_icons.py`, which takes the slugs from `BRAND_HOSTS`.
The interface glyphs below are ours. Nothing here comes from an owner: a link picks an icon by its
validated URL's host, and the sprite is built from these constants only.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

BRAND_DATA = Path(__file__).with_name("brand_icons.json")

# Host (after dropping www./m./mobile.) -> simple-icons slug. A key starting with "." also matches every
# subdomain (alice.bandcamp.com). Only hosts whose pages are the brand's own: no URL shorteners.
BRAND_HOSTS: dict[str, str] = {
    "github.com": "github",
    "gist.github.com": "github",
    "gitlab.com": "gitlab",
    "x.com": "x",
    "twitter.com": "x",
    "instagram.com": "instagram",
    "youtube.com": "youtube",
    "youtu.be": "youtube",
    "music.youtube.com": "youtubemusic",
    "twitch.tv": "twitch",
    "discord.gg": "discord",
    "discord.com": "discord",
    "tiktok.com": "tiktok",
    "reddit.com": "reddit",
    "open.spotify.com": "spotify",
    "spotify.com": "spotify",
    "soundcloud.com": "soundcloud",
    ".bandcamp.com": "bandcamp",
    "bandcamp.com": "bandcamp",
    "steamcommunity.com": "steam",
    "store.steampowered.com": "steam",
    "ko-fi.com": "kofi",
    "patreon.com": "patreon",
    "paypal.me": "paypal",
    "paypal.com": "paypal",
    "bsky.app": "bluesky",
    "t.me": "telegram",
    "telegram.me": "telegram",
    "wa.me": "whatsapp",
    "facebook.com": "facebook",
    "threads.net": "threads",
    "threads.com": "threads",
    "pinterest.com": "pinterest",
    ".tumblr.com": "tumblr",
    "tumblr.com": "tumblr",
    "medium.com": "medium",
    ".substack.com": "substack",
    "dev.to": "devdotto",
    "stackoverflow.com": "stackoverflow",
    "npmjs.com": "npm",
    "pypi.org": "pypi",
    "dribbble.com": "dribbble",
    "behance.net": "behance",
    "figma.com": "figma",
    "linktr.ee": "linktree",
    "snapchat.com": "snapchat",
    "music.apple.com": "applemusic",
    "deezer.com": "deezer",
    "tidal.com": "tidal",
    "vimeo.com": "vimeo",
    "kick.com": "kick",
    "roblox.com": "roblox",
    ".itch.io": "itchdotio",
    "itch.io": "itchdotio",
    "buymeacoffee.com": "buymeacoffee",
    "cash.app": "cashapp",
    "venmo.com": "venmo",
    "signal.me": "signal",
    "letterboxd.com": "letterboxd",
    "goodreads.com": "goodreads",
    "anilist.co": "anilist",
    "myanimelist.net": "myanimelist",
    "osu.ppy.sh": "osu",
    "last.fm": "lastdotfm",
    "trakt.tv": "trakt",
    "gumroad.com": "gumroad",
    ".gumroad.com": "gumroad",
    "etsy.com": "etsy",
}

_STROKE = 'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"'

# Our interface glyphs (24x24). Stroke icons set their own paint; filled ones inherit currentColor.
UI_ICONS: dict[str, str] = {
    # links without a brand
    "web": f'<g {_STROKE}><circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3c2.6 2.5 3.9 5.5 3.9 9s-1.3 6.5-3.9 9c-2.6-2.5-3.9-5.5-3.9-9S9.4 5.5 12 3z"/></g>',
    "mail": f'<g {_STROKE}><rect x="3" y="5" width="18" height="14" rx="2.5"/><path d="m3.5 7 8.5 6 8.5-6"/></g>',
    "go": f'<path {_STROKE} d="M7 17 17 7M9 7h8v8"/>',
    # presence: one per Discord activity type, and offline
    "act-0": f'<g {_STROKE}><path d="M6.5 8h11a4 4 0 0 1 3.9 4.8l-.9 4a2 2 0 0 1-3.4.9L15 15.5H9l-2.1 2.2a2 2 0 0 1-3.4-.9l-.9-4A4 4 0 0 1 6.5 8z"/><path d="M8 10.5v3M6.5 12h3M15 11h.01M17 13h.01"/></g>',
    "act-1": f'<g {_STROKE}><rect x="2.5" y="6" width="13" height="12" rx="2.5"/><path d="m15.5 10.5 6-3.5v10l-6-3.5"/></g>',
    "act-2": f'<g {_STROKE}><path d="M4 16v-4a8 8 0 0 1 16 0v4"/><rect x="3" y="14" width="4.5" height="6.5" rx="1.8"/><rect x="16.5" y="14" width="4.5" height="6.5" rx="1.8"/></g>',
    "act-3": f'<g {_STROKE}><rect x="2.5" y="5" width="19" height="13" rx="2.5"/><path d="M8 21.5h8M10.5 9.2v4.6l4-2.3z"/></g>',
    "act-4": f'<g {_STROKE}><path d="M20.5 11.5a8.5 8 0 0 1-12 7.3L4 20l1.1-3.9a8.5 8 0 1 1 15.4-4.6z"/><path d="M8.5 11.5h.01M12 11.5h.01M15.5 11.5h.01"/></g>',
    "act-5": f'<g {_STROKE}><path d="M8 4h8v5.5a4 4 0 0 1-8 0V4zM8 6H5.5a3 3 0 0 0 3 4.5M16 6h2.5a3 3 0 0 1-3 4.5M12 13.5V17M8.5 20.5h7M10 17h4"/></g>',
    "act-off": f'<path {_STROKE} d="M20 14.6A8.2 8.2 0 1 1 9.4 4a6.6 6.6 0 0 0 10.6 10.6z"/>',
    # the music player
    "note": f'<g {_STROKE}><path d="M9 18V5.5l11-2V16"/><circle cx="6.5" cy="18" r="2.5"/><circle cx="17.5" cy="16" r="2.5"/></g>',
    "play": '<path d="M8 5.6v12.8a1.1 1.1 0 0 0 1.7.9l10-6.4a1.1 1.1 0 0 0 0-1.8l-10-6.4A1.1 1.1 0 0 0 8 5.6z"/>',
    "pause": '<rect x="6" y="5" width="4.2" height="14" rx="1.2"/><rect x="13.8" y="5" width="4.2" height="14" rx="1.2"/>',
    # the view counter
    "eye": f'<g {_STROKE}><path d="M2.5 12S6 5.5 12 5.5 21.5 12 21.5 12 18 18.5 12 18.5 2.5 12 2.5 12z"/><circle cx="12" cy="12" r="3"/></g>',
    # contact channels
    "sms": f'<g {_STROKE}><rect x="6" y="2.5" width="12" height="19" rx="2.5"/><path d="M10.5 18.5h3"/></g>',
}

PRESENCE_ICONS = ("act-0", "act-1", "act-2", "act-3", "act-4", "act-5", "act-off")
MUSIC_ICONS = ("note", "play", "pause")
CONTACT_ICONS = {"email": "mail", "sms": "sms", "discord": "b-discord"}


@lru_cache(maxsize=1)
def brand_paths() -> dict[str, str]:
    """slug -> SVG path data (24x24), from the vendored simple-icons subset."""
    data = json.loads(BRAND_DATA.read_text(encoding="utf-8"))
    return {slug: icon["path"] for slug, icon in data["icons"].items()}


def _host(url: str) -> str:
    host = (urlsplit(url).hostname or "").rstrip(".")
    for prefix in ("www.", "m.", "mobile."):
        if host.startswith(prefix):
            return host[len(prefix) :]
    return host


@lru_cache(maxsize=4096)
def link_icon(url: str) -> str:
    """The sprite id for a link: its brand's mark when the host is well known, else mail or web."""
    if url.lower().startswith("mailto:"):
        return "mail"
    host = _host(url)
    slug = BRAND_HOSTS.get(host)
    if slug is None:
        _, _, parent = host.partition(".")
        while parent and slug is None:
            slug = BRAND_HOSTS.get("." + parent)
            _, _, parent = parent.partition(".")
    if slug is not None and slug in brand_paths():
        return "b-" + slug
    return "web"


def _symbol(icon_id: str) -> str:
    if icon_id.startswith("b-"):
        return f'<symbol id="{icon_id}" viewBox="0 0 24 24"><path d="{brand_paths()[icon_id[2:]]}"/></symbol>'
    return f'<symbol id="{icon_id}" viewBox="0 0 24 24">{UI_ICONS[icon_id]}</symbol>'


@lru_cache(maxsize=256)
def sprite(icon_ids: tuple[str, ...]) -> str:
    """One hidden inline <svg> with a <symbol> per id (deduplicated, in first-use order)."""
    unique = tuple(dict.fromkeys(icon_ids))
    if not unique:
        return ""
    symbols = "".join(_symbol(icon_id) for icon_id in unique)
    return f'<svg class="sprite" aria-hidden="true" focusable="false">{symbols}</svg>'


@lru_cache(maxsize=1024)
def favicon_svg(initials: str, accent: str, ink: str = "#fff") -> bytes:
    """The page's icon when there is no avatar: the initials on the accent colour, as a small SVG.
    `accent` and `ink` are validated hex colours; the initials are escaped as XML text."""
    letters = initials.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    size = 34 if len(initials) < 2 else 28
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
        f'<rect width="64" height="64" rx="16" fill="{accent}"/>'
        f'<text x="32" y="33" dominant-baseline="central" text-anchor="middle" fill="{ink}" '
        f'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="{size}" font-weight="700">'
        f"{letters}</text></svg>"
    ).encode()
