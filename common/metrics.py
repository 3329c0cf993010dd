"""Prometheus metrics, declared once here; features increment them.

Gauges declare how forked workers' values combine (multiprocess_mode), so the
/metrics endpoint can aggregate across workers (see handlers/metrics.py).

Multiprocess mode is prometheus_client's own choice, made when it is first
imported, from PROMETHEUS_MULTIPROC_DIR: `serve` creates that directory and
sets the variable before anything imports this module (runtime/metrics_dir.py),
then hands the same directory to `exposition` and `worker_exited`. This module
reads no environment itself.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

OPEN_STREAMS = Gauge("hepgg_open_streams", "Open long-lived responses", ["kind"], multiprocess_mode="livesum")
PROXIED_BYTES = Counter("hepgg_music_proxied_bytes", "Audio bytes sent to listeners")
OG_RENDER_SECONDS = Histogram(
    "hepgg_og_render_seconds",
    "OG card render time (cold renders)",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
)
LIMITER_DECISIONS = Counter("hepgg_rate_limit_decisions", "Contact rate-limit decisions", ["channel", "outcome"])
DELIVERIES = Counter("hepgg_contact_deliveries", "Contact deliveries", ["channel", "outcome"])
ASYNCIO_TASKS = Gauge(
    "hepgg_asyncio_tasks", "asyncio tasks alive in this process (set when scraped)", multiprocess_mode="liveall"
)
STATS_FLUSHED = Counter("hepgg_stats_flushed", "View/play events written to MongoDB", ["kind"])


def exposition(multiproc_dir: str | None) -> tuple[bytes, str]:
    """The text format; summed over all workers when they write to the shared `multiproc_dir`."""
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int, multiproc_dir: str | None) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sum)."""
    if multiproc_dir:
        multiprocess.mark_process_dead(pid, multiproc_dir)  # type: ignore[no-untyped-call]
