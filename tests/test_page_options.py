"""The owner's page options (issue 21), each a toggle in the import format: a background image and a banner
from the operator's allow-listed hosts (never fetched by the server; the CSP names exactly what is shown),
and a view counter read with the cached site (no query per page request, the page memo kept)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time

import pytest
import tornado.web
from PIL import Image
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import store.sites as sites_module
from render.text import compact_count
from store.import_validation import validate_document

from conftest import CHROMIUM, ROOT, base_document, launch_chromium

AXE = ROOT / "tools" / "page-audit" / "node_modules" / "axe-core" / "axe.min.js"
NOT_COUNTED = {"User-Agent": "Slackbot-LinkExpanding 1.0"}
BACKGROUND = "https://img.example/bg.jpg"
BANNER = "https://cdn.example:8443/banner.png"


class ImageHost:
    """A real image host on 127.0.0.1: a 64x64 PNG for any path; it records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "PNG")
        png, requests = buffer.getvalue(), self.requests

        class Handler(tornado.web.RequestHandler):
            def get(self, name: str) -> None:
                requests.append(name)
                self.set_header("Content-Type", "image/png")
                self.write(png)

        sockets = bind_sockets(0, "127.0.0.1")
        self.server = HTTPServer(tornado.web.Application([(r"/(.+)", Handler)]))
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


@pytest.fixture
async def image_host():
    host = ImageHost()
    yield host
    await host.close()


def with_media(**toggles: bool) -> dict:
    document = base_document()
    profile = document["profiles"][0]
    profile["content"].update(background_url=BACKGROUND, banner_url=BANNER)
    profile["toggles"].update(toggles)
    return document


def img_src(response) -> list[str]:
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    return policy["img-src"].split()


def test_import_takes_the_image_urls_and_toggles_and_refuses_unsafe_ones():
    _, profiles, errors = validate_document(with_media(background_image=True, banner=True, view_counter=True))
    assert errors == []
    assert profiles[0]["content"]["background_url"] == BACKGROUND and profiles[0]["content"]["banner_url"] == BANNER
    assert profiles[0]["toggles"].items() >= {"background_image": True, "banner": True, "view_counter": True}.items()
    document = with_media()
    content = document["profiles"][0]["content"]
    content.update(background_url="javascript:alert(1)", banner_url="https://evil.example;script-src *")
    document["profiles"][0]["toggles"]["view_counter"] = "yes"
    _, _, errors = validate_document(document)
    assert any("content.background_url must be an http(s) URL" in e for e in errors)
    assert any("content.banner_url must be an http(s) URL" in e for e in errors)
    assert any("toggles.view_counter must be true or false" in e for e in errors)
    # Unset images are not stored: profiles imported before these fields existed keep their version.
    _, profiles, _ = validate_document(base_document())
    assert "background_url" not in profiles[0]["content"] and "banner_url" not in profiles[0]["content"]


async def test_images_show_only_when_toggled_on_and_from_an_allowed_host(make_server):
    server = await make_server(image_hosts="img.example,cdn.example")
    await server.load(with_media(background_image=False, banner=False))
    off = await server.fetch("/", host="alice.hep.gg")
    assert BACKGROUND not in off.body.decode() and BANNER not in off.body.decode()
    assert img_src(off) == ["'self'", "https://i.scdn.co", "https://media.discordapp.net"]  # presence art only

    await server.load(with_media(background_image=True, banner=True))
    on = await server.fetch("/", host="alice.hep.gg")
    html = on.body.decode()
    assert f'<img class="backdrop" src="{BACKGROUND}" alt=""' in html
    assert f'<div class="banner" aria-hidden="true"><img src="{BANNER}" alt=""' in html
    assert img_src(on) == [
        "'self'",
        "https://cdn.example:8443",
        "https://img.example",
        "https://i.scdn.co",
        "https://media.discordapp.net",
    ]
    assert re.search(r"--backdrop:0\.\d+", html)  # the image's opacity, chosen so the text still reads

    # The same profile on a server that allows only the banner's host: the background is not shown,
    # and its origin is not in the policy.
    other = await make_server(image_hosts="cdn.example")
    await other.load(with_media(background_image=True, banner=True))
    partial = await other.fetch("/", host="alice.hep.gg")
    assert BACKGROUND not in partial.body.decode() and BANNER in partial.body.decode()
    assert "https://img.example" not in img_src(partial) and "https://cdn.example:8443" in img_src(partial)
    assert "--backdrop" not in partial.body.decode()


