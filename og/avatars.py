"""Avatar bytes for the card, fetched only from the operator's allow-list of image hosts.

Never an arbitrary URL: a URL whose host is not in `--avatar-hosts` (or that is
not plain http/https) is not contacted at all, and the card draws initials.
Fetches go through one shared curl client with a body-size cap, short
timeouts, no redirects (a redirect could leave the allow-list) and only the
HTTP(S) protocols. Answers, failures included, are kept for a while so a
popular card does not fetch its avatar per request; concurrent lookups of one
URL share one fetch. The bytes must look like PNG, JPEG, GIF or WebP: the
sniffed format is passed to ImageMagick explicitly so it never guesses a coder
(SVG, MVG, text...) from owner-supplied bytes. The size its header declares must
fit the pixel budget (render/image_size.py): a decompression bomb is refused
here, before a render process ever sees it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import pycurl
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from common.singleflight import SingleFlight
from render.image_size import image_size, within_budget

log = logging.getLogger("hepgg.og")

MAX_AVATAR_BYTES = 2 * 1024 * 1024
CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 4.0
HIT_TTL = 300.0
MISS_TTL = 60.0
CACHE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Avatar:
    data: bytes
    format: str  # png | jpeg | gif | webp
    sha: str  # sha256 hex of data, so cache keys never rehash the bytes


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def allowed(url: str | None, hosts: tuple[str, ...]) -> bool:
    if not url or not hosts:
        return False
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and not parts.username and not parts.password and host in hosts


def _avatar_limits(curl: pycurl.Curl) -> None:
    # Per request, on the shared client: http(s) only, and libcurl aborts a body over the cap
    # mid-transfer (libcurl >= 8.4 applies MAXFILESIZE to bodies of unknown length too).
    curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    curl.setopt(pycurl.MAXFILESIZE, MAX_AVATAR_BYTES)


class AvatarFetcher:
    def __init__(self, hosts: tuple[str, ...], http: AsyncHTTPClient):
        self.hosts = tuple(h.lower().rstrip(".") for h in hosts)
        self.max_bytes = MAX_AVATAR_BYTES
        self.client = http  # the process's shared client for short requests (Services.http)
        self._cache: OrderedDict[str, tuple[float, Avatar | None]] = OrderedDict()
        self._cached_bytes = 0
        self._flights: SingleFlight[Avatar | None] = SingleFlight()

    async def get(self, url: str | None) -> Avatar | None:
        if not allowed(url, self.hosts):
            return None
        assert url is not None
        entry = self._cache.get(url)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]

        async def fetch_and_store() -> Avatar | None:  # _fetch turns failures into None
            avatar = await self._fetch(url)
            self._store(url, avatar)
            return avatar

        return await self._flights.run(url, fetch_and_store)

    async def _fetch(self, url: str) -> Avatar | None:
        request = HTTPRequest(
            url,
            follow_redirects=False,
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=REQUEST_TIMEOUT,
            headers={"Accept": "image/png,image/jpeg,image/gif,image/webp"},
            user_agent="hepgg-og/1",
            decompress_response=True,
            prepare_curl_callback=_avatar_limits,
        )
        try:
            response = await self.client.fetch(request)
        except HTTPClientError as exc:
            log.info("avatar fetch failed for host %s: %s", urlsplit(url).hostname, exc.code)
            return None
        except Exception as exc:
            log.info("avatar fetch failed for host %s: %s", urlsplit(url).hostname, type(exc).__name__)
            return None
        data = response.body or b""
        kind = sniff(data)
        if kind is None or len(data) > self.max_bytes:
            log.info("avatar from host %s is not a PNG/JPEG/GIF/WebP image", urlsplit(url).hostname)
            return None
        if not within_budget(data, kind):
            log.info(
                "avatar from host %s declares %s pixels: over budget", urlsplit(url).hostname, image_size(data, kind)
            )
            return None
        return Avatar(data, kind, hashlib.sha256(data).hexdigest())

    def _store(self, url: str, avatar: Avatar | None) -> None:
        old = self._cache.pop(url, None)
        if old is not None and old[1] is not None:
            self._cached_bytes -= len(old[1].data)
        self._cache[url] = (time.monotonic() + (HIT_TTL if avatar else MISS_TTL), avatar)
        if avatar is not None:
            self._cached_bytes += len(avatar.data)
        while self._cache and (self._cached_bytes > CACHE_BYTES or len(self._cache) > 4096):
            _, (_, dropped) = self._cache.popitem(last=False)
            if dropped is not None:
                self._cached_bytes -= len(dropped.data)
