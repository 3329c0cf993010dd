"""Unknown /api/v1/ paths answer 404 in the JSON envelope (with CORS), not an HTML page."""

from __future__ import annotations

import tornado.web

from handlers.base import ApiHandler


class ApiNotFoundHandler(ApiHandler):
    def prepare(self) -> None:
        if self.request.method != "OPTIONS":
            raise tornado.web.HTTPError(404)


ROUTES = [(r"/api/.*", ApiNotFoundHandler)]
