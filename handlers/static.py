"""/_static/ with gzip for text files, compressed once per file version and kept in memory.

The page's CSS and JS are ~37 KB as written and ~11 KB gzipped; the profile page's byte budget (issue 21:
60 KB of HTML+CSS+JS) and every phone on a slow link care. Tornado's `compress_response` would compress
every answer per request (the page itself, the SSE stream, JSON), so only static text files are
compressed here, once per (path, modification time), for clients that accept gzip and ask for no range.
Everything else about the answer (validation, ETag, Last-Modified, caching for versioned URLs, 304s)
is StaticFileHandler's own; the gzip variant's ETag differs from the identity one.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable
from functools import lru_cache

from handlers.base import StaticHandler

COMPRESSIBLE = (".css", ".js", ".svg")


@lru_cache(maxsize=64)
def _gzipped(path: str, mtime_ns: int) -> bytes:
    with open(path, "rb") as source:
        return gzip.compress(source.read(), compresslevel=9, mtime=0)


class CompressingStaticHandler(StaticHandler):
    _gzip = False

    def _wants_gzip(self, path: str) -> bool:
        headers = self.request.headers
        return path.endswith(COMPRESSIBLE) and "gzip" in headers.get("Accept-Encoding", "") and "Range" not in headers

    def compute_etag(self) -> str | None:
        etag = super().compute_etag()
        return f'{etag[:-1]}-gz"' if etag and self._gzip else etag

    async def get(self, path: str, include_body: bool = True) -> None:
        if not self._wants_gzip(path):
            await super().get(path, include_body)
            return
        self._gzip = True
        # StaticFileHandler.get's own steps, with the body from memory (its public override points).
        self.path = self.parse_url_path(path)
        absolute_path = self.get_absolute_path(self.root, self.path)
        self.absolute_path = self.validate_absolute_path(self.root, absolute_path)
        if self.absolute_path is None:
            return
        self.modified = self.get_modified_time()
        self.set_headers()
        self.set_header("Vary", "Accept-Encoding")
        if self.should_return_304():
            self.set_status(304)
            return
        body = _gzipped(self.absolute_path, os.stat(self.absolute_path).st_mtime_ns)
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Content-Length", str(len(body)))
        if include_body:
            self.write(body)

    def head(self, path: str) -> Awaitable[None]:
        return self.get(path, include_body=False)

    def set_extra_headers(self, path: str) -> None:
        super().set_extra_headers(path)
        if path.endswith(COMPRESSIBLE):
            self.set_header("Vary", "Accept-Encoding")  # the identity answer too, for shared caches
