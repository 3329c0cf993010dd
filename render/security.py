"""Security headers, decided in one place (docs/security.md says why each value).

Every response gets `COMMON_HEADERS`. HTML documents add `DOCUMENT_HEADERS` and a
Content-Security-Policy: the profile page's comes from `page_csp` (what that page
loads: the origins of the images it shows (avatar, background, banner), Turnstile
when a form shows it, the presence art hosts when the card shows), every other HTML
answer (404, redirects) gets the closed
`STATIC_DOCUMENT_CSP`. Non-HTML answers get `NON_DOCUMENT_CSP`, which only matters
if a browser is ever made to render one as a document.

Pure and cached: the page is the hot path, and a policy depends on a handful of
small values, so each distinct combination is built once per process.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Links out reveal only the profile's origin, never a path; same-origin requests keep the full URL.
    "Referrer-Policy": "strict-origin-when-cross-origin",
}

# Older browsers that ignore CSP frame-ancestors still honour this one.
DOCUMENT_HEADERS = {"X-Frame-Options": "DENY"}

STATIC_DOCUMENT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
NON_DOCUMENT_CSP = "default-src 'none'; frame-ancestors 'none'"

TURNSTILE_ORIGIN = "https://challenges.cloudflare.com"
# Where static/presence.js points album art (spotify:ID and mp:PATH references).
PRESENCE_IMAGE_ORIGINS = ("https://i.scdn.co", "https://media.discordapp.net")


@lru_cache(maxsize=1024)
def style_hash(css: str) -> str:
    """The CSP source for one inline <style> block with exactly this text."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return "'sha256-%s'" % base64.b64encode(digest).decode("ascii")


@lru_cache(maxsize=4096)
def page_csp(*, image_origins: tuple[str, ...], presence: bool, turnstile: bool, inline_style: str) -> str:
    """The profile page's policy. `image_origins` (the images the page shows) must come from
    store.safety.image_origin (validated scheme://host[:port]); `inline_style` is the exact text of the
    page's <style>."""
    images = ["'self'", *sorted(set(image_origins))]
    if presence:
        images.extend(PRESENCE_IMAGE_ORIGINS)
    scripts = ["'self'"]
    frames = ["'none'"]
    if turnstile:
        scripts.append(TURNSTILE_ORIGIN)
        frames = [TURNSTILE_ORIGIN]
    directives = [
        "default-src 'none'",
        "script-src " + " ".join(scripts),
        "style-src 'self' " + style_hash(inline_style),
        "img-src " + " ".join(images),
        "media-src 'self'",  # <audio> streams from /api/v1/profiles/<id>/music/<isrc>
        "connect-src 'self'",  # presence EventSource, music HEAD, contact POSTs
        "frame-src " + " ".join(frames),
        "base-uri 'none'",
        "object-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)
