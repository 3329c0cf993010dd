"""What owner-supplied URLs and text may reach a page: checked at import and again when read back.

Links are limited to http(s) and mailto; an image URL must have a plain host
that is safe to name in a Content-Security-Policy; text loses the characters
that could reorder or hide what is around it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

SAFE_LINK_SCHEMES = ("http", "https", "mailto")


def safe_link(url: str) -> bool:
    """Only http(s) and mailto links may reach a page (no javascript:, data: ...)."""
    if not isinstance(url, str) or any(ch in url for ch in "\x00\r\n\t") or url != url.strip():
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() not in SAFE_LINK_SCHEMES:
        return False
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        return False
    return True


# A URL host we are willing to name in a CSP source list: DNS labels, IPv4, or a bracketed IPv6.
_SOURCE_HOST = re.compile(
    r"\A(?:(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?|\[[0-9a-f:.]+\])\Z"
)


@lru_cache(maxsize=4096)
def image_origin(url: str) -> str | None:
    """scheme://host[:port] of an http(s) image URL, or None when it has no host that is safe to
    write into a Content-Security-Policy (no spaces, quotes, ';', ',' or userinfo tricks)."""
    if not safe_link(url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    host = host.lower()
    if not _SOURCE_HOST.match(host):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def allowed_image_origin(url: str | None, hosts: Collection[str]) -> str | None:
    """`image_origin(url)` when the URL's host is one of the operator's `hosts` (exact names), else None."""
    origin = image_origin(url) if url else None
    if origin is None:
        return None
    host = origin.split("://", 1)[1]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return origin if host in hosts else None


# Characters that let owner text reorder or hide what is around it: bidi embeddings, overrides and
# isolates, invisible separators, and C0/C1 controls (newline and tab stay). LRM/RLM marks and the
# zero-width (non-)joiners stay: emoji sequences and several scripts need them.
_UNSAFE_TEXT = re.compile(
    "[\u202a-\u202e\u2066-\u2069\u061c\u200b\u2060-\u2064\ufeff\u180e\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def clean_text(value: Any) -> str:
    """Owner text as the page shows it: a string without bidi overrides or invisible characters."""
    return _UNSAFE_TEXT.sub("", value) if isinstance(value, str) else ""
