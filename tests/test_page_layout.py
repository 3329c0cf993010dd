"""The page's layout in headless Chromium at phone and desktop widths (issue 21's defects, each pinned).

Spotlight's banner stays inside the card's rounded corners (no step at the left edge on a phone) and the
card has no empty half without presence or contact; links are buttons in every template; a trailing
emoji never wraps onto a line of its own; the activity name is not cut on a 390 px phone; a full-page
capture has the theme's background to the bottom; visitors who ask for reduced motion get none.
"""

from __future__ import annotations

import io
import os
import time

import pytest

from presence.writer import write_presence
from store.theme import TEMPLATES

from conftest import CHROMIUM, base_document, launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")]

PHONE, DESKTOP = (390, 844), (1366, 900)


def profiles(**toggles) -> dict:
    """One profile per template (t-classic.hep.gg ...) for the owner u1, with the given toggles."""
    document = base_document()
    document["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}]  # 3 profiles
    base = document["profiles"][0]
    base["toggles"].update(toggles)
    document["profiles"] = [dict(base, id=f"t-{name}", template=name, domain=f"t-{name}.hep.gg") for name in TEMPLATES]
    return document


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser, server, template: str, size, **options):
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]}, **options)
    page = await context.new_page()
    await page.goto(f"http://t-{template}.hep.gg:{server.port}/", wait_until="load")
    return context, page


async def box(page, selector: str) -> dict:
    return await page.locator(selector).first.bounding_box()


async def test_spotlight_banner_sits_inside_the_rounded_card(app_server, browser):
    await app_server.load(profiles())
    for size in (DESKTOP, PHONE):
        context, page = await open_page(browser, app_server, "spotlight", size)
        card, banner = await box(page, ".card"), await box(page, ".banner")
        style = await page.evaluate(
            "() => { const s = getComputedStyle(document.querySelector('.card'));"
            " return [s.overflow, parseFloat(s.borderTopLeftRadius), parseFloat(s.borderLeftWidth)]; }"
        )
        overflow, radius, border = style
        assert overflow == "hidden" and radius >= 16  # the corners clip the banner
        # Flush with the card's inner edges on both sides: no step, no overhang.
        assert abs(banner["x"] - (card["x"] + border)) < 1, (size, card, banner)
        assert abs((banner["x"] + banner["width"]) - (card["x"] + card["width"] - border)) < 1, (size, card, banner)
        assert abs(banner["y"] - (card["y"] + border)) < 1
        await context.close()


async def test_spotlight_uses_one_column_when_the_side_would_be_empty(app_server, browser):
    await app_server.load(profiles(presence=False, contact_sms=False, contact_email=False, contact_discord=False))
    context, page = await open_page(browser, app_server, "spotlight", DESKTOP)
    assert await page.locator(".side-col").count() == 0 and await page.locator(".solo").count() == 1
    card, links = await box(page, ".card"), await box(page, ".links")
    assert links["width"] > 0.85 * card["width"]  # the links spread over the card, not half of it
    await context.close()
    await app_server.load(profiles())  # with presence and contact: two columns side by side on a desktop
    context, page = await open_page(browser, app_server, "spotlight", DESKTOP)
    main, side = await box(page, ".main-col"), await box(page, ".side-col")
    assert side["x"] > main["x"] + main["width"] and abs(side["y"] - main["y"]) < 2
    await context.close()


async def test_links_are_buttons_in_every_template(app_server, browser):
    await app_server.load(profiles())
    for template in TEMPLATES:
        for size in (PHONE, DESKTOP):
            context, page = await open_page(browser, app_server, template, size)
            link = page.locator("a.link").first
            shape = await link.evaluate(
                "a => { const s = getComputedStyle(a); const r = a.getBoundingClientRect();"
                " return [r.height, parseFloat(s.borderTopWidth), parseFloat(s.borderTopLeftRadius), s.display,"
                " a.querySelector('svg.i use').getAttribute('href')]; }"
            )
            height, border, radius, display, icon = shape
            assert height >= 44 and border >= 1 and radius >= 12 and display == "flex", (template, size, shape)
            assert icon == "#b-github"
            await context.close()


