"""Decompression bombs as avatars: the card is drawn (initials or the first frame), render processes stay small.

Issue 18 measured ~850 MB RSS in a render worker for a 345 KB GIF of 200 frames at 1000x1000 and ~600 MB
for a 186 KB 8000x8000 PNG, both from an allow-listed avatar host. The bombs are made in the test
(tests/image_bombs.py) and served by a real local image host.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tornado.web
from image_bombs import gif_bomb, png_bomb
from PIL import Image as PILImage
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from render.image_size import MAX_AVATAR_PIXELS, image_size, within_budget

from conftest import ROOT, base_document

OG = "/api/v1/profiles/p1/og.png"
PEAK_RSS_LIMIT_KIB = 150 * 1024


def encoded(kind: str, size: tuple[int, int], **options) -> bytes:
    out = io.BytesIO()
    mode = "P" if kind == "gif" else "RGB"
    PILImage.new(mode, size).save(out, {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}[kind], **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("png", {}),
        ("gif", {}),
        ("jpeg", {}),
        ("jpeg", {"progressive": True}),
        ("webp", {}),
        ("webp", {"lossless": True}),
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (123, 45), (3000, 2000)])
def test_header_sizes(kind, options, size):
    assert image_size(encoded(kind, size, **options), kind) == size


def test_header_sizes_of_the_bombs_and_of_garbage():
    assert image_size(gif_bomb(frames=3), "gif") == (1000, 1000)
    assert image_size(png_bomb(), "png") == (8000, 8000)
    assert not within_budget(png_bomb(), "png")
    assert within_budget(encoded("png", (2048, 2048)), "png")
    assert not within_budget(encoded("png", (2049, 2048)), "png")
    for kind, data in [("png", b"\x89PNG\r\n\x1a\n"), ("gif", b"GIF89a"), ("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")]:
        assert image_size(data, kind) is None
        assert not within_budget(data, kind)
    # A GIF whose first frame is larger than the screen it declares is judged by the frame.
    liar = bytearray(encoded("gif", (10, 10)))
    descriptor = liar.index(b"\x2c\x00\x00\x00\x00")
    liar[descriptor + 5 : descriptor + 9] = (5000).to_bytes(2, "little") * 2
    assert image_size(bytes(liar), "gif") == (5000, 5000)


class BombHost:
    """A real allow-listed image host on 127.0.0.1 serving fixed bodies by name."""

    def __init__(self, bodies: dict[str, bytes]):
        self.requests: list[str] = []
        host = self

        class Handler(tornado.web.RequestHandler):
            def get(self, name):
                host.requests.append(name)
                self.set_header("Content-Type", "image/" + name.rsplit(".", 1)[1])
                self.write(bodies[name])

        sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.server = HTTPServer(tornado.web.Application([(r"/(.+)", Handler)]))
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def close(self):
        self.server.stop()
        await self.server.close_all_connections()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def avatar_centre(body: bytes) -> tuple[int, int, int]:
    return PILImage.open(io.BytesIO(body)).convert("RGB").getpixel((80 + 128, 309 - 6))


@pytest.mark.own_render_pool  # the peak RSS of a process that drew nothing else
@pytest.mark.slow  # spawns a render process
async def test_bombs_from_an_allowed_host_draw_a_card_and_keep_the_render_process_small(make_server):
    host = BombHost({"bomb.gif": gif_bomb(), "bomb.png": png_bomb()})
    try:
        server = await make_server(avatar_hosts="127.0.0.1", og_render_processes=1)
        await server.services.og.warm()  # as serve starts it: one sample card, then the bombs
        [pid] = server.services.og.pool.pids()
        for name, centre in [("bomb.png", (0x7C, 0x3A, 0xED)), ("bomb.gif", (255, 0, 0))]:
            await server.load(base_document(content={"display_name": "Alice", "bio": "", "avatar_url": host.url(name)}))
            response = await asyncio.wait_for(server.fetch(OG), 10)
            assert response.code == 200
            # The PNG is over the pixel budget: initials on the accent. The GIF's first frame (red) is drawn.
            assert all(abs(a - b) <= 8 for a, b in zip(avatar_centre(response.body), centre, strict=True)), name
        assert host.requests == ["bomb.png", "bomb.gif"]
        assert server.services.og.pool.pids() == [pid]  # the same process drew both: it never died
        assert peak_rss_kib(pid) <= PEAK_RSS_LIMIT_KIB, f"render process peaked at {peak_rss_kib(pid)} KiB"
    finally:
        await host.close()


BACKSTOP = textwrap.dedent(
    """
    import dataclasses, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from image_bombs import gif_bomb, png_bomb
    from og.service import SAMPLE
    from render.og_draw import CardRenderer

    # No pixel budget: only ImageMagick's own limits and the first-frame read stand between the bombs and RAM.
    renderer = CardRenderer(max_avatar_pixels=10**12)
    renderer.render(SAMPLE)
    results = {}
    for kind, data in [("png", png_bomb()), ("gif", gif_bomb())]:
        started = time.monotonic()
        card = dataclasses.replace(SAMPLE, avatar=data, avatar_format=kind, avatar_sha=kind)
        drawn = renderer.avatar(card) is not None
        renderer.render(card)
        results[kind] = [drawn, time.monotonic() - started]
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            results["peak_kib"] = int(line.split()[1])
    print(json.dumps(results))
    """
)


@pytest.mark.slow  # draws the bombs in a Python subprocess
def test_imagemagick_limits_alone_stop_the_bombs():
    """Behind the header check: the limits fail the 512 MB pixel cache at once; an animation costs one frame."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", BACKSTOP, str(ROOT / "tests")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "MAGICK_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["png"][0] is False  # "cache resources exhausted": initials
    assert results["gif"][0] is True  # the first frame only
    assert results["png"][1] < 5 and results["gif"][1] < 5
    assert results["peak_kib"] <= PEAK_RSS_LIMIT_KIB, results


def test_the_budget_admits_the_largest_allowed_avatar():
    from og.service import SAMPLE
    from render.og_draw import CardRenderer

    side = int(MAX_AVATAR_PIXELS**0.5)
    renderer = CardRenderer()
    import dataclasses

    card = dataclasses.replace(SAMPLE, avatar=encoded("png", (side, side)), avatar_format="png", avatar_sha="max")
    assert renderer.avatar(card) is not None
