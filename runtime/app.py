"""make_app(config, services): the Tornado Application with every route and its settings."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import tornado.template
import tornado.web
from tornado.httputil import HTTPServerRequest, split_host_and_port

from common.origin import absolute_target
from demo.stand_ins import ASSET_PREFIX, ASSETS
from handlers import all_routes
from handlers.page import BadTargetHandler, FaviconHandler, NotFoundPageHandler
from handlers.services import Services
from handlers.static import CompressingStaticHandler
from runtime.logs import access_logger

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"


@functools.cache
def template_loader() -> tornado.template.Loader:
    """This process's page templates, every one compiled now (with the partials it includes).

    Tornado compiles a template on its first render: 40-100 ms of a fresh worker's first visitors, on each
    worker. `serve` calls this before it forks, so every worker starts with them compiled.
    """
    loader = tornado.template.Loader(str(TEMPLATES), autoescape="xhtml_escape")
    for page in sorted(TEMPLATES.glob("*.html")):
        loader.load(page.name)
    return loader


class Application(tornado.web.Application):
    """Tornado's Application, routing absolute-form targets (RFC 9112 §3.2.2) like their origin form.

    `GET http://alice.hep.gg/ HTTP/1.1` must be accepted by a server, and the
    target's authority names the host (the Host header is ignored). Tornado keeps
    the whole URL as the path, so no route would match: the request is rewritten
    to its origin form and host before routing, for every route. A target that is
    neither origin-form, `*`, nor an http(s) absolute form is a 400.
    """

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        uri = request.uri or ""
        if not uri.startswith("/") and uri != "*":
            target = absolute_target(uri)
            if target is None:
                return self.get_handler_delegate(request, BadTargetHandler, self.settings["default_handler_args"])
            request.uri = target.target
            request.path, _, request.query = target.target.partition("?")
            request.host = request.headers["Host"] = target.authority
            request.host_name = split_host_and_port(target.authority.lower())[0]
        return super().find_handler(request, **kwargs)


def make_app(services: Services, *, json_logs: bool = False) -> tornado.web.Application:
    routes = [(pattern, handler, {"services": services}) for pattern, handler in all_routes()]
    app = Application(
        routes,
        template_path=str(TEMPLATES),
        template_loader=template_loader(),  # compiled, and autoescaping with xhtml_escape
        static_path=str(ROOT / "static"),
        static_url_prefix="/_static/",
        static_handler_class=CompressingStaticHandler,
        default_handler_class=NotFoundPageHandler,  # unmatched paths: our 404 page with the security headers
        default_handler_args={"services": services},
        compiled_template_cache=True,
        static_hash_cache=True,
        xsrf_cookies=False,  # no cookies, no sessions: forms are protected by Turnstile and rate limits
        log_function=access_logger(json_logs),
    )
    # `static_path` makes Tornado serve /favicon.ico (and /robots.txt) from static/, ahead of every route; a
    # rule for any host added afterwards is matched first, so a profile's /favicon.ico is its own icon.
    own: list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]] = [
        (r"/favicon\.ico", FaviconHandler, {"services": services})
    ]
    if services.settings.demo:  # the demo's Turnstile widget and track artwork: never served outside --demo
        own.append((ASSET_PREFIX + r"(turnstile\.js|cover\.svg)", CompressingStaticHandler, {"path": str(ASSETS)}))
    app.add_handlers(r".*$", own)
    return app
