"""The profile page as visitors' browsers judge it (issue 21), on the demo profile in every template.

* Lighthouse 12.2.3 (tools/page-audit, pinned; mobile preset, Debian chromium): performance,
  accessibility, best practices and SEO each >= 0.95; the HTML+CSS+JS it transferred <= 60 KB; every
  render-blocking resource and every script is first-party.
* axe-core (the pinned npm package, injected with Playwright) finds no violation at 390 and 1366 px wide,
  before and after the visitor opens a contact form and starts the player.
* Chromium logs no console error, no page error and no CSP violation while a visitor loads the page,
  opens each form (Turnstile loads then, from a local stand-in for challenges.cloudflare.com) and plays
  the track through the proxy.

`scripts/install.sh --test` installs the npm tools; without chromium or them these tests skip, saying why.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from test_music_player import sine_wav

from presence.writer import write_presence
from runtime.cli import demo_document
from store.theme import TEMPLATES

from conftest import CHROMIUM, ROOT, launch_chromium
from music_upstream import Upstream

AUDIT_TOOLS = ROOT / "tools" / "page-audit" / "node_modules"
LIGHTHOUSE = AUDIT_TOOLS / "lighthouse" / "cli" / "index.js"
AXE = AUDIT_TOOLS / "axe-core" / "axe.min.js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium"),
]
needs_audit_tools = pytest.mark.skipif(
    NODE is None or not LIGHTHOUSE.exists() or not AXE.exists(),
    reason="needs node and tools/page-audit (scripts/install.sh --test runs npm ci there)",
)

SCORE_FLOOR = 0.95
BUDGET_BYTES = 60 * 1024  # HTML + CSS + JS as transferred (avatar and art excluded)
SITEKEY = "1x00000000000000000000AA"

# A stand-in for Cloudflare's api.js (explicit rendering): renders a box, passes at once, counts resets.
FAKE_TURNSTILE_JS = """
window.turnstile = {
  render: function (el, options) {
    var box = document.createElement('div'); box.className = 'fake-turnstile'; box.textContent = 'verified';
    el.appendChild(box); setTimeout(function () { options.callback('token-' + options.sitekey); }, 0); return 'w1';
  },
  reset: function () {}
};
"""

# Console errors, page errors and CSP violations, recorded from before the first byte of the page.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  function (e) { window.__csp.push(e.violatedDirective + " " + e.blockedURI); });
"""


def demo_in(template: str) -> tuple[dict, str]:
    """The demo profile (runtime/cli.py) in one template, on <template>.localhost (loopback in Chromium,
    and a secure context, as https would be)."""
    document = demo_document()
    document["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}]  # premium allows 2 profiles; we show 3
    profile = copy.deepcopy(document["profiles"][0])
    host = f"{template}.localhost"
    profile.update(id=f"demo-{template}", template=template, domain=host)
    document["profiles"] = [profile]
    return document, host


def vs_code(now_ms: int) -> dict:
    # No largeImage: the test machine has no internet, and art from i.scdn.co would fail as a network error.
    return {
        "status": "online",
        "activity": {
            "name": "Visual Studio Code",
            "type": 0,
            "details": "Editing hub.py",
            "state": "Workspace: hepgg",
            "startedAt": now_ms - 25 * 60_000,
        },
    }


@pytest.fixture
async def upstream():
    up = Upstream(mode="wav", wav=sine_wav(4.0)).start()
    yield up
    await up.stop()


@pytest.fixture
async def demo_server(make_server, upstream):
    server = await make_server(music_upstream_url=upstream.url, turnstile_sitekey=SITEKEY)
    for template in TEMPLATES:
        await server.load(demo_in(template)[0])
    await write_presence(server.services.redis.client, "demo-owner", vs_code(int(time.time() * 1000)))
    return server


async def lighthouse(url: str, out: Path, cpu_slowdown: float | None = None) -> dict:
    """One Lighthouse run (mobile preset, simulated throttling) as a subprocess; the parsed report."""
    env = dict(os.environ, CHROME_PATH=CHROMIUM)
    flags = [f"--throttling.cpuSlowdownMultiplier={cpu_slowdown:.2f}"] if cpu_slowdown else []
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(LIGHTHOUSE),
        url,
        "--quiet",
        "--output=json",
        f"--output-path={out}",
        "--only-categories=performance,accessibility,best-practices,seo",
        "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
        *flags,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 150)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return json.loads(out.read_text())


# The mobile preset emulates a Moto G Power (2022) by slowing the host's CPU 4x, which assumes a host
# scoring ~1050 on Lighthouse's benchmarkIndex; Chrome DevTools' CPU calibration puts that phone at 264.
# On a shared machine under load the index falls to 250-450, and 4x then emulates a phone several times
# slower than the preset's. A retry is calibrated the way DevTools calibrates: index / 264, within 1-4x.
LOW_TIER_BENCHMARK = 264
ATTEMPTS = 3


def calibrated_slowdown(report: dict) -> float:
    return min(4.0, max(1.0, report["environment"]["benchmarkIndex"] / LOW_TIER_BENCHMARK))


def failing_audits(report: dict) -> list[str]:
    return [
        f"{key}: {audit.get('score')} {audit.get('displayValue', '')}".strip()
        for key, audit in report["audits"].items()
        if audit.get("score") is not None and audit["score"] < 1 and audit.get("scoreDisplayMode") != "informative"
    ]


