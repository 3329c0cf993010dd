"""GET /api/v1/profiles/<id>/og.png: the profile's social card.

Answers are plain (an image, or a short text/plain body: `Not found`,
`Render failed`) because crawlers, not scripts, read them. The ETag is the
content hash of the card's inputs, so a matching If-None-Match gets a 304
without rendering anything. Visibility is decided on every request.
"""

from __future__ import annotations

import logging
from http.client import responses
from typing import Any

from tornado.web import HTTPError

from handlers.base import BaseHandler, Route
from handlers.errors import RENDER_FAILED
from render.og_card import RenderError
from store.formats import ID_PATTERN

log = logging.getLogger("hepgg.og")


class OgImageHandler(BaseHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Cache-Control", "no-store")  # errors are not cached; a card overrides it

    async def get(self, profile_id: str) -> None:
        if not ID_PATTERN.match(profile_id):
            raise HTTPError(404)
        site = await self.services.sites.by_id(profile_id)
        if site is None or not site.is_visible(self.services.clock.now()):
            raise HTTPError(404)
        og = self.services.og
        card = await og.card_for(site)
        key = card.cache_key()
        self.set_header("ETag", f'"{key[:40]}"')
        self.set_header("Cache-Control", "public, max-age=300")
        self.set_header("Content-Type", "image/png")
        if self.check_etag_header():
            self.set_status(304)
            return
        try:
            png = await og.png(key, card)
        except RenderError as exc:  # answered 500 "Render failed" (handlers/errors.py); logged here, once
            log.error("OG card for profile %s failed: %s", profile_id, exc)
            raise
        self.finish(png)

    head = get

    def compute_etag(self) -> None:
        return None  # ours is set explicitly from the card's inputs

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Plain text for crawlers: the message for a missing card or a failed render, else the reason phrase.
        answer = self.error_answer
        self.clear_header("ETag")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if status_code == 404 or answer.reason == RENDER_FAILED:
            body = answer.message
        else:
            body = responses.get(status_code, "Error")
        self.finish(body)


ROUTES: list[Route] = [
    (r"/api/v1/profiles/([^/]+)/og\.png", OgImageHandler),
]
