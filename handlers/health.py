"""/healthz (the process is alive) and /readyz (its stores answer)."""

from __future__ import annotations

import asyncio

from handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish({"ok": True, "data": {"status": "alive"}})

    head = get


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        checks = {"mongo": self.services.ping_mongo(), "redis": self.services.ping_redis()}
        results = await asyncio.gather(*(asyncio.wait_for(c, 2.0) for c in checks.values()), return_exceptions=True)
        status = {name: not isinstance(r, BaseException) for name, r in zip(checks, results, strict=True)}
        ready = all(status.values()) and not self.services.draining
        self.set_status(200 if ready else 503)
        self.finish({"ok": ready, "data": {"stores": status, "draining": self.services.draining}})

    head = get


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]
