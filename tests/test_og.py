"""The OG card endpoint end to end: real server, real render processes, PNGs decoded with Pillow."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import os
import socket
import subprocess
import sys

import pytest
import tornado.web
from PIL import Image as PILImage
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import render.og_fonts as og_fonts_module
from og import worker
from render.og_card import CardInput, RenderError
from render.og_draw import CardRenderer
from render.og_emoji import emoji_font
from render.og_layout import ELLIPSIS, TEXT_LEFT, TEXT_RIGHT, TEXT_WIDTH

from conftest import ROOT, base_document, run_cli

OG = "/api/v1/profiles/p1/og.png"


def decode(body: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(body))
    image.load()
    return image


def count(image: PILImage.Image, box: tuple[int, int, int, int], predicate) -> int:
    """Pixels in `box` whose colour satisfies `predicate`, testing each distinct colour once (Pillow counts
    them in C: a Python call per pixel took 1-3 s per card, most of test_og's time)."""
    region = image.convert("RGB").crop(box)
    colours = region.getcolors(maxcolors=region.width * region.height)  # never None: as many as pixels
    return sum(n for n, colour in colours if predicate(colour))


def near(colour: tuple[int, int, int], tolerance: int = 3):
    return lambda p: all(abs(a - b) <= tolerance for a, b in zip(p, colour, strict=False))


WHITE = near((255, 255, 255), 2)
NAME_BAND = (TEXT_LEFT, 0, TEXT_RIGHT, 630)  # the name is the only pure-white ink right of the avatar


# ---------------------------------------------------------------- the card


async def test_card_is_a_1200x630_png_in_the_theme(app_server):
    await app_server.load(base_document())
    response = await app_server.fetch(OG)
    assert response.code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.headers["ETag"].startswith('"')
    image = decode(response.body)
    assert image.format == "PNG"
    assert image.size == (1200, 630)
    rgb = image.convert("RGB")
    for corner in ((3, 3), (1196, 3), (600, 40)):
        assert near((0x0B, 0x0B, 0x10))(rgb.getpixel(corner)), corner
    assert count(image, (0, 0, 1200, 630), near((0x7C, 0x3A, 0xED))) > 5000  # avatar circle + stripe
    assert count(image, NAME_BAND, WHITE) > 500  # "Alice" drawn in white


async def test_gradient_background_and_light_theme(app_server):
    theme = {"accent": "#ff0000", "background": {"from": "#ffffff", "to": "#00ff00", "angle": 90}, "font": "Serif"}
    await app_server.load(base_document(theme=theme))
    response = await app_server.fetch(OG)
    assert response.code == 200
    rgb = decode(response.body).convert("RGB")
    left, right = rgb.getpixel((2, 40)), rgb.getpixel((1197, 40))
    assert near((255, 255, 255), 12)(left), left
    assert near((0, 255, 0), 12)(right), right
    assert count(decode(response.body), (0, 0, 1200, 630), near((255, 0, 0))) > 5000
    dark_ink = count(decode(response.body), (TEXT_LEFT, 100, TEXT_RIGHT, 400), lambda p: max(p) < 60)
    assert dark_ink > 500  # light background -> dark text


async def test_no_presence_or_footer_and_premium_does_not_matter(app_server):
    doc = base_document()
    await app_server.load(doc)
    premium = await app_server.fetch(OG)
    doc["users"][0]["premium_until"] = "2001-01-01T00:00:00Z"
    await app_server.load(doc)  # drops the cached site: the next request reads the lapsed owner
    lapsed = await app_server.fetch(OG)
    assert premium.code == lapsed.code == 200
    assert premium.body == lapsed.body  # no footer appears, nothing premium ever showed
    assert app_server.services.og.renders == 1


@pytest.mark.parametrize(
    "name,bio",
    [
        ("W" * 80, "x" * 600),
        ("A " * 40, "word " * 120),
        ("山田太郎の素晴らしいプロフィールページへようこそ、長い名前のテストです", "日本語の自己紹介。" * 40),
        ("🎉🎸 Party 👩‍👩‍👧 time ✨", "Emoji 🧪 everywhere 🏳️‍🌈 and CJK 한국어 中文 mixed in. " * 8),
        ("🎉🎸", "🎸"),  # nothing drawable: initials fall back, card still renders
        ("quote ' and \" and \\ %[fx:1] %wx%h @/etc/passwd", "<b>markup</b> &amp; %% \\n"),
    ],
)
async def test_hard_text_renders(app_server, name, bio):
    await app_server.load(base_document(content={"display_name": name, "bio": bio, "avatar_url": None}))
    response = await app_server.fetch(OG)
    assert response.code == 200, response.body[:200]
    image = decode(response.body)
    assert image.size == (1200, 630)
    assert count(image, (0, 0, 1200, 630), near((0x7C, 0x3A, 0xED))) > 5000
    if name != "🎉🎸":
        assert count(image, NAME_BAND, WHITE) > 300


@pytest.mark.skipif(emoji_font() is None, reason="needs fonts-noto-color-emoji (scripts/install.sh)")
async def test_emoji_are_drawn_in_colour(app_server):
    """Noto Color Emoji's own bitmaps, composited where the text puts them (render/og_emoji.py): the cherry
    blossom's pink shows in the name and the bio, through the real render processes."""

    def pink(pixel):
        r, g, b = pixel[:3]
        return r > 200 and 90 < g < 200 and b > 140 and r - g > 40

    await app_server.load(base_document(content={"display_name": "Yuki", "bio": "Tokyo, Japan", "avatar_url": None}))
    plain = decode((await app_server.fetch(OG)).body)
    await app_server.load(
        base_document(content={"display_name": "Yuki 🌸", "bio": "Tokyo 🌸, Japan", "avatar_url": None})
    )
    response = await app_server.fetch(OG)
    assert response.code == 200
    image = decode(response.body)
    assert count(plain, NAME_BAND, pink) == 0
    top, bottom = (TEXT_LEFT, 0, TEXT_RIGHT, 250), (TEXT_LEFT, 250, TEXT_RIGHT, 630)
    assert count(image, top, pink) > 300 and count(image, bottom, pink) > 50
    assert count(image, NAME_BAND, WHITE) > 300  # the name's letters still drawn


def test_wrapping_never_overflows_and_ends_in_an_ellipsis():
    renderer = CardRenderer()
    bold, regular = renderer.fonts["Inter"]
    cjk_bold, cjk_regular = renderer.cjk
    for text in ("W" * 80, "word " * 200, "日本語" * 100, "a" * 30 + " " + "b" * 200):
        lines = renderer.wrap(text, 68, 2, bold, cjk_bold)
        assert len(lines) == 2
        assert lines[-1].endswith(ELLIPSIS)
        for line in lines:
            assert renderer.text_width(line, 68, bold, cjk_bold) <= TEXT_WIDTH
    assert renderer.wrap("Short bio", 32, 3, regular, cjk_regular) == ["Short bio"]
    assert renderer.wrap("  \n\t ", 32, 3, regular, cjk_regular) == []


def test_owner_text_is_drawn_literally():
    """ImageMagick escapes (%h, %[fx:], @file) in owner text must never be expanded."""
    renderer = CardRenderer()

    def card(name: str) -> bytes:
        return renderer.render(CardInput(name, "", "x.hep.gg", "#7c3aed", "#000000", "#000000", 135, "Inter", "X"))

    assert card("%h") != card("630")
    assert card("%[fx:1+1]") != card("2")
    with open("/etc/hostname") as f:
        hostname = f.read().strip()
    assert card("@/etc/hostname") != card(hostname)
    assert card("%h") == card("%h")  # deterministic: the content hash is a valid ETag


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "change",
    [
        {"id": "missing"},
        {"suspended": 1},
        {"is_public": 0},
        {"expires_at": "2001-01-01T00:00:00Z"},
        "owner",
    ],
)
async def test_not_found(app_server, change):
    doc = base_document()
    if change == "owner":
        doc["users"][0]["suspended"] = True
        path = OG
    elif "id" in change:
        path = "/api/v1/profiles/missing/og.png"
    else:
        doc = base_document(**change)
        path = OG
    await app_server.load(doc)
    response = await app_server.fetch(path)
    assert response.code == 404
    assert response.body == b"Not found"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    assert app_server.services.og.renders == 0


