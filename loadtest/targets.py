"""What a load-test user can hit on one profile host, read from the page itself.

An operator names hosts (slugs on the base domain, or custom domains); the
rendered page already carries everything else: the OG card URL, the presence
snapshot and stream paths (only for premium owners with the card on), the
music proxy URLs and the contact form actions. Reading them from the page
means the load test needs no database access and follows whatever the page
links to. Pure parsing: no locust, no gevent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from urllib.parse import urlsplit

_OG_IMAGE = re.compile(r'<meta property="og:image" content="([^"]+)"')
_STREAM = re.compile(r'data-stream-url="([^"]+)"')
_SNAPSHOT = re.compile(r'data-snapshot-url="([^"]+)"')
_AUDIO = re.compile(r'<audio[^>]* src="([^"]+)"')
# A contact form's tag, whatever the order of its attributes (the template adds id/aria ones).
_FORM = re.compile(r'<form\b[^>]*\bclass="contact-form"[^>]*>')
_ACTION = re.compile(r'\baction="([^"]+)"')
_CHANNEL = re.compile(r'\bdata-channel="(sms|email|discord)"')
_MUSIC_PATH = re.compile(r"\A/api/v1/profiles/[^/]+/music/([^/]+)\Z")


@dataclass
class SiteTargets:
    """One profile host and the paths its page links to (empty when the page does not show them)."""

    host: str
    og_path: str | None = None
    snapshot_path: str | None = None
    stream_path: str | None = None
    music_paths: list[str] = field(default_factory=list)
    contact_paths: dict[str, str] = field(default_factory=dict)  # channel -> POST path

    @property
    def presence_user(self) -> str | None:
        """The owner id the presence stream is for (the publisher writes to it)."""
        if not self.stream_path:
            return None
        return self.stream_path.rstrip("/").split("/")[-2]


def _path(url: str) -> str:
    """The path (and query) of a possibly absolute URL: requests go to the load test's --host."""
    parts = urlsplit(unescape(url))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def parse_page(host: str, html: str) -> SiteTargets:
    site = SiteTargets(host)
    if match := _OG_IMAGE.search(html):
        site.og_path = _path(match.group(1))
    if match := _SNAPSHOT.search(html):
        site.snapshot_path = _path(match.group(1))
    if match := _STREAM.search(html):
        site.stream_path = _path(match.group(1))
    site.music_paths = [_path(src) for src in _AUDIO.findall(html)]
    for tag in _FORM.findall(html):
        action, channel = _ACTION.search(tag), _CHANNEL.search(tag)
        if action and channel:
            site.contact_paths[channel.group(1)] = _path(action.group(1))
    return site


def with_isrc(music_path: str, isrc: str) -> str:
    """The same profile's music path for another track (the operator's --isrc)."""
    match = _MUSIC_PATH.match(music_path)
    if not match:
        return music_path
    return music_path[: match.start(1)] + isrc


def host_list(
    slugs: str, base_domain: str, custom_domains: str, slug_prefix: str = "", slug_count: int = 0
) -> list[str]:
    """Hosts from comma-separated slugs on the base domain, a numbered range, and custom domains."""
    names = [s.strip() for s in slugs.split(",") if s.strip()]
    names += [f"{slug_prefix}{i}" for i in range(slug_count)]
    base = base_domain.strip().strip(".").lower()
    hosts = [f"{name}.{base}".lower() for name in names]
    hosts += [d.strip().lower() for d in custom_domains.split(",") if d.strip()]
    return hosts
