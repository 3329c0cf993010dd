"""The Open Graph card: plain card inputs in, 1200x630 PNG bytes out.

The card is made in three steps, each its own module:

- render/og_fonts.py: which font files draw which theme, and which characters
  each has (fontTools), so text falls back to a CJK font and undrawable characters
  are left out;
- render/og_layout.py: pure layout (wrapping, positions, ink colours), testable
  without wand;
- render/og_draw.py: the drawing with wand/ImageMagick, run by the og/ package
  inside worker processes (`CardRenderer.render`).

This module holds what the rest of the server sees: the inputs (`CardInput`,
whose content hash is the cache key and ETag) and the one error (`RenderError`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

WIDTH, HEIGHT = 1200, 630
RENDER_VERSION = "og-2"  # og-2: colour emoji. Bump when the drawing changes, so cached cards and ETags change


class RenderError(RuntimeError):
    """The card could not be drawn."""


@dataclass(frozen=True)
class CardInput:
    """Everything the card shows. Equal inputs give byte-identical PNGs."""

    display_name: str
    bio: str
    domain: str
    accent: str  # "#rrggbb"
    background_from: str
    background_to: str  # equal to background_from for a flat background
    gradient_angle: int
    font: str  # a store.theme font name
    initials: str
    avatar: bytes | None = None  # decoded in the worker; None or undecodable -> initials
    avatar_format: str | None = None  # "png", "jpeg", "gif" or "webp" (sniffed by the fetcher)
    avatar_sha: str = ""  # sha256 of `avatar`, computed once by whoever fetched it

    def cache_key(self) -> str:
        """Content hash of the inputs (avatar by digest): the cache key and ETag."""
        digest = hashlib.sha256(RENDER_VERSION.encode())
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "avatar":
                value = self.avatar_sha or (hashlib.sha256(value).hexdigest() if value else "")
            digest.update(b"\x00" + repr(value).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()
