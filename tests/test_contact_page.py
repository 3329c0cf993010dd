"""The contact forms on the profile page: rendered with the Turnstile widget, posted as JSON, outcome shown."""

from __future__ import annotations

import os

import pytest

from conftest import CHROMIUM, base_document, launch_chromium
from contact_fakes import contact_settings

# A stand-in for Cloudflare's api.js (explicit rendering): "passes" the challenge at once, counts resets,
# and records how often it was loaded (static/contact.js loads it once, when a form first opens).
FAKE_TURNSTILE_JS = """
window.turnstileLoads = (window.turnstileLoads || 0) + 1;
window.turnstileResets = 0;
window.turnstile = {
  render: function (el, options) {
    el.textContent = 'check passed';
    var pass = function () { options.callback('good-browser-' + options.sitekey); };
    setTimeout(pass, 0);
    window.turnstilePass = pass;
    return 'widget-' + options.action;
  },
  reset: function () { window.turnstileResets += 1; setTimeout(window.turnstilePass, 0); }
};
"""


async def test_page_renders_three_forms_with_the_sitekey(make_server, fakes):
    server = await make_server(**contact_settings(fakes, turnstile_sitekey="0x4AAAA-site<key>"))
    await server.load(base_document())
    response = await server.fetch("/", host="alice.hep.gg")
    html = response.body.decode()
    assert response.code == 200
    for channel in ("sms", "email", "discord"):
        assert f'action="/api/v1/profiles/p1/contact/{channel}"' in html
    assert html.count('data-turnstile-sitekey="0x4AAAA-site&lt;key&gt;"') == 1  # escaped
    # The widget's script is named, not loaded: contact.js loads it when a visitor first opens a form.
    assert 'data-turnstile-script="https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit"' in html
    assert '<script src="https://challenges' not in html
    assert "contact.js" in html
    script = await server.fetch("/_static/contact.js", host="alice.hep.gg")
    assert script.code == 200 and b"turnstileToken" in script.body and b"innerHTML" not in script.body


async def test_forms_follow_the_toggles(make_server, fakes):
    server = await make_server(**contact_settings(fakes))
    await server.load(base_document(toggles={"contact_sms": False, "contact_email": False, "contact_discord": True}))
    html = (await server.fetch("/", host="alice.hep.gg")).body.decode()
    assert 'data-channel="discord"' in html and 'data-channel="sms"' not in html and 'data-channel="email"' not in html


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
async def test_browser_posts_json_and_shows_the_outcome(make_server, fakes):
    from playwright.async_api import async_playwright

    server = await make_server(**contact_settings(fakes, turnstile_sitekey="site-key"))
    document = base_document()
    document["users"][0]["sms_credits"] = 0
    await server.load(document)
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            page = await browser.new_page()
            await page.route(
                "https://challenges.cloudflare.com/**",
                lambda route: route.fulfill(status=200, content_type="application/javascript", body=FAKE_TURNSTILE_JS),
            )
            await page.goto(f"http://alice.hep.gg:{server.port}/")
            discord = page.locator('form[data-channel="discord"]')
            assert not await discord.is_visible()  # compact: one button per channel until the visitor picks one
            assert await page.evaluate("() => window.turnstileLoads") is None  # nothing third-party yet
            await page.locator("#contact-tab-discord").click()
            assert await page.locator("#contact-tab-discord").get_attribute("aria-expanded") == "true"
            await discord.locator('input[name="handle"]').fill("Jamie")
            await discord.locator('textarea[name="message"]').fill("Hello from a <b>browser</b>")
            await discord.locator("button").click()
            status = discord.locator(".form-status")
            await status.filter(has_text="Sent!").wait_for(timeout=10_000)
            assert await discord.locator('textarea[name="message"]').input_value() == ""  # form reset
            assert await page.evaluate("() => window.turnstileResets") == 1
            [sent] = fakes.discord.requests
            assert sent.json()["embeds"][0]["description"] == "Hello from a <b>browser</b>"
            check = fakes.turnstile.requests[0].form()
            assert check["response"] == "good-browser-site-key"

            sms = page.locator('form[data-channel="sms"]')
            await page.locator("#contact-tab-sms").click()
            assert not await discord.is_visible()  # one form at a time
            await sms.locator(".turnstile").filter(has_text="check passed").wait_for()
            assert await page.evaluate("() => window.turnstileLoads") == 1  # loaded once, rendered per form
            await sms.locator('textarea[name="message"]').fill("hi")
            await sms.locator("button").click()
            await sms.locator(".form-status").filter(has_text="out of SMS credits").wait_for(timeout=10_000)
            assert await sms.locator(".form-status").get_attribute("data-state") == "error"
            assert await sms.locator('textarea[name="message"]').input_value() == "hi"  # kept for a retry
        finally:
            await browser.close()
    assert fakes.sms.requests == []  # 402: nothing was sent


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
@pytest.mark.parametrize(
    "failure",
    ["blocked", "not-turnstile", "error-callback"],
)
async def test_when_the_real_widget_cannot_load_the_visitor_is_told_so(make_server, fakes, failure):
    """A content blocker or a dead network (the script request fails), a script that is not Turnstile (a
    captive portal's page), and a widget that loads but cannot run: the visitor reads why, in the form's
    status line, instead of meeting a blank box and a failed send; nothing is posted."""
    from playwright.async_api import async_playwright

    server = await make_server(**contact_settings(fakes, turnstile_sitekey="site-key"))
    await server.load(base_document())
    scripts = {
        "not-turnstile": "window.notTurnstile = true;",
        "error-callback": "window.turnstile = { render: function (el, o) { setTimeout(o['error-callback'], 0);"
        " return 'w'; }, reset: function () {} };",
    }

    async def answer(route):
        if failure == "blocked":
            await route.abort("blockedbyclient")
        else:
            await route.fulfill(status=200, content_type="application/javascript", body=scripts[failure])

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            page = await browser.new_page()
            await page.route("https://challenges.cloudflare.com/**", answer)
            await page.goto(f"http://alice.hep.gg:{server.port}/")
            await page.locator("#contact-tab-email").click()
            form = page.locator('form[data-channel="email"]')
            status = form.locator(".form-status")
            if failure == "error-callback":
                await status.filter(has_text="could not run in this browser").wait_for(timeout=10_000)
                assert await status.get_attribute("data-state") == "warn"
                await form.locator('input[name="email"]').fill("jamie@example.com")
                await form.locator('textarea[name="message"]').fill("hello")
                await form.locator("button").click()  # no token: told to complete the check, nothing sent
                await status.filter(has_text="complete the anti-spam check").wait_for(timeout=10_000)
            else:
                await status.filter(has_text="The anti-spam check could not load").wait_for(timeout=10_000)
                assert "reload the page" in await status.text_content()
                assert await status.get_attribute("data-state") == "error"
                assert await form.locator("button").is_disabled()
                assert await form.locator(".turnstile").is_hidden()  # no empty 0 px box
                # Another form says the same at once (the script is not asked for again).
                await page.locator("#contact-tab-discord").click()
                other = page.locator('form[data-channel="discord"] .form-status')
                await other.filter(has_text="The anti-spam check could not load").wait_for(timeout=10_000)
        finally:
            await browser.close()
    assert fakes.smtp.messages == [] and fakes.discord.requests == [] and fakes.turnstile.requests == []
