"""The README's first command, as a newcomer runs it: `seed-demo`, then `serve --demo`, then a browser.

A real `serve` process on its own embedded stores (a fresh data dir), Debian's Chromium on
http://demo.localhost:<port>/ (Chromium resolves *.localhost to loopback). The visitor presses play and
sees the time advance (the synthesized track, through the music proxy), then sends a text message and
sees it sent (the demo's Turnstile widget and siteverify, the SMS stand-in's outbox). Every request the
page makes stays on the page's origin: the demo needs no internet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from conftest import CHROMIUM, ROOT, free_port, launch_chromium, run_cli, wait_until_serving

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium"),
]


@pytest.fixture
def demo(tmp_path):
    """`seed-demo && serve --demo` on a fresh data dir and a free port; yields (port, the server's log)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    env.update(HEPGG_DATA_DIR=str(tmp_path / "data"), HEPGG_PORT=str(port))
    seeded = run_cli("seed-demo", env=env, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--demo"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(proc, port, timeout=120)
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


@pytest.mark.timeout(300)
async def test_the_demo_plays_music_and_sends_a_message_without_internet(demo):
    from playwright.async_api import async_playwright

    port, log = demo
    origin = f"http://demo.localhost:{port}"
    requests: list[str] = []
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await launch_chromium(pw, "--mute-audio")
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            # A media element cancels and re-issues its own requests (ERR_ABORTED): not a failure.
            page.on(
                "requestfailed",
                lambda r: "ERR_ABORTED" not in (r.failure or "") and problems.append(f"failed: {r.url} {r.failure}"),
            )
            await page.goto(origin + "/")

            # Play: a click on our button (a visitor's gesture, no autoplay flag), then the clock moves.
            track = page.locator(".music .track")
            await track.locator("button.track-play").click()
            await page.wait_for_function(
                "() => { const t = document.querySelector('.track-elapsed').textContent;"
                " const [m, s] = t.split(':').map(Number); return m * 60 + s >= 2; }",
                timeout=60_000,
            )
            assert await track.locator(".track-total").text_content() == "0:16"  # X-Track-Duration
            assert await track.locator(".track-art img").get_attribute("src") == origin + "/_demo/cover.svg"

            # Send a text message: the demo's widget passes, the server verifies and delivers it locally.
            await page.locator("#contact-tab-sms").click()
            form = page.locator("#contact-sms")
            await form.locator(".demo-turnstile[data-state='passed']").wait_for(timeout=30_000)
            await form.locator("textarea[name='message']").fill("Hello from the demo test ✨")
            await form.locator("button[type='submit']").click()
            status = form.locator(".form-status")
            await page.wait_for_function(
                "() => document.querySelector('#contact-sms .form-status').dataset.state === 'ok'", timeout=30_000
            )
            assert await status.text_content() == "Sent! Thanks for your message."
        finally:
            await browser.close()

    assert problems == []
    assert {urlsplit(url).netloc for url in requests} == {f"demo.localhost:{port}"}  # nothing left the machine
    deadline = asyncio.get_running_loop().time() + 10
    while "demo outbox: sms to +15550100" not in log.read_text():
        assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.2)
