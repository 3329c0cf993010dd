"""The visitor's IP: the socket peer, unless the peer is a configured trusted proxy.

X-Forwarded-For is read right to left, skipping hops that are themselves
trusted proxies; the first untrusted hop is the client. A header from anyone
who is not a trusted proxy is ignored, so it cannot be spoofed.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Iterable


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    @lru_cache(maxsize=4096)
    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # garbage in the header: fall back to what we know
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer
