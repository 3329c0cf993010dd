"""The route table: each feature module ends with its ROUTES; the order here is the match order."""

from __future__ import annotations

from handlers import api_fallback, contact, health, metrics, music, og, page, presence
from handlers.base import Route


def all_routes() -> list[Route]:
    return [
        *health.ROUTES,
        *metrics.ROUTES,
        *presence.ROUTES,
        *og.ROUTES,
        *music.ROUTES,
        *contact.ROUTES,
        *api_fallback.ROUTES,
        *page.ROUTES,  # last: "/" and the single-segment fall-through
    ]