async def test_odd_profile_ids_are_not_found(app_server):
    await app_server.load(base_document())
    for path in (
        "/api/v1/profiles/%00/og.png",
        "/api/v1/profiles/" + "a" * 65 + "/og.png",
        "/api/v1/profiles/p1%27/og.png",
    ):
        response = await app_server.fetch(path)
        assert response.code == 404 and response.body == b"Not found", path


class FailingPool:
    async def render(self, card):
        raise RenderError("forced by the test")


async def test_render_failure_is_a_500(app_server, caplog):
    await app_server.load(base_document())
    app_server.services.og.pool, real_pool = FailingPool(), app_server.services.og.pool
    try:
        response = await app_server.fetch(OG)
    finally:
        app_server.services.og.pool = real_pool
    assert response.code == 500
    assert response.body == b"Render failed"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    assert "forced by the test" in caplog.text
    # Failures are not cached: the next request renders.
    assert (await app_server.fetch(OG)).code == 200


@pytest.mark.own_render_pool
@pytest.mark.slow  # spawns render processes
async def test_a_dead_render_process_is_a_500_then_the_pool_recovers(app_server):
    await app_server.load(base_document())
    pool = app_server.services.og.pool
    await app_server.services.og.warm()  # both processes, as `serve` starts them
    pids = pool.pids()
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, 9)  # dead at once: they never take another job, so the next render finds the pool broken
    response = await app_server.fetch(OG)
    assert response.code == 500 and response.body == b"Render failed"
    again = await app_server.fetch(OG)
    assert again.code == 200
    assert set(pool.pids()).isdisjoint(pids)


