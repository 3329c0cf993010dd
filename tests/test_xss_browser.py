"""The XSS suite (issue 10): every owner-controlled field and theme value, in headless Chromium.

Each payload, if it ever ran, would set its own `window.__xss_N` flag or open a dialog. Every
page is loaded twice: once as served (the CSP is in force, and any violation it reports means
markup got through escaping, so there must be none) and once with the CSP bypassed, so escaping
alone is shown to hold. The text must appear literally. Values the importer refuses are checked
both ways: the refusal, and a page rendered from the same values written straight to MongoDB.
The escaping basics without a browser are in tests/test_page.py.
"""

from __future__ import annotations

import os

import pytest

from store.import_validation import validate_document

from conftest import CHROMIUM, base_document, launch_chromium

# Markers per test: the importer test needs no browser.
needs_browser = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")

# Resolve nothing but the profile hosts, so image hosts in payloads fail at once instead of waiting on DNS.
RESOLVER = "--host-resolver-rules=MAP *.hep.gg 127.0.0.1, MAP * ~NOTFOUND"

WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  function (e) { window.__csp.push(e.violatedDirective + " " + e.blockedURI); });
"""

REPORT = """() => ({
  flags: Object.keys(window).filter(function (k) { return k.indexOf("__xss") === 0; }),
  csp: window.__csp || [],
  scripts: Array.from(document.scripts).map(function (s) { return s.getAttribute("src"); }),
  handlers: Array.from(document.querySelectorAll("*")).flatMap(function (el) {
    return Array.from(el.attributes).filter(function (a) { return /^on/i.test(a.name); })
      .map(function (a) { return el.tagName + " " + a.name; }); }),
  foreign: document.querySelectorAll(
      "iframe, object, embed, math, base, meta[http-equiv], main img:not(.avatar):not(.presence-image):not(.track-art > img)"
    ).length + Array.from(document.querySelectorAll("svg")).filter(function (svg) {
      // Ours (render/icons.py): the one sprite under <body>, and icons that are a single <use href="#id">.
      if (svg.classList.contains("sprite") && svg.parentNode === document.body) return false;
      var use = svg.children.length === 1 && svg.firstElementChild.tagName === "use" ? svg.firstElementChild : null;
      return !(svg.classList.contains("i") && use && /^#[a-z0-9-]+$/.test(use.getAttribute("href") || ""));
    }).length,
})"""


class Visitor:
    """One Chromium; each visit opens a fresh context (with or without CSP) and records what ran."""

    def __init__(self, browser):
        self.browser = browser

    async def visit(self, url: str, *, bypass_csp: bool, check):
        context = await self.browser.new_context(bypass_csp=bypass_csp)
        await context.add_init_script(WATCH)
        page = await context.new_page()
        dialogs, csp_console, errors = [], [], []

        async def on_dialog(dialog):
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("console", lambda m: "Content Security Policy" in m.text and csp_console.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            await page.goto(url, wait_until="load")
            for link in await page.locator("a").all():  # mouse and focus handlers get their chance too
                await link.hover(timeout=2000)
                await link.focus()
            await page.wait_for_timeout(150)
            report = await page.evaluate(REPORT)
            assert dialogs == [] and report["flags"] == [] and errors == [], (dialogs, report, errors)
            assert report["handlers"] == [] and report["foreign"] == 0, report
            assert all(
                src and (src.startswith("/_static/") or src.startswith("https://challenges.cloudflare.com/"))
                for src in report["scripts"]
            ), report["scripts"]
            if not bypass_csp:
                assert report["csp"] == [] and csp_console == [], (report["csp"], csp_console)
            await check(page)
        finally:
            await context.close()

    async def both(self, url: str, check) -> None:
        await self.visit(url, bypass_csp=False, check=check)
        await self.visit(url, bypass_csp=True, check=check)


@pytest.fixture
async def visitor():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, RESOLVER)
        try:
            yield Visitor(browser)
        finally:
            await browser.close()


# ---------------------------------------------------------------- accepted values, through import

NAME = "<script>window.__xss_1=1</script>"
BIO = (
    '"><img src=x onerror="window.__xss_2=1"> \'><svg onload=window.__xss_3=1> '
    "</p><script>alert(4)</script> <style>*{display:none}</style>"
)
LABEL = '" onmouseover="window.__xss_5=1" \'><b onfocus=alert(6)>'
LINK_QUERY = 'https://x.example/?q="><script>window.__xss_7=1</script>'
# No spaces: the importer takes URLs in printable ASCII only (a space is not a URL character anyway).
LINK_QUOTE = "https://x.example/'onfocus='window.__xss_8=1'autofocus='"
MAILTO = 'mailto:a@x.example?subject="><script>window.__xss_9=1</script>'
AVATAR = 'https://img.example/a.png?"onerror="window.__xss_10=1'
TITLE = "</figcaption><script>window.__xss_11=1</script>"
ARTIST = '<iframe srcdoc="<script>parent.__xss_12=1</script>"></iframe>'


def hostile_document(template: str) -> dict:
    doc = base_document(template=template)
    doc["profiles"][0]["content"] = {
        "display_name": NAME,
        "bio": BIO,
        "avatar_url": AVATAR,
        "links": [
            {"label": LABEL, "url": LINK_QUERY},
            {"label": "quote", "url": LINK_QUOTE},
            {"label": "mail", "url": MAILTO},
        ],
        "music": [{"isrc": "USRC17607839", "title": TITLE, "artist": ARTIST}],
    }
    return doc


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("template", ["classic", "minimal", "spotlight"])
async def test_imported_payloads_run_nothing_and_read_literally(app_server, visitor, template):
    await app_server.load(hostile_document(template))

    async def check(page):
        assert await page.locator("h1.name").text_content() == NAME
        assert await page.title() == NAME
        assert await page.locator("p.bio").text_content() == BIO
        links = page.locator("a.link")
        assert [await links.nth(i).get_attribute("href") for i in range(3)] == [LINK_QUERY, LINK_QUOTE, MAILTO]
        assert await links.nth(0).text_content() == LABEL
        assert await page.locator("img.avatar").get_attribute("src") == AVATAR
        assert await page.locator(".track-title").text_content() == TITLE
        assert await page.locator(".track-artist").text_content() == ARTIST
        assert await page.locator('meta[property="og:title"]').get_attribute("content") == NAME

    await visitor.both(f"http://alice.hep.gg:{app_server.port}/", check)


# ---------------------------------------------------------------- refused values: the importer, then MongoDB

BAD_URLS = [
    "javascript:window.__xss_20=1",
    "JaVaScRiPt:window.__xss_21=1",
    " javascript:window.__xss_22=1",
    "java\tscript:window.__xss_23=1",
    "javascript&colon;window.__xss_24=1",
    "data:text/html,<script>window.__xss_25=1</script>",
    "vbscript:msgbox(26)",
    "//evil.example/",
    "https:window.__xss_27=1",
    "\x01javascript:window.__xss_28=1",
]

BAD_THEMES = [
    {"accent": "red;}</style><script>window.__xss_30=1</script><style>"},
    {"accent": "#fff;background:url(javascript:window.__xss_31=1)"},
    {"background": "url(javascript:window.__xss_32=1)"},
    {"background": "expression(window.__xss_33=1)"},
    {"background": {"from": "#000", "to": "#fff</style><script>window.__xss_34=1</script>", "angle": 90}},
    {"background": {"from": "#000", "to": "#fff", "angle": "90deg);background:url(//evil.example/x"}},
    {"font": "Inter;}</style><script>window.__xss_35=1</script>"},
    {"font": "x'); background: url('javascript:window.__xss_36=1"},
    {"accent": "#7c3aed", "behavior": "url(#default#time2)"},
]


def test_importer_refuses_unsafe_urls_and_theme_values():
    for url in BAD_URLS:
        doc = base_document()
        doc["profiles"][0]["content"]["links"] = [{"label": "x", "url": url}]
        doc["profiles"][0]["content"]["avatar_url"] = url
        _, _, errors = validate_document(doc)
        assert any("content.links[0].url" in e for e in errors), url
        assert any("content.avatar_url" in e for e in errors), url
    for theme in BAD_THEMES:
        _, _, errors = validate_document(base_document(theme=theme))
        assert any("theme" in e for e in errors), theme
    doc = base_document()
    doc["profiles"][0]["content"]["music"] = [{"isrc": '"><script>x</script>', "title": "t"}]
    doc["profiles"][0]["template"] = "../base"
    errors = validate_document(doc)[2]
    assert any("music[0].isrc" in e for e in errors) and any("template" in e for e in errors)


@pytest.mark.browser
@needs_browser
async def test_refused_values_written_straight_to_mongodb_run_nothing(app_server, visitor):
    await app_server.load(base_document())
    db, url = app_server.services.db, f"http://alice.hep.gg:{app_server.port}/"
    await db.profiles.update_one(
        {"_id": "p1"},
        {
            "$set": {
                "template": "../base",
                "content.avatar_url": "javascript:window.__xss_40=1",
                "content.links": [{"label": f"bad{i}", "url": u} for i, u in enumerate(BAD_URLS)]
                + [{"label": "ok", "url": "https://ok.example/"}, {"label": {"$x": 1}, "url": None}],
                "content.music": [
                    {"isrc": '"><script>window.__xss_41=1</script>', "title": "t"},
                    {"isrc": "USRC17607839", "title": "<script>window.__xss_42=1</script>", "artist": 7},
                ],
                "content.display_name": {"$gt": ""},
            }
        },
    )
    app_server.services.sites.invalidate()

    async def links_are_safe(page):
        assert [await a.get_attribute("href") for a in await page.locator("a.link").all()] == ["https://ok.example/"]
        assert await page.locator("img.avatar").count() == 0 and await page.locator(".avatar-initials").count() == 1
        assert await page.locator(".track").count() == 1
        assert await page.locator(".track-title").text_content() == "<script>window.__xss_42=1</script>"
        assert await page.locator("h1.name").text_content() == "alice.hep.gg"  # a non-string name: the domain
        assert await page.locator("body.tpl-classic").count() == 1

    await visitor.both(url, links_are_safe)

    async def default_theme(page):
        accent = await page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent')")
        assert accent.strip() == "#7c3aed"
        assert await page.locator("h1.name").is_visible()

    for theme in BAD_THEMES:
        await db.profiles.update_one({"_id": "p1"}, {"$set": {"theme": theme}})
        app_server.services.sites.invalidate()
        await visitor.visit(url, bypass_csp=True, check=default_theme)
    await visitor.visit(url, bypass_csp=False, check=default_theme)


# ---------------------------------------------------------------- bidi overrides and invisible characters


@pytest.mark.browser
@needs_browser
async def test_bidi_overrides_and_invisible_characters_are_removed_and_text_isolated(app_server, visitor):
    doc = base_document()
    doc["profiles"][0]["content"].update(
        {
            "display_name": "Alice\u202egnp.exe\u2066\u200b\ufeff",  # RLO: would show "Aliceexe.png"
            "bio": "first\u202d line\u2069 \u2067rtl\u061c\u2060 and a coder \U0001f469\u200d\U0001f4bb",
            "links": [{"label": "\u202epaypal.com\u202c", "url": "https://example.com/"}],
            "music": [{"isrc": "USRC17607839", "title": "\u202eeltit", "artist": "\u200bartist\u200b"}],
        }
    )
    await app_server.load(doc)  # accepted: such names are legal, they are made harmless at render

    async def check(page):
        assert await page.locator("h1.name").text_content() == "Alicegnp.exe"
        assert await page.title() == "Alicegnp.exe"
        assert await page.locator("h1.name").get_attribute("dir") == "auto"
        assert await page.locator("p.bio").text_content() == "first line rtl and a coder \U0001f469\u200d\U0001f4bb"
        assert await page.locator("p.bio").get_attribute("dir") == "auto"
        assert await page.locator("a.link bdi").text_content() == "paypal.com"
        assert await page.locator(".track-title").text_content() == "eltit"
        assert await page.locator(".track-title").get_attribute("dir") == "auto"
        assert await page.locator(".track-artist").text_content() == "artist"
        # An isolated element's direction never leaks: the text after the name still lays out left to right.
        assert await page.evaluate("getComputedStyle(document.querySelector('h1.name')).unicodeBidi") == "isolate"

    await visitor.visit(f"http://alice.hep.gg:{app_server.port}/", bypass_csp=False, check=check)
