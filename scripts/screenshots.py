#!/usr/bin/env python3
"""Screenshots of the demo profile in each template, at 1366 and 390 CSS pixels wide, into docs/screenshots/.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts `serve` on a temporary data dir (embedded stores), imports the demo profile once per template
(classic.localhost, minimal.localhost, spotlight.localhost), plus the owner options (options.localhost:
classic with a banner and a background image, drawn here with Pillow and served from 127.0.0.1, the
server's --image-hosts), sets a fixed "listening" presence for the demo owner, and captures full pages
in Debian's Chromium (never a downloaded browser). Needs
scripts/install.sh --test (Playwright and chromium). Nothing leaves the machine: *.localhost is loopback
and the album art's host resolves nowhere, so the card shows its activity icon.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.cli import demo_document  # noqa: E402
from store.theme import TEMPLATES  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = {"desktop": (1366, 900, 1), "mobile": (390, 844, 1)}  # width, height, device scale factor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def template_document(images: str) -> dict:
    """The demo profile once per template, each on <template>.localhost, all owned by the demo owner, and
    on options.localhost with a banner and a background image from `images` (an origin)."""
    document = demo_document()
    document["users"][0]["slots"] = [{"expires_at": "2099-01-01T00:00:00Z"}] * 2  # premium allows 2; we show 4
    base = document["profiles"][0]
    document["profiles"] = [
        dict(copy.deepcopy(base), id=f"demo-{name}", template=name, domain=f"{name}.localhost") for name in TEMPLATES
    ]
    options = dict(copy.deepcopy(base), id="demo-options", template="classic", domain="options.localhost")
    options["content"].update(background_url=f"{images}/background.png", banner_url=f"{images}/banner.png")
    options["toggles"].update(background_image=True, banner=True)
    document["profiles"].append(options)
    return document


def drawn_images() -> dict[str, bytes]:
    """A banner and a background, drawn here (nothing downloaded): soft diagonal bands in the demo's colours."""
    from PIL import Image, ImageDraw, ImageFilter

    def bands(width: int, height: int, colours: list[tuple[int, int, int]]) -> bytes:
        image = Image.new("RGB", (width, height), colours[0])
        draw = ImageDraw.Draw(image)
        step = (width + height) // len(colours)
        for index, colour in enumerate(colours):
            x = index * step
            draw.polygon([(x, 0), (x + step, 0), (x + step - height, height), (x - height, height)], fill=colour)
        buffer = io.BytesIO()
        image.filter(ImageFilter.GaussianBlur(height // 12)).save(buffer, "PNG")
        return buffer.getvalue()

    return {
        "/banner.png": bands(960, 300, [(124, 58, 237), (219, 39, 119), (245, 158, 11), (14, 165, 233)]),
        "/background.png": bands(1600, 1000, [(30, 27, 75), (88, 28, 135), (15, 118, 110), (30, 58, 138)]),
    }


def serve_images() -> ThreadingHTTPServer:
    images = drawn_images()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(*args: str, data_dir: Path, port: int, stdin: str | None = None) -> str:
    command = [sys.executable, str(ROOT / "hepgg_server.py"), *args, "--data-dir", str(data_dir), "--port", str(port)]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def wait_for(url: str, host: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, headers={"Host": host})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"serve did not answer {url} within {timeout} s")
        time.sleep(0.3)


async def capture(port: int, out: Path) -> list[Path]:
    from PIL import Image
    from playwright.async_api import async_playwright

    written = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP i.scdn.co ~NOTFOUND"],
        )
        try:
            for template in [*TEMPLATES, "options"]:
                for width, height, scale in VIEWPORTS.values():
                    context = await browser.new_context(
                        viewport={"width": width, "height": height}, device_scale_factor=scale, reduced_motion="reduce"
                    )
                    page = await context.new_page()
                    await page.goto(f"http://{template}.localhost:{port}/", wait_until="load")
                    await page.wait_for_function(
                        "() => document.querySelector('#presence .presence-activity').textContent !== ''"
                    )
                    await page.wait_for_timeout(300)  # the art's failed load settles, the ticker draws once
                    path = out / f"{template}-{width}.png"
                    await page.screenshot(path=str(path), full_page=True)
                    Image.open(path).save(path, optimize=True)  # the same pixels, ~10 % smaller
                    written.append(path)
                    await context.close()
        finally:
            await browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNGs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    now_ms = int(time.time() * 1000)
    images = serve_images()
    with tempfile.TemporaryDirectory(prefix="hepgg-shots-") as tmp:
        data_dir = Path(tmp)
        serve = [sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--data-dir", tmp, "--port", str(port)]
        server = subprocess.Popen(
            [*serve, "--image-hosts", "127.0.0.1"],  # the drawn banner and background (serve_images)
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            document = data_dir / "demo.json"
            document.write_text(json.dumps(template_document(f"http://127.0.0.1:{images.server_address[1]}")))
            wait_for(f"http://127.0.0.1:{port}/healthz", "localhost")
            run("import", str(document), data_dir=data_dir, port=port)
            run(
                "presence", "set", "demo-owner", "--status", "online", "--type", "2", "--activity-name", "Spotify",
                "--details", "Midnight City", "--state", "M83", "--large-image", "spotify:ab67616d0000b273",
                "--large-text", "Hurry Up, We're Dreaming", "--started-at", str(now_ms - 75_000),
                "--ends-at", str(now_ms + 168_000), data_dir=data_dir, port=port,
            )  # fmt: skip
            wait_for(f"http://127.0.0.1:{port}/", "classic.localhost")
            for path in asyncio.run(capture(port, out)):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            server.terminate()
            server.wait(timeout=30)
            images.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
