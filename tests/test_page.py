"""The host-routed profile page (issue: foundation)."""

from __future__ import annotations

import asyncio
import re

from conftest import base_document

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36"


async def test_published_profile_renders_with_head_tags(app_server):
    await app_server.load(base_document())
    response = await app_server.fetch("/", host="Alice.HEP.gg:8888", headers={"User-Agent": BROWSER_UA})
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.body.decode()
    og = re.search(r'<meta property="og:image" content="([^"]+)"', html).group(1)
    assert og.startswith(f"{app_server.services.config.public_origin}/api/v1/profiles/p1/og.png")
    assert f'<meta name="twitter:image" content="{og}">' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert '<meta property="og:title" content="Alice">' in html
    assert '<meta name="theme-color" content="#7c3aed">' in html
    assert '<link rel="canonical" href="http://alice.hep.gg:8888/">' in html