async def test_no_background_where_no_opacity_lets_the_text_read(make_server):
    server = await make_server(image_hosts="img.example")
    document = with_media(background_image=True)
    document["profiles"][0]["theme"] = {"accent": "#767676", "background": "#777777"}  # text at 4.69:1 bare
    await server.load(document)
    response = await server.fetch("/", host="alice.hep.gg")
    assert BACKGROUND not in response.body.decode() and "https://img.example" not in img_src(response)


async def test_the_server_never_fetches_an_owners_images(make_server, image_host):
    host = f"127.0.0.1:{image_host.port}"
    server = await make_server(image_hosts="127.0.0.1", avatar_hosts="")
    document = base_document()
    document["profiles"][0]["content"].update(background_url=f"http://{host}/bg.png", banner_url=f"http://{host}/b.png")
    document["profiles"][0]["toggles"].update(background_image=True, banner=True)
    await server.load(document)
    assert (await server.fetch("/", host="alice.hep.gg")).code == 200
    assert (await server.fetch("/api/v1/profiles/p1/og.png")).code == 200
    assert image_host.requests == []


@pytest.mark.parametrize(
    "count, shown",
    [
        (0, "0"),
        (1, "1"),
        (999, "999"),
        (9_999, "9,999"),
        (10_000, "10K"),
        (12_345, "12.3K"),
        (999_999, "999K"),
        (1_000_000, "1M"),
        (7_891_234, "7.8M"),
        (1_250_000_000, "1.2B"),
    ],
)
def test_counts_read_as_bio_sites_show_them(count, shown):
    assert compact_count(count) == shown


async def test_view_counter_follows_the_stored_count_within_the_cache_ttl(make_server):
    server = await make_server(profile_cache_ttl=1.0)
    # These requests are not counted as views (a bot's User-Agent): the stored count is the test's alone.
    document = base_document()
    await server.load(document)
    assert (
        'class="views"' not in (await server.fetch("/", host="alice.hep.gg", headers=NOT_COUNTED)).body.decode()
    )  # toggle off

    document["profiles"][0]["toggles"]["view_counter"] = True
    await server.load(document)
    await server.services.db.profile_stats.update_one({"_id": "p1"}, {"$set": {"views": 12_344}}, upsert=True)
    server.services.sites.invalidate()
    first = (await server.fetch("/", host="alice.hep.gg", headers=NOT_COUNTED)).body.decode()
    assert '<data value="12344">12.3K</data> views' in first, re.findall(r"<p class=\"views\">.*?</p>", first)

    # Within the TTL the page comes from the cached site and its memo: a new count in MongoDB is not read
    # per request (the same bytes, the same rendered page object).
    await server.services.db.profile_stats.update_one({"_id": "p1"}, {"$set": {"views": 1}})
    site = await server.services.sites.by_host("alice.hep.gg")
    for _ in range(20):
        assert (await server.fetch("/", host="alice.hep.gg", headers=NOT_COUNTED)).body.decode() == first
    assert len(site.memo) == 1
    # After the TTL (1 s here, --profile-cache-ttl) the page shows the new count.
    started = time.monotonic()
    while (
        '<data value="1">1</data> view</p>'
        not in (await server.fetch("/", host="alice.hep.gg", headers=NOT_COUNTED)).body.decode()
    ):
        assert time.monotonic() - started < 10, "the counter did not follow the stored count"
        await asyncio.sleep(0.1)


async def test_view_counter_costs_one_query_per_ttl_not_per_request(make_server, monkeypatch):
    server = await make_server(profile_cache_ttl=60)
    document = base_document()
    document["profiles"][0]["toggles"]["view_counter"] = True
    await server.load(document)
    reads = []
    original = sites_module.view_count

    async def counting(db, profile_id):
        reads.append(profile_id)
        return await original(db, profile_id)

    monkeypatch.setattr(sites_module, "view_count", counting)
    results = await asyncio.gather(*(server.fetch("/", host="alice.hep.gg") for _ in range(30)))
    assert {r.code for r in results} == {200}
    assert '<data value="0">0</data> views' in results[0].body.decode()
    assert len(reads) == 1  # one read with the site, shared by thirty requests
    # Lookups by id (music, contact, the OG card) never read it.
    assert (await server.fetch("/api/v1/profiles/p1/og.png")).code == 200
    assert len(reads) == 1


