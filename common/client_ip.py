"""The visitor's IP: the socket peer, unless the peer is a configured trusted proxy.

X-Forwarded-For is read right to left, skipping hops that are themselves
trusted proxies; the first untrusted hop is the client. A header from anyone
who is not a trusted proxy is ignored, so it cannot be spoofed. X-Real-IP and
Forwarded are never read: one header, one rule (docs/security.md).

Addresses come back in one canonical spelling (IPv4-mapped IPv6 unwrapped,
IPv6 compressed and lower-case), so two spellings of one address are one
client. `rate_limit_subject` widens IPv6 to its /64: one subscriber holds a
whole /64 and can rotate through it, so per-address limits would not hold.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

# "[v6]", "[v6]:port" and "v4:port": forms some proxies write into X-Forwarded-For.
_BRACKETED = re.compile(r"\A\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?\Z")
_V4_WITH_PORT = re.compile(r"\A([0-9]{1,3}(?:\.[0-9]{1,3}){3}):[0-9]{1,5}\Z")


@lru_cache(maxsize=8192)
def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    match = _BRACKETED.match(text) or _V4_WITH_PORT.match(text)
    if match:
        text = match.group(1)
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # a zone id (fe80::1%eth0) names no other host
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip


@lru_cache(maxsize=8192)
def rate_limit_subject(address: str) -> str:
    """The key rate limits and view dedup count by: the address, or its /64 for IPv6."""
    ip = parse_address(address)
    if ip is None:
        return address
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.trusts = lru_cache(maxsize=4096)(self._trusts)  # per instance, so it dies with it

    def _trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        ip = parse_address(address)
        return ip is not None and any(ip in net for net in self.networks)

    def scheme(self, peer: str, forwarded_proto: str | None, connection_scheme: str) -> str:
        """The scheme the visitor used: the connection's, or X-Forwarded-Proto's when the peer is a trusted proxy.

        A proxy that terminates TLS says `https` there (deploy/nginx.conf sets it); from anyone else the
        header is ignored. A list (proxies that append) is read from its last value, the nearest proxy's.
        """
        if forwarded_proto and self.trusts(peer):
            claimed = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
            if claimed in ("http", "https"):
                return claimed
        return connection_scheme

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        peer_ip = parse_address(peer)
        peer = str(peer_ip) if peer_ip is not None else peer
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
        for hop in reversed(hops):
            ip = parse_address(hop)
            if ip is None:
                return peer  # a trusted proxy wrote something we cannot read: fall back to what we know
            if not self.trusts(hop):
                return str(ip)
        first = parse_address(hops[0]) if hops else None
        return str(first) if first is not None else peer  # every hop is trusted: the farthest one
