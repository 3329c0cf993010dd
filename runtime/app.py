"""make_app(config, services): the Tornado Application with every route and its settings."""

from __future__ import annotations

from pathlib import Path

import tornado.web

from handlers import all_routes
from handlers.page import FaviconHandler, NotFoundPageHandler
from handlers.services import Services
from handlers.static import CompressingStaticHandler
from runtime.logs import access_logger

ROOT = Path(__file__).resolve().parent.parent


def make_app(services: Services, *, json_logs: bool = False) -> tornado.web.Application:
    routes = [(pattern, handler, {"services": services}) for pattern, handler in all_routes()]
    app = tornado.web.Application(
        routes,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        static_url_prefix="/_static/",
        static_handler_class=CompressingStaticHandler,
        default_handler_class=NotFoundPageHandler,  # unmatched paths: our 404 page with the security headers
        default_handler_args={"services": services},
        autoescape="xhtml_escape",
        compiled_template_cache=True,
        static_hash_cache=True,
        xsrf_cookies=False,  # no cookies, no sessions: forms are protected by Turnstile and rate limits
        log_function=access_logger(json_logs),
    )
    # `static_path` makes Tornado serve /favicon.ico (and /robots.txt) from static/, ahead of every route; a
    # rule for any host added afterwards is matched first, so a profile's /favicon.ico is its own icon.
    app.add_handlers(r".*$", [(r"/favicon\.ico", FaviconHandler, {"services": services})])
    return app
