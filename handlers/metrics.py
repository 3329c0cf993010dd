"""/metrics in Prometheus text format."""

from __future__ import annotations

ROUTES: list[tuple] = []
