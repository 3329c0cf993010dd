"""HTTP conformance and the page's own URL (issue 19, items 10 and 11).

- The canonical URL and og:url use the scheme a trusted proxy reports (X-Forwarded-Proto) and the
  port in canonical form (default ports omitted, leading zeros gone); the page memo is keyed by it.
"""

from __future__ import annotations

import re

import pytest
from test_bad_input import request

from handlers.page import PAGE_VARIANTS_KEPT

from conftest import base_document


@pytest.fixture
async def server(make_server, upstream):
    server = await make_server(trusted_proxies=("127.0.0.1/32",), music_upstream_url=upstream.url)
    await server.load(base_document())
    return server


def canonical(html: bytes) -> tuple[str, str]:
    text = html.decode()
    link = re.search(r'<link rel="canonical" href="([^"]*)">', text).group(1)
    og_url = re.search(r'<meta property="og:url" content="([^"]*)">', text).group(1)
    return link, og_url


# ---------------------------------------------------------------- the canonical origin


@pytest.mark.parametrize(
    "host, proto, expected",
    [
        (b"alice.hep.gg", None, "http://alice.hep.gg/"),
        (b"alice.hep.gg", b"https", "https://alice.hep.gg/"),
        (b"alice.hep.gg", b"HTTPS", "https://alice.hep.gg/"),
        (b"alice.hep.gg", b"http, https", "https://alice.hep.gg/"),  # a list: the nearest proxy's value
        (b"alice.hep.gg", b"gopher", "http://alice.hep.gg/"),  # not a scheme we serve: the connection's
        (b"alice.hep.gg:443", b"https", "https://alice.hep.gg/"),
        (b"alice.hep.gg:80", b"https", "https://alice.hep.gg:80/"),
        (b"alice.hep.gg:00000000000080", None, "http://alice.hep.gg/"),
        (b"ALICE.Hep.GG.:08888", None, "http://alice.hep.gg:8888/"),
        (b"alice.hep.gg:8888", None, "http://alice.hep.gg:8888/"),
        (b"alice.hep.gg:0", None, "http://alice.hep.gg/"),  # not a port: none named
        (b"alice.hep.gg:99999", None, "http://alice.hep.gg/"),
        (b"alice.hep.gg:", None, "http://alice.hep.gg/"),
    ],
)
async def test_the_canonical_url_is_the_trusted_scheme_and_a_canonical_port(server, host, proto, expected):
    headers = b"X-Forwarded-Proto: " + proto + b"\r\n" if proto else b""
    answer = await request(server.port, "/", host=host, headers=headers)
    assert answer.status == 200, host
    assert canonical(answer.body) == (expected, expected)


async def test_x_forwarded_proto_from_an_untrusted_peer_is_ignored(make_server):
    server = await make_server()  # no trusted proxies
    await server.load(base_document())
    answer = await request(server.port, "/", headers=b"X-Forwarded-Proto: https\r\n")
    assert canonical(answer.body) == ("http://alice.hep.gg/", "http://alice.hep.gg/")


async def test_port_spellings_share_one_rendered_page_and_ports_cannot_grow_the_memo(server):
    for spelling in (b"alice.hep.gg", b"alice.hep.gg:80", b"ALICE.HEP.GG:0080", b"alice.hep.gg.:000080"):
        assert (await request(server.port, "/", host=spelling)).status == 200
    site = await server.services.sites.by_host("alice.hep.gg")
    assert len(site.memo) == 1
    for port in range(9000, 9030):
        answer = await request(server.port, "/", host=b"alice.hep.gg:%d" % port)
        assert canonical(answer.body)[0] == f"http://alice.hep.gg:{port}/"
    assert len(site.memo) <= PAGE_VARIANTS_KEPT
    answer = await request(server.port, "/", host=b"alice.hep.gg")
    assert canonical(answer.body)[0] == "http://alice.hep.gg/"
