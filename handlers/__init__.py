"""The route table: each feature module ends with its ROUTES; the order here is the match order."""

from __future__ import annotations

from handlers import api_fallback, health, page


def all_routes() -> list[tuple]:
    return [
        *health.ROUTES,
        # feature API routes go here, before the API fallback
        *api_fallback.ROUTES,
        *page.ROUTES,  # last: "/" and the single-segment fall-through
    ]
