"""The page's music player in headless Chromium: it streams through the proxy and plays (issue 4)."""

from __future__ import annotations

import io
import math
import struct
import wave

import pytest

from store.stats import read_stats

from conftest import base_document, launch_chromium
from music_upstream import Upstream

playwright_api = pytest.importorskip("playwright.async_api")

AUTOPLAY_ARGS = ("--autoplay-policy=no-user-gesture-required", "--mute-audio")


def sine_wav(seconds: float = 3.0, rate: int = 22050) -> bytes:
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


@pytest.fixture
async def upstream():
    up = Upstream(mode="wav", wav=sine_wav()).start()
    yield up
    await up.stop()


@pytest.mark.timeout(90)
@pytest.mark.browser
async def test_player_streams_through_the_proxy_and_plays_in_chromium(make_server, upstream):
    server = await make_server(music_upstream_url=upstream.url)
    document = base_document()
    document["profiles"][0]["content"]["music"] = [{"isrc": "USRC17607839", "title": "Song <b>", "artist": ""}]
    await server.load(document)
    async with playwright_api.async_playwright() as p:
        browser = await launch_chromium(p, *AUTOPLAY_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"http://alice.hep.gg:{server.port}/")
            track = page.locator(".music .track")
            # The profile's title wins (escaped, as text); the empty artist comes from X-Track-Artist,
            # the album and the duration from the other headers, before anything plays.
            await page.wait_for_function("() => document.querySelector('.track').dataset.metaStatus === '200'")
            assert await track.locator(".track-title").text_content() == "Song <b>"
            assert await track.locator(".track-artist").text_content() == "Upstream Artist"
            assert await track.locator(".track-meta").text_content() == "Upstream Album"
            assert await track.locator(".track-total").text_content() == "3:33"
            # Artwork from a host the page's CSP does not admit is not even requested.
            assert await track.locator(".track-art img").get_attribute("src") is None
            # Our controls, not Chromium's: a real button with a label that says what it will do.
            play = track.locator("button.track-play")
            assert await play.get_attribute("aria-label") == "Play Song <b>"
            await play.focus()
            await page.keyboard.press("Enter")
            await page.wait_for_function(
                # A function, not an expression: the page's CSP has no 'unsafe-eval' for Playwright to use.
                "() => { const a = document.querySelector('.track audio');"
                " return a.readyState >= 2 && a.currentTime > 0.3 && !a.error; }",
                timeout=20_000,
            )
            assert await play.get_attribute("aria-label") == "Pause Song <b>"
            slider = track.locator("input.track-slider")
            await page.wait_for_function("() => document.querySelector('.track-slider').max === '3'")  # the real length
            assert (await slider.get_attribute("aria-valuetext")).endswith(" of 0:03")
            await play.click()
            # The "pause" event is queued after `paused` flips; the click handler relabels at once, so both hold
            # together (a label read after `paused` alone raced the event, CI of stop 26).
            await page.wait_for_function(
                "() => document.querySelector('.track audio').paused"
                " && document.querySelector('button.track-play').getAttribute('aria-label') === 'Play Song <b>'",
                timeout=5_000,
            )
            src = await page.evaluate("() => document.querySelector('.track audio').currentSrc")
            assert src == f"http://alice.hep.gg:{server.port}/api/v1/profiles/p1/music/USRC17607839"
        finally:
            await browser.close()
    methods = [r["method"] for r in upstream.requests]
    assert "HEAD" in methods and "GET" in methods
    assert all(r["headers"]["Authorization"] == "Bearer music-key-u1" for r in upstream.requests)
    await server.services.stats.flush()
    stats = await read_stats(server.services.db, "p1")
    assert stats["plays_by_isrc"].get("USRC17607839", 0) >= 1
