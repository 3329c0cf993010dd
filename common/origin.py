"""Request targets and origins: an absolute-form target's parts, and a canonical `scheme://host[:port]`.

RFC 9112 §3.2.2: a server must accept a request target in absolute form
(`GET http://alice.hep.gg/ HTTP/1.1`), and its authority then names the host,
whatever the Host header says. Tornado treats the whole URL as the path, so the
application splits it here and routes the origin-form part (runtime/app.py).

A canonical origin names the default port of its scheme by omission and any other
port in its plain decimal spelling, so `:80`, `:0080` and no port are one origin.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_PORTS = {"http": 80, "https": 443}

# scheme "://" authority [path-abempty] ["?" query]: no userinfo, no fragment (RFC 9112 §3.2.2, RFC 3986 §3).
_ABSOLUTE_FORM = re.compile(
    r"\A(?P<scheme>https?)://"
    r"(?P<authority>(?:[A-Za-z0-9._~!$&'()*+;=%-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?)"
    r"(?P<rest>[/?][^#\s]*)?\Z",
    re.IGNORECASE,
)


class AbsoluteTarget(NamedTuple):
    scheme: str  # lower-case: http or https
    authority: str  # host[:port], as sent
    target: str  # the origin-form target: path (at least "/") and query


def absolute_target(uri: str) -> AbsoluteTarget | None:
    """The parts of an http(s) absolute-form target, or None when `uri` is not one."""
    match = _ABSOLUTE_FORM.fullmatch(uri)
    if match is None or not match.group("authority").split(":")[0]:
        return None
    rest = match.group("rest") or ""
    return AbsoluteTarget(
        match.group("scheme").lower(), match.group("authority"), rest if rest[:1] == "/" else "/" + rest
    )


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
