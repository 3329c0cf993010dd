"""/metrics in Prometheus text format, aggregated over forked workers (runtime/metrics.py)."""

from __future__ import annotations

from handlers.base import BaseHandler
from runtime.metrics import exposition


class MetricsHandler(BaseHandler):
    def get(self) -> None:
        body, content_type = exposition()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


ROUTES = [(r"/metrics", MetricsHandler)]
