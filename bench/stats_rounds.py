"""How long the stats writer's round formation holds the event loop over a large backlog (pure Python, no store).

    python -m bench.stats_rounds

`StatsWriter._form_units` runs synchronously once per write round, up to MAX_ROUNDS_PER_FLUSH rounds a flush.
This fills the accepted queue with 200,000 views (all of one profile, then spread over 1,000 profiles) and
times 20 successive round formations with the garbage collector off (it would add its own pauses whatever
the code does): median and slowest, in ms. Before the scan was bounded (MAX_ROUND_SCAN, d81637c) the medians were 30-50 ms; since, 10-17 ms.
"""

from __future__ import annotations

import gc
import statistics
import time
from datetime import UTC, datetime

from store.stats import StatsWriter, _Event

BACKLOG = 200_000


def main() -> int:
    now = datetime.now(UTC)
    for label, profiles in (("one profile", 1), ("1,000 profiles", 1000)):
        writer = StatsWriter(None, None)  # type: ignore[arg-type]  # no store: only the queue is used
        writer._accepted = [
            _Event("view", f"p{i % profiles}", "u1", now, {"ip": "203.0.113.1", "user_agent": "bench"})
            for i in range(BACKLOG)
        ]
        times = []
        gc.disable()
        try:
            for _ in range(20):
                started = time.perf_counter()
                writer._form_units()
                times.append(time.perf_counter() - started)
                writer._units.clear()  # as if the round was written
        finally:
            gc.enable()
        print(
            f"{label}: {BACKLOG:,} waiting, median {statistics.median(times) * 1000:.2f} ms, "
            f"slowest {max(times) * 1000:.2f} ms per round formed"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
