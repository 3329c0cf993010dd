"""Finished cards: a bounded in-memory cache keyed by content hash, with single-flight renders.

The key is a hash of everything drawn (render/og_card.CardInput.cache_key), so
it doubles as the ETag, and a changed profile (name, bio, theme, domain,
avatar bytes) simply has a new key: nothing needs invalidating, and the old
card ages out of the LRU. Concurrent requests for one missing key await the
same render.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Awaitable, Callable

from render.og_card import CardInput
from runtime.metrics import OG_RENDER_SECONDS


class CardCache:
    def __init__(self, render: Callable[[CardInput], Awaitable[bytes]], max_bytes: int = 64 * 1024 * 1024):
        self._render = render
        self.max_bytes = max_bytes
        self._cards: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, asyncio.Future] = {}
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
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fill(key, card))
            self._inflight[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        # shield: one visitor hanging up must not cancel the render others wait for
        return await asyncio.shield(pending)

    def _settled(self, key: str, done: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter went away

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
