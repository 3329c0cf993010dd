"""The live presence card in headless Chromium: the text changes after `presence set` (issue 8)."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import CHROMIUM, base_document, launch_chromium, run_cli

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")]


@pytest.fixture
async def browser_page():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_card_changes_live_after_presence_set(app_server, browser_page, store_urls):
    await app_server.load(base_document())
    page = browser_page
    await page.goto(f"http://alice.hep.gg:{app_server.port}/")
    card = page.locator("#presence")
    assert await card.get_attribute("data-stream-url") == "/api/v1/profiles/presence/u1/stream"
    await page.wait_for_function("document.querySelector('#presence .status-text').textContent === 'Offline'")

    result = await asyncio.to_thread(
        run_cli,
        "presence",
        "set",
        "u1",
        "--redis-url",
        store_urls.redis_url,
        "--mongo-uri",
        store_urls.mongo_uri,
        "--mongo-db",
        app_server.config.mongo_db,
        "--status",
        "dnd",
        "--activity-name",
        "Apple Music",
        "--type",
        "2",
        "--details",
        "Digital Love",
        "--state",
        "Daft Punk",
        "--started-at",
        "1716900000000",
        "--ends-at",
        "9999999999999",
        "--large-image",
        "spotify:cover123",
    )
    assert result.returncode == 0, result.stderr
    # Music reads "Listening to Apple Music" over the song, then the artist (issue 21: the verb on its own
    # line, so a long activity name is not cut on a phone).
    await page.wait_for_function(
        "document.querySelector('#presence .presence-verb').textContent === 'Listening to Apple Music'",
        timeout=10_000,
    )
    assert await page.locator("#presence .status-text").text_content() == "Do Not Disturb"
    assert "status-dnd" in await page.locator("#presence .status-dot").get_attribute("class")
    assert "status-dnd" in await page.locator(".avatar-status").get_attribute("class")  # the dot on the avatar too
    assert await page.locator("#presence .presence-activity").text_content() == "Digital Love"
    assert await page.locator("#presence .presence-details").text_content() == "Daft Punk"
    assert await page.locator("#presence .presence-image").get_attribute("src") == "https://i.scdn.co/image/cover123"
    # No network here: the album art fails and the activity type's icon shows (headphones for listening).
    await page.wait_for_function("document.querySelector('#presence .presence-image').hidden === true")
    assert await page.locator("#presence .presence-icon use").get_attribute("href") == "#act-2"
    assert await page.locator("#presence .presence-icon").is_visible()
    assert await page.locator("#presence .presence-progress").is_visible()
    card_height = (await page.locator("#presence .presence-card").bounding_box())["height"]

    async def presence_set_and_wait(activity_text: str, *args: str) -> None:
        """`presence set` from the command line, then wait for the card's activity line to show it."""
        stores = ("--redis-url", store_urls.redis_url, "--mongo-uri", store_urls.mongo_uri)
        result = await asyncio.to_thread(
            run_cli, "presence", "set", "u1", *stores, "--mongo-db", app_server.config.mongo_db, *args
        )
        assert result.returncode == 0, result.stderr
        await page.wait_for_function(
            "text => document.querySelector('#presence .presence-activity').textContent === text", arg=activity_text
        )

    await presence_set_and_wait(
        "brb <b>tea</b>",
        "--status",
        "idle",
        "--type",
        "4",
        "--activity-name",
        "Custom Status",
        "--state",
        "brb <b>tea</b>",
    )
    assert await page.locator("#presence .presence-activity b").count() == 0  # text, never markup
    assert not await page.locator("#presence .presence-progress").is_visible()
    assert await page.locator("#presence .presence-icon use").get_attribute("href") == "#act-4"
    # One height whatever the card shows: no jump between a progress bar and a one-line status.
    assert (await page.locator("#presence .presence-card").bounding_box())["height"] == card_height

    await presence_set_and_wait(
        "Chess",
        "--status",
        "online",
        "--type",
        "0",
        "--activity-name",
        "Chess",
        "--started-at",
        "1716900000000",
    )
    assert (await page.locator("#presence .presence-elapsed").text_content()).endswith(" elapsed")
    assert await page.locator("#presence .presence-verb").text_content() == "Playing"
    assert await page.locator("#presence .presence-icon use").get_attribute("href") == "#act-0"

    result = await asyncio.to_thread(run_cli, "presence", "clear", "u1", "--redis-url", store_urls.redis_url)
    assert result.returncode == 0, result.stderr
    await page.wait_for_function("document.querySelector('#presence .status-text').textContent === 'Offline'")
    assert await page.locator("#presence .presence-icon use").get_attribute("href") == "#act-off"
    assert (await page.locator("#presence .presence-card").bounding_box())["height"] == card_height


async def test_no_card_and_no_stream_url_for_non_premium_owner(app_server):
    document = base_document()
    document["users"][0]["premium_until"] = "2000-01-01T00:00:00Z"
    await app_server.load(document)
    response = await app_server.fetch("/", host="alice.hep.gg")
    html = response.body.decode()
    assert response.code == 200 and "Alice" in html  # the page itself, so the absences below mean something
    assert 'id="presence"' not in html and "/presence/u1/stream" not in html and "presence.js" not in html
