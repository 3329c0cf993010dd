"""Origins: a canonical `scheme://host[:port]` for the URLs a page names itself by.

A canonical origin names the default port of its scheme by omission and any other
port in its plain decimal spelling, so `:80`, `:0080` and no port are one origin.
"""

from __future__ import annotations

DEFAULT_PORTS = {"http": 80, "https": 443}


def port_of(authority: str) -> int | None:
    """The port an authority (a Host header) names, or None when it names none or one that is not a port."""
    host, colon, digits = authority.rpartition(":")
    if not colon or host.endswith(":") or not (digits.isascii() and digits.isdigit()):
        return None  # no port (an IPv6 literal's colons are inside its brackets: "[::1]" has no digits after "]:")
    if host.startswith("[") and not host.endswith("]"):
        return None
    port = int(digits)
    return port if 0 < port < 65536 else None


def canonical_origin(scheme: str, host: str, port: int | None) -> str:
    """`scheme://host[:port]`, the port omitted when it is the scheme's default (or none)."""
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
