"""Finished cards: a bounded in-memory cache keyed by content hash, with single-flight renders.

The key is a hash of everything drawn (render/og_card.CardInput.cache_key), so
it doubles as the ETag, and a changed profile (name, bio, theme, domain,
avatar bytes) simply has a new key: nothing needs invalidating, and the old
card ages out of the LRU. Concurrent requests for one missing key await the
same render (common/singleflight.py): one visitor hanging up never cancels it for the others.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from common.metrics import OG_RENDER_SECONDS
from common.singleflight import SingleFlight
from render.og_card import CardInput


class CardCache:
    def __init__(self, render: Callable[[CardInput], Awaitable[bytes]], max_bytes: int = 64 * 1024 * 1024):
        self._render = render
        self.max_bytes = max_bytes
        self._cards: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._flights: SingleFlight[bytes] = SingleFlight()
        self.renders = 0  # cold renders started (tests assert single-flight with it)

    def peek(self, key: str) -> bytes | None:
        png = self._cards.get(key)
        if png is not None:
            self._cards.move_to_end(key)
        return png

    async def get(self, key: str, card: CardInput) -> bytes:
        png = self.peek(key)
        if png is not None:
            return png
        return await self._flights.run(key, lambda: self._fill(key, card))

    async def _fill(self, key: str, card: CardInput) -> bytes:
        self.renders += 1
        started = time.perf_counter()
        png = await self._render(card)
        OG_RENDER_SECONDS.observe(time.perf_counter() - started)
        self._put(key, png)
        return png

    def _put(self, key: str, png: bytes) -> None:
        self._cards[key] = png
        self._bytes += len(png)
        while self._bytes > self.max_bytes and len(self._cards) > 1:
            _, old = self._cards.popitem(last=False)
            self._bytes -= len(old)

    def __len__(self) -> int:
        return len(self._cards)