# ---------------------------------------------------------------- the pool starts on demand


@pytest.mark.own_render_pool
@pytest.mark.slow  # spawns render processes
async def test_render_processes_start_on_the_first_card_with_the_font_maps(app_server):
    from render.og_fonts import font_charsets

    await app_server.load(base_document())
    pool = app_server.services.og.pool
    assert pool.pids() == [] and pool.fonts is None  # a server that renders nothing spawns nothing
    assert (await app_server.fetch(OG)).code == 200
    assert len(pool.pids()) == 1  # one card at a time needs one process of the two
    assert pool.fonts is not None and pool.fonts.charsets == font_charsets()  # read once here, handed to every worker


@pytest.mark.slow  # spawns render processes
async def test_warm_starts_every_process_as_serve_does(make_config):
    from conftest import start_test_server, stop_test_server

    server = await start_test_server(make_config(og_render_processes=2), warm_og=True)
    try:
        pids = server.services.og.pool.pids()
        assert len(pids) == 2
        # Each has rendered its card: warm() does not return while one is still starting (its init not yet run).
        # Below the server's priority: a card waits, a page visitor does not (og/worker.py).
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(19, ours + worker.NICENESS)] * 2
    finally:
        await stop_test_server(server)


@pytest.mark.slow  # spawns render processes
async def test_warm_waits_for_a_process_that_starts_late():
    """One card per process is not enough when one process starts late: the first renders both cards, and
    the late one would meet its first visitor cold. warm() returns once each has rendered one."""
    from concurrent.futures import ProcessPoolExecutor

    from og.pool import RenderPool
    from og.service import SAMPLE

    from shared_render import late_second_init

    class LatePool(RenderPool):
        async def _ready(self):
            if self._executor is None:
                started = self._context.Value("i", 0)
                self._executor = ProcessPoolExecutor(
                    self.size, mp_context=self._context, initializer=late_second_init, initargs=(started, None)
                )
            return self._executor

    pool = LatePool(2)
    try:
        pids = await pool.warm(SAMPLE)
        assert len(pids) == 2 and pids == pool.pids()
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(19, ours + worker.NICENESS)] * 2
    finally:
        await pool.close()


def test_serve_reads_the_fonts_before_it_forks_and_stops_on_a_missing_one(tmp_path):
    missing_font = "import render.og_fonts as f; f.THEME_FONTS['Inter'] = ('NoSuchFont-Bold.ttf', 'DejaVuSans.ttf')"
    result = run_cli("serve", "--processes", "2", "--data-dir", str(tmp_path), "--port", "0", patch=missing_font)
    assert result.returncode == 2, result.stderr
    assert "configuration error: font NoSuchFont-Bold.ttf not found" in result.stderr
    assert "Traceback" not in result.stderr and "worker" not in result.stderr  # no worker was forked


