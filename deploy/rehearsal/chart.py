"""The rehearsal's time series (per second, from the load's own records) and its chart.

Three panels over the run's time, with a vertical line at each event: open streams (SSE listeners
streaming, music tracks playing), requests a second by kind with the 5xx among them, and the page p99
over a sliding 5 s window (log scale).
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

from deploy.rehearsal.verdict import percentile

P99_WINDOW = 5  # seconds


def series(results: dict[str, dict[str, Any]], t0: float, t1: float) -> dict[str, list[Any]]:
    """Per-second series from `t0` to `t1` (seconds since t0 on the x axis)."""
    seconds = list(range(math.ceil(t1 - t0) + 1))
    open_sse = [0] * len(seconds)
    playing = [0] * len(seconds)
    for result in results.values():
        key = {"sse": "open", "music": "streaming"}.get(result.get("kind", ""))
        if key is None:
            continue
        target = open_sse if key == "open" else playing
        by_second: dict[int, int] = {}
        for sample in result["timeline"]:
            second = int(sample["t"] - t0)
            if 0 <= second < len(seconds):
                by_second[second] = sample[key]
        last = 0
        for second in seconds:
            last = by_second.get(second, last)
            target[second] += last
    requests: dict[str, list[int]] = {k: [0] * len(seconds) for k in ("page", "contact", "music", "5xx")}
    latencies: dict[int, list[float]] = collections.defaultdict(list)
    http = results.get("http", {})

    def add(kind: str, t: float, status: int) -> None:
        second = int(t - t0)
        if 0 <= second < len(seconds):
            requests[kind][second] += 1
            if status >= 500 or status == 0:
                requests["5xx"][second] += 1

    for r in http.get("pages", []):
        add("page", r[0], r[2])
        latencies[int(r[0] - t0)].append(r[1])
    for r in http.get("contacts", []):
        add("contact", r[0], r[2])
    for r in results.get("music", {}).get("plays", []):
        add("music", r[0], r[2])
    p99 = []
    for second in seconds:
        window = [v for s in range(second - P99_WINDOW + 1, second + 1) for v in latencies.get(s, [])]
        value = percentile(window, 0.99)
        p99.append(round(value * 1000, 1) if value is not None else None)
    return {"t": seconds, "open_sse": open_sse, "playing": playing, **requests, "page_p99_ms": p99}


def draw(data: dict[str, list[Any]], events: list[dict[str, Any]], t0: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (streams, rates, p99) = plt.subplots(3, 1, figsize=(12, 8.5), sharex=True)
    t = data["t"]
    streams.plot(t, data["open_sse"], label="SSE listeners streaming", color="tab:blue")
    streams.set_ylabel("open streams")
    twin = streams.twinx()
    twin.plot(t, data["playing"], label="music tracks playing", color="tab:green", alpha=0.7)
    twin.set_ylabel("tracks playing", color="tab:green")
    streams.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    for kind, color in (("page", "tab:blue"), ("music", "tab:green"), ("contact", "tab:orange")):
        rates.plot(t, data[kind], label=f"{kind} requests/s", color=color, linewidth=0.9)
    rates.bar(t, data["5xx"], label="5xx or no answer /s", color="tab:red", width=1.0)
    rates.set_ylabel("requests/s (started)")
    rates.legend(loc="upper left", fontsize=8, ncol=4)
    values = [v if v is not None else float("nan") for v in data["page_p99_ms"]]
    p99.plot(t, values, color="tab:purple", label=f"page p99 (sliding {P99_WINDOW} s)")
    p99.set_yscale("log")
    p99.set_ylabel("ms")
    p99.set_xlabel("seconds since the load started")
    p99.legend(loc="upper left", fontsize=8)
    colors = {"restart": "tab:orange", "kill": "tab:red", "failover": "tab:brown"}
    for event in events:
        if not event.get("mark"):
            continue
        x = event["t"] - t0
        color = colors.get(event["mark"], "grey")
        for axis in (streams, rates, p99):
            axis.axvline(x, color=color, linestyle="--", linewidth=0.8, alpha=0.8)
        streams.annotate(
            event["label"],
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color=color,
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