async def test_views_counted_by_visits_show_on_the_page(make_server):
    server = await make_server(profile_cache_ttl=0.2)
    document = base_document()
    document["profiles"][0]["toggles"]["view_counter"] = True
    await server.load(document)
    for n in range(3):  # three visitors (three User-Agents), each counted once
        agent = f"Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0 visitor-{n}"
        assert (await server.fetch("/", host="alice.hep.gg", headers={"User-Agent": agent})).code == 200
    await server.services.stats.flush()
    started = time.monotonic()
    while (
        '<data value="3">3</data> views'
        not in (await server.fetch("/", host="alice.hep.gg", headers=NOT_COUNTED)).body.decode()
    ):
        assert time.monotonic() - started < 10
        await asyncio.sleep(0.1)


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
@pytest.mark.timeout(300)
async def test_banner_and_background_in_chromium(make_server, image_host):
    """Each template with a banner and a background image from an allowed host: the images load (no CSP
    violation, no console error), the banner sits flush inside the card's top edge, the background covers
    the viewport dimmed to the opacity render/colour.py chose, the views line shows under the bio, and axe
    finds no violation (contrast judged over the image)."""
    from playwright.async_api import async_playwright

    server = await make_server(image_hosts="img.hep.gg")
    document = base_document()
    document["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}] * 3
    base = document["profiles"][0]
    base["content"].update(
        background_url=f"http://img.hep.gg:{image_host.port}/bg.png",
        banner_url=f"http://img.hep.gg:{image_host.port}/banner.png",
    )
    base["toggles"].update(background_image=True, banner=True, view_counter=True, presence=False)
    document["profiles"] = [
        {**base, "id": f"p-{t}", "domain": f"{t}.hep.gg", "template": t} for t in ("classic", "minimal", "spotlight")
    ]
    await server.load(document)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            for width in (390, 1366):
                context = await browser.new_context(viewport={"width": width, "height": 900})
                await context.add_init_script(
                    "window.__csp = []; document.addEventListener('securitypolicyviolation',"
                    " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
                )
                page = await context.new_page()
                errors: list[str] = []
                page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                for entry in document["profiles"]:
                    await page.goto(f"http://{entry['domain']}:{server.port}/", wait_until="load")
                    loaded = await page.evaluate(
                        "() => [...document.querySelectorAll('.backdrop, .banner img')].map(i => i.naturalWidth)"
                    )
                    assert loaded == [64, 64], (entry["id"], width, loaded)
                    assert await page.evaluate("() => window.__csp") == []
                    backdrop = await page.evaluate(
                        "() => { const b = document.querySelector('.backdrop').getBoundingClientRect();"
                        " return [b.width, b.height, getComputedStyle(document.querySelector('.backdrop')).opacity]; }"
                    )
                    assert backdrop == [width, 900, "0.35"], (entry["id"], backdrop)
                    banner = await page.evaluate(
                        "() => { const b = document.querySelector('.banner').getBoundingClientRect();"
                        " const c = document.querySelector('.card, .column').getBoundingClientRect();"
                        " return [b.left - c.left, c.right - b.right, b.top - c.top, b.height]; }"
                    )
                    if entry["template"] == "minimal":
                        assert banner[:3] == [0, 0, 0] and banner[3] > 100, (width, banner)
                    else:  # flush with the card's inner edges (its 1 px border), rounded with it
                        assert banner[:3] == [1, 1, 1] and banner[3] > 100, (entry["id"], width, banner)
                    assert (await page.locator(".views").text_content()).strip() == "0 views"
                assert errors == [], (width, errors)
                await context.close()
            if AXE.exists():  # axe is injected as a script, which the CSP refuses: bypassed for this pass only
                for width in (390, 1366):
                    context = await browser.new_context(
                        viewport={"width": width, "height": 900}, bypass_csp=True, reduced_motion="reduce"
                    )
                    page = await context.new_page()
                    for entry in document["profiles"]:
                        await page.goto(f"http://{entry['domain']}:{server.port}/", wait_until="load")
                        await page.add_script_tag(path=str(AXE))
                        result = await page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
                        violations = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
                        assert violations == [], (entry["id"], width, violations)
                    await context.close()
        finally:
            await browser.close()
