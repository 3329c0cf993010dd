"""GET /api/v1/profiles/<id>/og.png: the profile's social card.

Answers are plain (an image, or a short text/plain body: `Not found`,
`Render failed`) because crawlers, not scripts, read them. The ETag is the
content hash of the card's inputs, so a matching If-None-Match gets a 304
without rendering anything. Visibility is decided on every request.
"""

from __future__ import annotations

import logging
from typing import Any

import tornado.httputil
from tornado.web import HTTPError

from handlers.base import BaseHandler
from render.og_card import RenderError
from store.records import ID_PATTERN

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
        except RenderError as exc:
            log.error("OG card for profile %s failed: %s", profile_id, exc)
            raise HTTPError(500, reason="Render Failed") from exc
        self.finish(png)

    head = get

    def compute_etag(self) -> None:
        return None  # ours is set explicitly from the card's inputs

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, HTTPError) and isinstance(value.__cause__, RenderError):
            return  # already logged with the profile id, without a traceback
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.clear_header("ETag")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if status_code == 404:
            body = "Not found"
        elif status_code == 500 and isinstance(getattr(exc, "__cause__", None), RenderError):
            body = "Render failed"
        else:
            body = tornado.httputil.responses.get(status_code, "Error")
        self.finish(body)


ROUTES: list[tuple] = [
    (r"/api/v1/profiles/([^/]+)/og\.png", OgImageHandler),
]
