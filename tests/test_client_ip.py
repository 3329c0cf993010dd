"""Client IP and spoofing (issue 10): which address a request counts as, and that limits hold.

Already covered elsewhere, not repeated here: a rotating X-Forwarded-For from an untrusted peer
neither dodges the contact burst limit nor reaches Turnstile's remoteip
(test_contact_limits.py::test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing), one trusted
proxy's client is used (…::test_forwarded_for_from_trusted_proxy_is_the_client), and rotating it
from an untrusted peer does not inflate views (test_page.py::test_spoofed_forwarded_for_is_ignored_unless_from_trusted_proxy).
This file adds the header-reading rules, proxy chains, garbage, IPv6, and the headers we never read.
"""

from __future__ import annotations

import pytest
from test_contact import DISCORD, PATH

from common.client_ip import TrustedProxies, rate_limit_subject
from store.stats import read_stats, view_dedup_key

from conftest import base_document
from contact_fakes import contact_settings

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
CHAIN = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48"])


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "peer,header,client",
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # untrusted peer: its header is ignored
        ("203.0.113.9", None, "203.0.113.9"),
        ("127.0.0.1", None, "127.0.0.1"),  # trusted peer without a header is the client
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "1.1.1.1, 198.51.100.1", "198.51.100.1"),  # the rightmost untrusted, not the leftmost
        ("127.0.0.1", "1.1.1.1, 198.51.100.1, 10.0.0.2, 10.9.9.9", "198.51.100.1"),  # several trusted hops
        ("127.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),  # all trusted: the farthest hop
        ("127.0.0.1", "not-an-ip, <script>, 198.51.100.1", "198.51.100.1"),  # garbage left of the client is never read
        ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),  # garbage from a trusted hop: fall back to the peer
        ("127.0.0.1", " , ,198.51.100.1 ,", "198.51.100.1"),  # empty entries and spaces
        ("127.0.0.1", "198.51.100.1:4711", "198.51.100.1"),  # v4 with a port
        ("127.0.0.1", "[2001:DB8::1]:443", "2001:db8::1"),  # bracketed v6 with a port, canonical form
        ("127.0.0.1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("127.0.0.1", "::ffff:198.51.100.1", "198.51.100.1"),  # IPv4-mapped is the IPv4 client
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),  # a mapped trusted peer is still trusted
        ("2001:db8:ffff:1::5", "2001:db8:1::7, 2001:db8:ffff:2::1", "2001:db8:1::7"),  # v6 proxies
        ("2001:db8:1::5", "198.51.100.1", "2001:db8:1::5"),  # untrusted v6 peer
        ("127.0.0.1", "fe80::1%eth0", "fe80::1"),
    ],
)
def test_forwarded_for_rules(peer, header, client):
    assert CHAIN.client_ip(peer, header) == client


def test_no_trusted_proxies_trusts_no_one():
    nobody = TrustedProxies([])
    assert nobody.client_ip("127.0.0.1", "198.51.100.1") == "127.0.0.1"
    assert not nobody.trusts("127.0.0.1")


def test_ipv6_counts_by_its_slash_64_ipv4_by_address():
    assert (
        rate_limit_subject("2001:db8:1:2::1")
        == rate_limit_subject("2001:DB8:1:2:ffff:ffff:ffff:ffff")
        == "2001:db8:1:2::/64"
    )
    assert rate_limit_subject("2001:db8:1:3::1") != rate_limit_subject("2001:db8:1:2::1")
    assert rate_limit_subject("198.51.100.1") == "198.51.100.1"
    assert view_dedup_key("p1", "2001:db8:1:2::1", "ua") == view_dedup_key("p1", "2001:db8:1:2::abcd", "ua")


# ---------------------------------------------------------------- end to end: contact limits


async def discord_send(server, **headers):
    return (await server.fetch(PATH.format(pid="p1", channel="discord"), json=DISCORD, headers=headers)).code


@pytest.mark.parametrize("header", ["X-Real-IP", "Forwarded", "True-Client-IP", "CF-Connecting-IP"])
@pytest.mark.parametrize("trusted", [(), ("127.0.0.1/32",)])
async def test_other_client_headers_are_never_read(make_server, fakes, header, trusted):
    server = await make_server(**contact_settings(fakes, trusted_proxies=trusted))
    await server.load(base_document())
    values = [f"198.51.100.{i}" if header != "Forwarded" else f"for=198.51.100.{i}" for i in range(4)]
    codes = [await discord_send(server, **{header: value}) for value in values]
    assert codes == [200, 200, 200, 429]
    assert {r.form()["remoteip"] for r in fakes.turnstile.requests} == {"127.0.0.1"}


async def test_rotating_the_spoofable_part_of_a_proxy_chain_dodges_nothing(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=("127.0.0.1/32", "10.0.0.0/8")))
    await server.load(base_document())
    codes = [
        await discord_send(server, **{"X-Forwarded-For": f"192.0.2.{i}, 198.51.100.7, 10.1.1.1"}) for i in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    assert {r.form()["remoteip"] for r in fakes.turnstile.requests} == {"198.51.100.7"}
    # A different real client behind the same proxies has its own bucket.
    assert await discord_send(server, **{"X-Forwarded-For": "198.51.100.8, 10.1.1.1"}) == 200


async def test_rotating_ipv6_addresses_within_one_slash_64_dodges_nothing(make_server, fakes):
    server = await make_server(**contact_settings(fakes, trusted_proxies=("127.0.0.1/32",)))
    await server.load(base_document())
    codes = [await discord_send(server, **{"X-Forwarded-For": f"2001:db8:7:7::{i:x}"}) for i in range(1, 5)]
    assert codes == [200, 200, 200, 429]
    # Turnstile still hears the exact address; the next /64 is another visitor.
    assert fakes.turnstile.requests[-1].form()["remoteip"] == "2001:db8:7:7::3"
    assert await discord_send(server, **{"X-Forwarded-For": "2001:db8:7:8::1"}) == 200


# ---------------------------------------------------------------- end to end: view dedup


async def views(server) -> int:
    await server.services.stats.flush()
    return (await read_stats(server.services.db, "p1"))["views"]


async def test_view_dedup_cannot_be_dodged_with_any_client_header_or_ipv6_rotation(make_server):
    untrusted = await make_server()
    await untrusted.load(base_document())
    for i, header in enumerate(["X-Forwarded-For", "X-Real-IP", "Forwarded", "CF-Connecting-IP"]):
        await untrusted.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, header: f"10.0.0.{i}"})
    assert await views(untrusted) == 1

    proxied = await make_server(trusted_proxies=("127.0.0.1/32",), mongo_db=untrusted.config.mongo_db + "b")
    await proxied.load(base_document())
    for spelling in ("2001:db8:5:5::1", "2001:db8:5:5::2", "2001:DB8:5:5:0:0:0:3", "[2001:db8:5:5::4]:80"):
        await proxied.fetch("/", host="alice.hep.gg", headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": spelling})
    assert await views(proxied) == 1
    events = await proxied.services.db.stat_events.find({"kind": "view"}).to_list()
    assert [e["ip"] for e in events] == ["2001:db8:5:5::1"]  # the stored event keeps the exact address
