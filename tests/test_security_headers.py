"""Security headers on every kind of response (issue 10); docs/security.md explains each value."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from conftest import base_document
from presence_client import SSEClient

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
PRESENCE_HOSTS = {"https://i.scdn.co", "https://media.discordapp.net"}


def csp_of(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in directives, f"{name} twice in {policy}"
        directives[name] = values
    return directives


def with_content(**content) -> dict:
    doc = base_document()
    doc["profiles"][0]["content"].update(content)
    return doc


def assert_common(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


async def page(server, host="alice.hep.gg"):
    response = await server.fetch("/", host=host, headers={"User-Agent": BROWSER_UA})
    assert response.code == 200
    return response


# ---------------------------------------------------------------- the profile page


async def test_page_policy_allows_only_what_the_page_loads(app_server):
    await app_server.load(with_content(avatar_url="https://cdn.avatars.example/u/alice.png?s=128"))
    response = await page(app_server)
    assert_common(response)
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = csp_of(response)
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no sitekey configured: no Turnstile script
    assert csp["frame-src"] == ["'none'"]
    assert set(csp["img-src"]) == {"'self'", "https://cdn.avatars.example"} | PRESENCE_HOSTS
    assert csp["media-src"] == ["'self'"] and csp["connect-src"] == ["'self'"]
    assert csp["base-uri"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["form-action"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
    policy = response.headers["Content-Security-Policy"]
    assert "unsafe" not in policy and "*" not in policy and "data:" not in policy


async def test_inline_style_is_allowed_by_its_exact_hash_and_nothing_else_is_inline(app_server):
    await app_server.load(
        base_document(
            theme={"accent": "#ff0066", "background": {"from": "#000000", "to": "#222244", "angle": 90}, "font": "Mono"}
        )
    )
    response = await page(app_server)
    html = response.body.decode()
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(styles) == 1 and "--accent:#ff0066" in styles[0]
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert csp_of(response)["style-src"] == ["'self'", f"'sha256-{digest}'"]
    # The CSP holds without 'unsafe-inline' only if the page has no inline script, handler or style attribute.
    assert all(re.search(r'\ssrc="', tag) for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"\son[a-z]+=", html) and " style=" not in html


async def test_policy_lists_exactly_the_avatar_origin_of_each_profile(app_server):
    doc = base_document(toggles={"presence": False})
    doc["profiles"][0]["content"]["avatar_url"] = "https://IMG.one.example:8443/a.png"
    second = {
        **doc["profiles"][0],
        "id": "p2",
        "domain": "bob.hep.gg",
        "content": {**doc["profiles"][0]["content"], "avatar_url": "http://img.two.example/b.png"},
    }
    third = {
        **doc["profiles"][0],
        "id": "p3",
        "domain": "carol.hep.gg",
        "content": {**doc["profiles"][0]["content"], "avatar_url": None},
    }
    doc["profiles"] += [second, third]
    doc["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}]
    await app_server.load(doc)
    assert csp_of(await page(app_server, "alice.hep.gg"))["img-src"] == ["'self'", "https://img.one.example:8443"]
    assert csp_of(await page(app_server, "bob.hep.gg"))["img-src"] == ["'self'", "http://img.two.example"]
    assert csp_of(await page(app_server, "carol.hep.gg"))["img-src"] == ["'self'"]


async def test_presence_hosts_only_when_the_card_shows(app_server):
    doc = base_document()
    doc["users"][0]["premium_until"] = "2000-01-01T00:00:00Z"  # free owner: no card whatever the toggle says
    await app_server.load(doc)
    assert csp_of(await page(app_server))["img-src"] == ["'self'"]


async def test_turnstile_origin_only_when_a_form_renders_the_widget(make_server):
    server = await make_server(turnstile_sitekey="1x00000000000000000000AA")
    await server.load(base_document())
    csp = csp_of(await page(server))
    assert csp["script-src"] == ["'self'", "https://challenges.cloudflare.com"]
    assert csp["frame-src"] == ["https://challenges.cloudflare.com"]

    await server.load(base_document(toggles={"presence": True}))  # no contact toggles: no widget
    csp = csp_of(await page(server))
    assert csp["script-src"] == ["'self'"] and csp["frame-src"] == ["'none'"]


async def test_avatar_written_around_the_importer_cannot_inject_into_the_policy(app_server):
    await app_server.load(base_document())
    for avatar in (
        "https://evil.example;script-src *",
        "https://evil.example 'unsafe-inline'",
        "javascript:alert(1)",
        "data:image/svg+xml,<svg onload=alert(1)>",
        {"$ne": None},
    ):
        await app_server.services.db.profiles.update_one({"_id": "p1"}, {"$set": {"content.avatar_url": avatar}})
        app_server.services.sites.invalidate()
        response = await page(app_server)
        policy = response.headers["Content-Security-Policy"]
        assert "evil" not in policy and "unsafe" not in policy and "data:" not in policy
        assert "avatar-initials" in response.body.decode()  # the avatar is dropped, not half-rendered


# ---------------------------------------------------------------- other HTML answers


@pytest.mark.parametrize(
    "host,path,code",
    [
        ("nobody.hep.gg", "/", 404),  # unmatched subdomain
        ("alice.hep.gg", "/abc123", 404),  # the uploader's short id
        ("alice.hep.gg", "/a/b/c", 404),  # no route at all: the application's default handler
        ("hep.gg", "/", 302),  # apex -> dashboard
        ("custom.example", "/", 302),  # unmatched custom domain -> hep.gg
    ],
)
async def test_error_and_redirect_pages_get_the_closed_policy(app_server, host, path, code):
    await app_server.load(base_document())
    response = await app_server.fetch(path, host=host)
    assert response.code == code
    assert_common(response)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert csp_of(response) == {
        "default-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    if code == 404:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"Traceback" not in response.body


# ---------------------------------------------------------------- non-HTML answers

NON_DOCUMENT = {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}


async def test_og_card_and_its_404(app_server):
    await app_server.load(base_document())
    card = await app_server.fetch("/api/v1/profiles/p1/og.png")
    assert card.code == 200 and card.headers["Content-Type"] == "image/png"
    missing = await app_server.fetch("/api/v1/profiles/nope/og.png")
    assert missing.code == 404
    for response in (card, missing):
        assert_common(response)
        assert csp_of(response) == NON_DOCUMENT


@pytest.mark.parametrize(
    "path,code",
    [
        ("/api/v1/profiles/presence/u1", 200),
        ("/api/v1/profiles/presence/%20", 400),
        ("/api/v1/nothing/here", 404),
    ],
)
async def test_api_json(app_server, path, code):
    await app_server.load(base_document())
    response = await app_server.fetch(path)
    assert response.code == code and response.headers["Content-Type"].startswith("application/json")
    assert_common(response)
    assert csp_of(response) == NON_DOCUMENT


async def test_contact_errors(app_server):
    await app_server.load(base_document())
    response = await app_server.fetch("/api/v1/profiles/nope/contact/sms", json={"message": "hi"})
    assert response.code == 404
    assert_common(response)


async def test_sse_stream_and_its_errors(app_server):
    await app_server.load(base_document())
    client = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/u1/stream")
    try:
        assert client.status == 200 and client.headers["content-type"] == "text/event-stream"
        assert client.headers["x-content-type-options"] == "nosniff"
    finally:
        client.close()
    error = await SSEClient.open(app_server.port, "/api/v1/profiles/presence/%20/stream")
    try:
        assert error.status == 400 and error.headers["x-content-type-options"] == "nosniff"
    finally:
        error.close()


async def test_music_stream_and_its_errors(make_server, upstream):
    server = await make_server(music_upstream_url=upstream.url)
    await server.load(base_document())
    track = await server.fetch("/api/v1/profiles/p1/music/USRC17607839")
    assert track.code == 200 and track.headers["Content-Type"] == "audio/mpeg"
    bad = await server.fetch("/api/v1/profiles/p1/music/short")
    assert bad.code == 400
    for response in (track, bad):
        assert_common(response)
        assert csp_of(response) == NON_DOCUMENT


@pytest.mark.parametrize("name,content_type", [("profile.css", "text/css"), ("presence.js", "text/javascript")])
async def test_static_files(app_server, name, content_type):
    response = await app_server.fetch(f"/_static/{name}")
    assert response.code == 200 and response.headers["Content-Type"].startswith(content_type)
    assert_common(response)
