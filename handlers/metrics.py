"""/metrics in Prometheus text format, aggregated over forked workers (runtime/metrics.py)."""

from __future__ import annotations

import asyncio

from common.metrics import ASYNCIO_TASKS, exposition
from handlers.base import BaseHandler


class MetricsHandler(BaseHandler):
    def get(self) -> None:
        ASYNCIO_TASKS.set(len(asyncio.all_tasks()))  # a leak check for the soak test and operators
        body, content_type = exposition(self.services.metrics_dir)
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    head = get


ROUTES = [(r"/metrics", MetricsHandler)]