# Puts `text` into the element and returns how far below the letter before the last space the emoji sits
# (0: same line). `plain` turns the page's wrapping rules off, to show the texts do exercise the case.
EMOJI_DROP = """([selector, text, plain]) => {
  const el = document.querySelector(selector);
  if (plain) el.style.setProperty("text-wrap", "wrap", "important"); else el.style.removeProperty("text-wrap");
  el.textContent = text;
  const node = el.firstChild, at = text.lastIndexOf("\u2728");
  const top = (start, end) => { const r = document.createRange(); r.setStart(node, start); r.setEnd(node, end);
    return r.getClientRects()[0].top; };
  return top(at, at + 1) - top(at - 2, at - 1);
}"""
NAMES = [
    f"{name} \u2728"
    for name in (
        "Maximilian Rhodes",
        "Alexandria Petrova",
        "Aurora Vasquez-Lind",
        "Emmanuelle Moreau",
        "Konstantin Abramov",
        "Bartholomew Kim",
        "Gwendolyn Fairchild",
    )
]
BIO = "Designer and developer making small tools for the web and lovely things that make people smile every day"
BIOS = [" ".join(BIO.split()[:n]) + " \u2728" for n in range(8, 19)]


async def test_a_trailing_emoji_never_wraps_alone(app_server, browser):
    await app_server.load(profiles())
    for template in TEMPLATES:
        context, page = await open_page(browser, app_server, template, PHONE, bypass_csp=True)
        for selector, texts in (("h1.name", NAMES), ("p.bio", BIOS)):
            alone_without_rules = [t for t in texts if await page.evaluate(EMOJI_DROP, [selector, t, True]) > 2]
            assert alone_without_rules, (template, selector)  # the case is exercised in this template
            drops = {t: await page.evaluate(EMOJI_DROP, [selector, t, False]) for t in texts}
            assert all(abs(drop) < 2 for drop in drops.values()), (template, selector, drops)
        await context.close()


async def test_activity_name_is_not_cut_on_a_phone(app_server, browser):
    await app_server.load(profiles())
    activity = {"name": "Visual Studio Code", "type": 0, "details": "Editing hub.py", "state": "Workspace: hepgg"}
    activity["startedAt"] = int(time.time() * 1000) - 60_000
    await write_presence(app_server.services.redis.client, "u1", {"status": "online", "activity": activity})
    for template in TEMPLATES:
        context, page = await open_page(browser, app_server, template, PHONE)
        title = page.locator("#presence .presence-activity")
        await page.wait_for_function("() => document.querySelector('#presence .presence-activity').textContent !== ''")
        assert await title.text_content() == "Visual Studio Code"
        assert await page.locator("#presence .presence-verb").text_content() == "Playing"
        fits = await title.evaluate("el => el.scrollWidth <= el.clientWidth")
        assert fits, template
        await context.close()


async def test_full_page_capture_keeps_the_background_to_the_bottom(app_server, browser):
    from PIL import Image

    document = profiles()
    for profile in document["profiles"]:  # a page several screens long
        profile["content"]["links"] = [{"label": f"Link {i}", "url": f"https://example.com/{i}"} for i in range(25)]
    await app_server.load(document)
    for template in TEMPLATES:
        context, page = await open_page(browser, app_server, template, PHONE, reduced_motion="reduce")
        attachments = await page.evaluate(
            "() => [getComputedStyle(document.documentElement).backgroundAttachment,"
            " getComputedStyle(document.body).backgroundAttachment]"
        )
        assert "fixed" not in ",".join(attachments)
        image = Image.open(io.BytesIO(await page.screenshot(full_page=True))).convert("RGB")
        assert image.height > PHONE[1] + 300
        for y in (image.height - 5, image.height // 2, PHONE[1] + 10):
            r, g, b = image.getpixel((3, y))
            assert max(r, g, b) < 80, (template, y, (r, g, b))  # the dark theme's background, not a white band
        await context.close()


async def test_reduced_motion_means_none(app_server, browser):
    await app_server.load(profiles())
    for reduced, expect_motion in (("reduce", False), ("no-preference", True)):
        context, page = await open_page(browser, app_server, "classic", PHONE, reduced_motion=reduced)
        await page.locator("a.link").first.hover()
        duration = await page.locator("a.link").first.evaluate("a => getComputedStyle(a).transitionDuration")
        await page.locator(".contact-tab").first.click()
        running = await page.evaluate("() => document.getAnimations().length")
        if expect_motion:
            assert duration != "0s" and running >= 1  # hover lift and the form's fade-in
        else:
            assert duration == "0s" and running == 0
        await context.close()