@needs_audit_tools
@pytest.mark.timeout(900)
async def test_lighthouse_scores_and_byte_budget(demo_server, tmp_path):
    for template in TEMPLATES:
        host = demo_in(template)[1]
        origin = f"http://{host}:{demo_server.port}"
        runs, slowdown = [], None
        for attempt in range(ATTEMPTS):
            report = await lighthouse(origin + "/", tmp_path / f"{template}-{attempt}.json", slowdown)
            scores = {name: category["score"] for name, category in report["categories"].items()}
            benchmark = report["environment"]["benchmarkIndex"]
            runs.append((scores, f"benchmarkIndex {benchmark}", f"cpu x{slowdown or 4}", failing_audits(report)))
            print(f"{template} run {attempt + 1} (cpu x{slowdown or 4:.2f}, benchmarkIndex {benchmark}): {scores}")
            if min(scores.values()) >= SCORE_FLOOR:
                break
            slowdown = calibrated_slowdown(report)
        assert min(runs[-1][0].values()) >= SCORE_FLOOR, (template, runs)
        requests = report["audits"]["network-requests"]["details"]["items"]
        code = [r for r in requests if r.get("resourceType") in ("Document", "Stylesheet", "Script")]
        transferred = sum(r.get("transferSize", 0) for r in code)
        print(f"{template}: HTML+CSS+JS transferred {transferred} B in {len(code)} requests")
        assert transferred <= BUDGET_BYTES, (template, transferred, [(r["url"], r["transferSize"]) for r in code])
        assert all(r["url"].startswith(origin + "/") for r in requests), [
            r["url"] for r in requests
        ]  # nothing third-party
        blocking = report["audits"]["render-blocking-resources"].get("details", {}).get("items", [])
        assert all(item["url"].startswith(origin + "/") for item in blocking), blocking


async def open_everything(page) -> None:
    """What a visitor does: open each contact form in turn, then play the track for a moment."""
    for tab in await page.locator(".contact-tab").all():
        await tab.click()
        panel = page.locator("#" + await tab.get_attribute("aria-controls"))
        await panel.locator(".fake-turnstile").wait_for(timeout=10_000)
    await page.locator(".track-play").first.click()
    await page.wait_for_function(
        "() => { const a = document.querySelector('.track audio'); return a.currentTime > 0.2 && !a.error; }",
        timeout=20_000,
    )


async def fake_turnstile(route) -> None:
    await route.fulfill(status=200, content_type="text/javascript", body=FAKE_TURNSTILE_JS)


@needs_audit_tools
@pytest.mark.timeout(300)
async def test_axe_finds_no_violations(demo_server):
    from playwright.async_api import async_playwright

    axe_source = AXE.read_text()
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, "--autoplay-policy=no-user-gesture-required", "--mute-audio")
        try:
            for template in TEMPLATES:
                host = demo_in(template)[1]
                for width, height in ((390, 844), (1366, 900)):
                    # axe is injected as a script, which the page's CSP (rightly) refuses: bypass it here only.
                    # Reduced motion: contrast is judged on final frames, not halfway through a form's fade-in.
                    context = await browser.new_context(
                        viewport={"width": width, "height": height}, bypass_csp=True, reduced_motion="reduce"
                    )
                    await context.route("https://challenges.cloudflare.com/**", fake_turnstile)
                    page = await context.new_page()
                    await page.goto(f"http://{host}:{demo_server.port}/", wait_until="load")
                    await page.wait_for_function(
                        "() => document.querySelector('#presence').dataset.status === 'online'"
                    )
                    await page.add_script_tag(content=axe_source)
                    for state in ("loaded", "opened"):
                        if state == "opened":
                            await open_everything(page)
                            await page.locator(".contact-tab").first.click()  # leave the email form open
                        result = await page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
                        violations = [
                            (v["id"], v["impact"], [(n["target"], n["failureSummary"]) for n in v["nodes"]][:3])
                            for v in result["violations"]
                        ]
                        assert violations == [], (template, width, state, violations)
                    await context.close()
        finally:
            await browser.close()


def record_problems(page) -> list[str]:
    """Console errors and warnings, uncaught exceptions and failed requests of one page, as they happen."""
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    # A media element cancels and re-issues its own requests (ERR_ABORTED): not a failure.
    page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and problems.append(r.url))
    return problems


@pytest.mark.timeout(300)
async def test_no_console_errors_or_csp_violations(demo_server):
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, "--autoplay-policy=no-user-gesture-required", "--mute-audio")
        try:
            for template in TEMPLATES:
                host = demo_in(template)[1]
                context = await browser.new_context(viewport={"width": 390, "height": 844})
                await context.add_init_script(WATCH)
                await context.route("https://challenges.cloudflare.com/**", fake_turnstile)
                page = await context.new_page()
                problems = record_problems(page)
                await page.goto(f"http://{host}:{demo_server.port}/", wait_until="load")
                await page.wait_for_function("() => document.querySelector('#presence').dataset.status === 'online'")
                await open_everything(page)
                for link in await page.locator("a.link").all():
                    await link.hover()
                csp = await page.evaluate("() => window.__csp")
                assert (problems, csp) == ([], []), template
                await context.close()
        finally:
            await browser.close()
