"""The host-routed profile page, and what happens to hosts that match no profile."""

from __future__ import annotations

import functools
import re
from datetime import datetime

import tornado.web

from common.origin import canonical_origin, port_of
from handlers.base import PageHandler
from render.colour import on_accent
from render.icons import favicon_svg
from render.page import page_context
from render.text import initials
from store.models import Site

# Link-preview bots and crawlers get the page but are not counted as views.
BOT_USER_AGENT = re.compile(
    r"bot\b|crawl|spider|slurp|preview|facebookexternalhit|facebookcatalog|discordbot|twitterbot|slackbot|"
    r"telegrambot|whatsapp|linkedinbot|embedly|skypeuripreview|googlebot|bingbot|applebot|yandex|baiduspider|"
    r"duckduckbot|pinterest|redditbot|vkshare|mastodon|headlesschrome|curl/|wget/|python-requests|go-http-client",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def is_bot(user_agent: str) -> bool:
    # Cached: visitors repeat a few thousand User-Agent strings, and the regex was ~3 % of a page's CPU.
    return not user_agent or bool(BOT_USER_AGENT.search(user_agent))


PAGE_VARIANTS_KEPT = 4  # per site: http/https × a port or two (the origin is canonical: one spelling per port)


class ProfilePageHandler(PageHandler):
    """GET / on any host: the matching published profile, else fall through as the spec says."""

    def compute_etag(self) -> None:
        return None  # the page is `no-store`: no cache will ever revalidate, so hashing the body for an ETag is wasted

    def _rendered(self, site: Site, now: datetime) -> tuple[str, bytes]:
        """(CSP, HTML) of the page, rendered once per site data, canonical origin and plan state.

        The page is a pure function of those (the clock only enters through premium: presence and
        the powered-by line), so it is kept on the Site object; a changed profile is a new object.
        The origin is the profile's domain with the request's scheme (a trusted proxy's
        X-Forwarded-Proto) and port in canonical form, so spellings of one origin share an entry.
        """
        origin = canonical_origin(self.request_scheme, site.profile.domain, port_of(self.request.host))
        key = ("page", origin, site.shows_presence(now), site.shows_powered_by(now))
        memo = site.memo
        rendered: tuple[str, bytes] | None = memo.get(key)
        if rendered is None:
            context = page_context(site, self.services.settings.page, now, origin)
            rendered = (
                context["content_security_policy"],
                self.render_string(f"{site.profile.template}.html", **context),
            )
            if len(memo) >= PAGE_VARIANTS_KEPT:  # the port is the visitor's to vary: the oldest goes
                del memo[next(iter(memo))]
            memo[key] = rendered
        return rendered

    async def get(self) -> None:
        await self._page(count_view=True)

    async def head(self) -> None:
        await self._page(count_view=False)  # RFC 9110 §9.3.2: HEAD wherever GET; it is not a view

    async def _page(self, *, count_view: bool) -> None:
        host = self.profile_host  # the apex and slot checks see the host as the profile lookup does
        settings = self.services.settings
        if host == settings.base_domain or host in settings.exempt_domains:
            self.redirect(settings.dashboard_url)
            return
        now = self.services.clock.now()
        site = await self.services.sites.by_host(host)
        if site is None or not site.is_visible(now):
            if host.endswith("." + settings.base_domain):
                raise tornado.web.HTTPError(404)
            self.redirect(f"https://{settings.base_domain}/")  # unmatched custom domain
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        csp, html = self._rendered(site, now)
        self.set_header("Content-Security-Policy", csp)
        self.finish(html)
        user_agent = self.request.headers.get("User-Agent", "")
        if count_view and not is_bot(user_agent):
            self.services.stats.record_view(
                site.profile.id,
                site.owner.id,
                now,
                self.client_ip,
                user_agent,
                self.request.headers.get("Referer"),
            )


class FaviconHandler(PageHandler):
    """/favicon.svg, the icon a page without an avatar links to: its initials on its accent colour.
    /favicon.ico answers the same, for the browsers and crawlers that ask for it by habit."""

    async def get(self) -> None:
        now = self.services.clock.now()
        site = await self.services.sites.by_host(self.profile_host)
        if site is None or not site.is_visible(now):
            raise tornado.web.HTTPError(404)
        profile = site.profile
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "public, max-age=3600")  # the page links it with ?v=<version>
        accent = profile.theme.accent
        self.finish(favicon_svg(initials(profile.display_name or profile.domain), accent, on_accent(accent)))

    head = get  # RFC 9110 §9.3.2


class FallThroughHandler(PageHandler):
    """/<shortid> on a profile host belongs to the uploader: 404 here, without a profile lookup."""

    def get(self, *args: str) -> None:
        raise tornado.web.HTTPError(404)

    head = get


class NotFoundPageHandler(PageHandler):
    """The application's default handler: any path no route matches (several segments, `*`), any method,
    gets our 404 page with our headers instead of Tornado's bare one."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class BadTargetHandler(PageHandler):
    """A request target that is neither a path nor an http(s) absolute URL (runtime/app.py): 400."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(400)


ROUTES = [
    (r"/", ProfilePageHandler),
    (r"/favicon\.svg", FaviconHandler),  # /favicon.ico: runtime/app.py
    (r"/[^/]+", FallThroughHandler),
]
