"""Process-wide OG service: the render pool, the card cache and the avatar fetcher.

Built once per server worker by runtime/services.py. The render processes start
on the first card; `serve` awaits `warm()` before taking traffic instead, which
reads the fonts' character maps (failing loudly on a missing font, since wand
would silently substitute another) and renders one card in every process.
"""

from __future__ import annotations

import logging

from tornado.httpclient import AsyncHTTPClient

from og.avatars import AvatarFetcher
from og.cards import CardCache
from og.pool import RenderPool
from render.og_card import CardInput
from render.og_fonts import FontTables
from render.text import initials
from store.models import Site

log = logging.getLogger("hepgg.og")

SAMPLE = CardInput(
    display_name="Warm Up 山 ✨",  # CJK and emoji: their fonts and the emoji bitmaps load before traffic
    bio="Loads fonts, coders and caches.",
    domain="warm.up",
    accent="#7c3aed",
    background_from="#0b0b10",
    background_to="#0b0b10",
    gradient_angle=135,
    font="Inter",
    initials="WU",
)


class OgService:
    def __init__(
        self,
        *,
        processes: int,
        avatar_hosts: tuple[str, ...],
        http: AsyncHTTPClient,
        fonts: FontTables | None = None,
    ):
        self.pool = RenderPool(processes, fonts=fonts)
        self.avatars = AvatarFetcher(avatar_hosts, http)
        self.cards = CardCache(self._render)

    async def _render(self, card: CardInput) -> bytes:
        # Through the attribute on every call, so a test can put a failing pool in place.
        return await self.pool.render(card)

    @property
    def renders(self) -> int:
        return self.cards.renders

    async def card_for(self, site: Site) -> CardInput:
        """The card's inputs: theme and content only (no presence, no footer, premium does not matter)."""
        profile = site.profile
        avatar = await self.avatars.get(profile.avatar_url)
        theme = profile.theme
        return CardInput(
            display_name=profile.display_name or profile.domain,
            bio=profile.bio,
            domain=profile.domain,
            accent=theme.accent,
            background_from=theme.background_from,
            background_to=theme.background_to,
            gradient_angle=theme.gradient_angle,
            font=theme.font,
            initials=initials(profile.display_name or profile.domain),
            avatar=avatar.data if avatar else None,
            avatar_format=avatar.format if avatar else None,
            avatar_sha=avatar.sha if avatar else "",
        )

    async def png(self, key: str, card: CardInput) -> bytes:
        return await self.cards.get(key, card)

    async def warm(self) -> None:
        """Start every render process now rather than on the first card (FontError if a font is missing)."""
        pids = await self.pool.warm(SAMPLE)
        fonts = ", ".join(sorted(self.pool.fonts.charsets if self.pool.fonts else ()))
        log.info("OG render pool ready: %d process(es) %s, fonts %s", len(pids), pids, fonts)

    async def close(self) -> None:
        await self.pool.close()
