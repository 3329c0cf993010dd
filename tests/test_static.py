"""/_static/: text files gzipped for clients that accept it, the same bytes otherwise, ranges untouched."""

from __future__ import annotations

import gzip
import re

from conftest import ROOT


async def static_url(app_server, name: str) -> str:
    html = (await app_server.fetch("/", host="alice.hep.gg")).body.decode()
    return re.search(rf'"(/_static/{re.escape(name)}\?v=[0-9a-f]+)"', html).group(1)


async def test_css_is_gzipped_when_accepted(app_server):
    from conftest import base_document

    await app_server.load(base_document())
    url = await static_url(app_server, "profile.css")
    raw = (ROOT / "static" / "profile.css").read_bytes()
    zipped = await app_server.fetch(url, headers={"Accept-Encoding": "gzip"}, decompress_response=False)
    assert zipped.code == 200 and zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == raw and len(zipped.body) < len(raw) / 3
    assert zipped.headers["Content-Type"] == "text/css" and zipped.headers["Vary"] == "Accept-Encoding"
    assert "max-age" in zipped.headers["Cache-Control"]  # versioned URL: cached long, as before
    assert zipped.headers["X-Content-Type-Options"] == "nosniff"
    plain = await app_server.fetch(url, headers={"Accept-Encoding": "identity"}, decompress_response=False)
    assert plain.body == raw and "Content-Encoding" not in plain.headers
    assert plain.headers["Etag"] != zipped.headers["Etag"]  # two variants, two validators
    again = await app_server.fetch(
        url, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["Etag"]}, decompress_response=False
    )
    assert again.code == 304
    part = await app_server.fetch(
        url, headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"}, decompress_response=False
    )
    assert part.code == 206 and part.body == raw[:10]
    head = await app_server.fetch(url, method="HEAD", headers={"Accept-Encoding": "gzip"}, decompress_response=False)
    assert head.code == 200 and head.body == b"" and int(head.headers["Content-Length"]) == len(zipped.body)
    missing = await app_server.fetch("/_static/nope.css", headers={"Accept-Encoding": "gzip"})
    assert missing.code == 404