def test_a_render_process_finds_imagemagick_at_the_first_name_it_tries(tmp_path):
    # wand's own search asks for 24 names that are not installed first (0.35 s of ldconfig and gcc runs).
    code = (
        "import ctypes.util, json; from og import worker; names = []; find = ctypes.util.find_library; "
        "ctypes.util.find_library = lambda name: names.append(name) or find(name); worker.init(); "
        "import wand.api; print(json.dumps([names, wand.api.libraries[0]._name]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAND_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    names, library = json.loads(result.stdout)
    assert [name for name in names if name.startswith("Magick")] == ["MagickCore-6.Q16", "MagickWand-6.Q16"]
    assert "libMagickWand-6.Q16" in library


def test_the_main_module_a_render_process_imports_first_is_light():
    # A spawned render process imports hepgg_server.py (the parent's __main__) before anything else:
    # redis, tornado and pymongo there cost each one ~0.4 s of CPU at every replica start.
    code = "import sys, hepgg_server; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    loaded = set(ast.literal_eval(result.stdout))
    assert loaded.isdisjoint({"redis", "tornado", "pymongo", "wand", "fontTools", "runtime", "presence"})


@pytest.mark.own_render_pool
async def test_a_missing_font_is_a_500_on_demand_and_stops_a_warming_server(app_server, make_config, monkeypatch):
    import render.og_fonts as og_fonts
    from render.og_fonts import FontError
    from runtime.services import build_services

    await app_server.load(base_document())
    monkeypatch.setitem(og_fonts.THEME_FONTS, "Inter", ("NoSuchFont-Bold.ttf", "DejaVuSans.ttf"))
    response = await app_server.fetch(OG)
    assert (response.code, response.body) == (500, b"Render failed")
    assert app_server.services.og.pool.pids() == []
    config = make_config()
    with pytest.raises(FontError, match=r"NoSuchFont-Bold\.ttf"):
        await build_services(config, config.mongo_uri, config.redis_url, warm_og=True)


# ---------------------------------------------------------------- caching


async def test_etag_and_304(app_server):
    await app_server.load(base_document())
    first = await app_server.fetch(OG)
    etag = first.headers["ETag"]
    second = await app_server.fetch(OG)
    assert second.body == first.body and second.headers["ETag"] == etag
    not_modified = await app_server.fetch(OG, headers={"If-None-Match": etag})
    assert not_modified.code == 304
    assert not_modified.body == b""
    assert not_modified.headers["ETag"] == etag
    other = await app_server.fetch(OG, headers={"If-None-Match": '"something-else"'})
    assert other.code == 200
    assert app_server.services.og.renders == 1


async def test_a_changed_profile_changes_the_card(app_server):
    doc = base_document()
    await app_server.load(doc)
    first = await app_server.fetch(OG)
    doc["profiles"][0]["content"]["display_name"] = "Bob Different"
    await app_server.load(doc)  # drops the cached site
    second = await app_server.fetch(OG)
    assert second.code == 200
    assert second.headers["ETag"] != first.headers["ETag"]
    assert second.body != first.body
    stale = await app_server.fetch(OG, headers={"If-None-Match": first.headers["ETag"]})
    assert stale.code == 200
    assert app_server.services.og.renders == 2


async def test_parallel_requests_for_one_cold_card_render_once(app_server):
    await app_server.load(base_document())
    client = AsyncHTTPClient(force_instance=True, max_clients=20)  # all 20 in flight at once
    try:
        responses = await asyncio.gather(*(client.fetch(app_server.url + OG, raise_error=False) for _ in range(20)))
    finally:
        client.close()
    assert [r.code for r in responses] == [200] * 20
    assert len({r.body for r in responses}) == 1
    assert app_server.services.og.renders == 1


async def test_head(app_server):
    await app_server.load(base_document())
    response = await app_server.fetch(OG, method="HEAD")
    assert response.code == 200 and response.body == b""
    assert response.headers["Content-Type"] == "image/png"


# ---------------------------------------------------------------- avatars


class AvatarHost:
    """A real image host on 127.0.0.1 that counts what it is asked for."""

    def __init__(self):
        self.requests: list[str] = []
        host = self

        class Handler(tornado.web.RequestHandler):
            async def get(self, name):
                host.requests.append(name)
                if name == "good.png":
                    buffer = io.BytesIO()
                    PILImage.new("RGB", (64, 64), (0, 200, 0)).save(buffer, "PNG")
                    self.set_header("Content-Type", "image/png")
                    self.write(buffer.getvalue())
                elif name == "broken.png":
                    self.set_header("Content-Type", "image/png")
                    self.write(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
                elif name == "svg.png":
                    self.set_header("Content-Type", "image/png")
                    self.write(b'<svg xmlns="http://www.w3.org/2000/svg"><image href="/etc/passwd"/></svg>')
                elif name == "big.png":
                    self.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024))
                elif name == "big-chunked.png":  # no Content-Length: the cap must stop it mid-transfer
                    self.write(b"\x89PNG\r\n\x1a\n")
                    for _ in range(48):
                        self.write(b"\x00" * 65536)
                        await self.flush()
                else:
                    self.redirect("http://example.invalid/elsewhere.png")

        sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.server = HTTPServer(tornado.web.Application([(r"/(.+)", Handler)]))
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    async def close(self):
        self.server.stop()
        await self.server.close_all_connections()


