"""The page's icons (issue 21): brand marks for well-known link hosts, the inline sprite, the favicon."""

from __future__ import annotations

import json
import re

import pytest

from render.icons import BRAND_DATA, BRAND_HOSTS, brand_paths, favicon_svg, link_icon, sprite

from conftest import base_document


@pytest.mark.parametrize(
    ("url", "icon"),
    [
        ("https://github.com/alice", "b-github"),
        ("https://www.youtube.com/@alice", "b-youtube"),
        ("https://youtu.be/xyz", "b-youtube"),
        ("https://m.twitch.tv/alice", "b-twitch"),
        ("https://alice.bandcamp.com/album/x", "b-bandcamp"),  # any subdomain of a "." entry
        ("https://x.com/alice", "b-x"),
        ("https://twitter.com/alice", "b-x"),
        ("https://music.youtube.com/watch?v=1", "b-youtubemusic"),  # the longer host wins
        ("https://GitHub.com./alice", "b-github"),  # case and the FQDN dot
        ("mailto:alice@example.com", "mail"),
        ("MAILTO:alice@example.com", "mail"),
        # Look-alikes get the generic icon, never a brand they are not.
        ("https://evilgithub.com/", "web"),
        ("https://github.com.evil.example/", "web"),
        ("https://example.com/?u=https://github.com/", "web"),
        ("https://alice.github.io/", "web"),
        ("http://192.0.2.1/", "web"),
    ],
)
def test_link_icon_by_host(url, icon):
    assert link_icon(url) == icon


def test_every_mapped_brand_is_vendored():
    data = json.loads(BRAND_DATA.read_text())
    assert "CC0" in data["source"]
    assert set(BRAND_HOSTS.values()) <= set(data["icons"])  # scripts/refresh_brand_icons.py reports any gap
    for slug, path in brand_paths().items():
        assert re.fullmatch(r"[MmZzLlHhVvCcSsQqTtAa0-9eE.,\s-]+", path), slug  # path data only, nothing to escape


def test_sprite_holds_exactly_the_icons_asked_for():
    svg = sprite(("b-github", "web", "b-github", "go"))
    assert re.findall(r'<symbol id="([^"]+)"', svg) == ["b-github", "web", "go"]
    assert svg.startswith('<svg class="sprite" aria-hidden="true"') and "<script" not in svg
    assert sprite(()) == ""


def test_favicon_escapes_its_text():
    svg = favicon_svg("<&", "#7c3aed").decode()
    assert "&lt;&amp;</text>" in svg and 'fill="#7c3aed"' in svg


async def test_page_carries_only_the_icons_it_uses(app_server):
    document = base_document(
        toggles={
            "presence": False,
            "powered_by": True,
            "contact_sms": False,
            "contact_email": False,
            "contact_discord": True,
        }
    )
    content = document["profiles"][0]["content"]
    content["links"] = [
        {"label": "Code", "url": "https://github.com/alice"},
        {"label": "Blog", "url": "https://blog.example/"},
    ]
    content["music"] = []
    await app_server.load(document)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert re.findall(r'<symbol id="([^"]+)"', html) == ["b-github", "web", "go", "b-discord"]
    assert html.count('<use href="#b-github"/>') == 1 and html.count('<use href="#web"/>') == 1
    assert 'id="act-0"' not in html and 'id="play"' not in html  # no presence card, no player: no such icons


async def test_favicon_route_and_link(app_server):
    await app_server.load(base_document())
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    href = re.search(r'<link rel="icon" href="([^"]+)">', html).group(1)
    assert href.startswith("/favicon.svg?v=")
    for path in (href, "/favicon.ico"):  # browsers and crawlers that ask for /favicon.ico by habit get it too
        response = await app_server.fetch(path, host="alice.hep.gg")
        assert response.code == 200 and response.headers["Content-Type"] == "image/svg+xml"
        assert b">A</text>" in response.body and b'fill="#7c3aed"' in response.body
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await app_server.fetch("/favicon.svg", host="nobody.hep.gg")).code == 404


async def test_favicon_is_the_avatar_when_there_is_one(app_server):
    document = base_document()
    document["profiles"][0]["content"]["avatar_url"] = "https://cdn.hep.gg/a.png"
    await app_server.load(document)
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    assert '<link rel="icon" href="https://cdn.hep.gg/a.png">' in html