@pytest.fixture
async def avatar_host():
    host = AvatarHost()
    yield host
    await host.close()


def avatar_centre(body: bytes) -> tuple[int, int, int]:
    return decode(body).convert("RGB").getpixel((80 + 128, 309 - 6))


async def test_avatar_hosts_not_in_the_allow_list_are_never_contacted(make_server, avatar_host):
    server = await make_server(avatar_hosts="images.example", og_render_processes=1)
    for url in (avatar_host.url("good.png"), avatar_host.url("good.png", host="localhost")):
        await server.load(base_document(content={"display_name": "Alice", "bio": "", "avatar_url": url}))
        response = await server.fetch(OG)
        assert response.code == 200
        assert near((0x7C, 0x3A, 0xED))(avatar_centre(response.body))  # initials on the accent
    assert avatar_host.requests == []


async def test_an_allowed_avatar_is_drawn_and_fetched_once(make_server, avatar_host):
    server = await make_server(avatar_hosts="127.0.0.1", og_render_processes=1)
    await server.load(
        base_document(content={"display_name": "Alice", "bio": "", "avatar_url": avatar_host.url("good.png")})
    )
    responses = await asyncio.gather(*(server.fetch(OG) for _ in range(5)))
    assert all(r.code == 200 for r in responses)
    assert near((0, 200, 0), 6)(avatar_centre(responses[0].body))
    assert avatar_host.requests == ["good.png"]
    assert server.services.og.renders == 1


@pytest.mark.parametrize(
    "name", ["broken.png", "svg.png", "big.png", "big-chunked.png", "redirect.png", "missing-port"]
)
async def test_a_bad_avatar_falls_back_to_initials(make_server, avatar_host, name):
    server = await make_server(avatar_hosts="127.0.0.1", og_render_processes=1)
    url = "http://127.0.0.1:1/x.png" if name == "missing-port" else avatar_host.url(name)
    await server.load(base_document(content={"display_name": "Alice", "bio": "", "avatar_url": url}))
    response = await server.fetch(OG)
    assert response.code == 200
    assert near((0x7C, 0x3A, 0xED))(avatar_centre(response.body))
    assert count(decode(response.body), (80, 190, 340, 440), WHITE) > 300  # the initials "A"


def test_a_missing_font_fails_loudly(monkeypatch):
    import render.og_fonts as og_fonts
    from render.og_fonts import FontError, font_tables

    assert len(font_tables().charsets) == 6 + len(set(og_fonts.cjk_fonts()))  # DejaVu's six, one or two CJK files
    monkeypatch.setitem(og_fonts.THEME_FONTS, "Inter", ("NoSuchFont-Bold.ttf", "DejaVuSans.ttf"))
    with pytest.raises(FontError, match=r"NoSuchFont-Bold\.ttf"):
        font_tables()


@pytest.mark.parametrize("candidate", og_fonts_module.CJK_CANDIDATES, ids=lambda pair: pair[1])
def test_each_cjk_fallback_draws_japanese_korean_and_chinese(monkeypatch, candidate):
    """The image ships the small WenQuanYi font, a dev machine Noto CJK: cards come out right with either."""
    try:
        paths = tuple(og_fonts_module.font_path(name) for name in candidate)
    except og_fonts_module.FontError:
        pytest.skip(f"{candidate[1]} is not installed (scripts/install.sh --test installs both CJK fonts)")
    monkeypatch.setattr(og_fonts_module, "CJK_CANDIDATES", (candidate,))
    renderer = CardRenderer()
    assert renderer.cjk == paths
    bold, _ = renderer.fonts["Inter"]
    text = "山田 太郎 한국어 中文 ようこそ"
    assert renderer.font_runs.clean(text, bold, renderer.cjk[0]) == text  # every character has a glyph: none dropped
    png = renderer.render(
        CardInput(text, "日本語の自己紹介", "x.hep.gg", "#7c3aed", "#000000", "#000000", 0, "Inter", "山")
    )
    assert count(decode(png), NAME_BAND, WHITE) > 300
