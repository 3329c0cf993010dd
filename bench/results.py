"""One results format for every benchmark: figures (ours, peer, ratio, target), the table, JSON and charts.

A benchmark returns a `BenchResult`: `figures` are the rows of the printed table, `series` the raw points the
charts draw (and anything else worth keeping in the JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Target:
    """What an issue asks of a figure. kind: ratio>= / ratio<= (ours/peer) or >= / <= (ours alone)."""

    kind: str
    value: float
    source: str  # where the number comes from (the issue and the research fact behind it)

    def text(self) -> str:
        subject = "ratio" if self.kind.startswith("ratio") else "ours"
        return f"{subject} {self.kind.removeprefix('ratio')} {self.value:g}"

    def met(self, ours: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.kind.startswith("ratio") else ours
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value >= self.value if self.kind.endswith(">=") else value <= self.value


@dataclass
class Figure:
    bench: str
    metric: str
    size: str  # the load this row was measured at, e.g. "c=32" or "10000 streams, one user"
    unit: str
    ours: float | None
    peer: float | None = None
    peer_name: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.peer:
            return None
        return self.ours / self.peer

    @property
    def passed(self) -> bool | None:
        return self.target.met(self.ours, self.ratio) if self.target else None

    def as_json(self) -> dict:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["passed"] = self.passed
        data["target"] = {**asdict(self.target), "text": self.target.text()} if self.target else None
        return data


@dataclass
class BenchResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    series: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


# ---------------------------------------------------------------- table


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: list[BenchResult]) -> str:
    header = ("bench", "metric", "size", "ours", "peer", "peer is", "ours/peer", "target", "")
    rows = [header]
    for result in results:
        if result.error:
            rows.append((result.name, "FAILED", result.error.splitlines()[0][:60], "", "", "", "", "", "ERROR"))
        for f in result.figures:
            verdict = {True: "pass", False: "MISS", None: ""}[f.passed]
            if f.target and f.passed is None:
                verdict = "n/a"
            rows.append(
                (
                    f.bench,
                    f"{f.metric} ({f.unit})",
                    f.size,
                    _num(f.ours),
                    _num(f.peer),
                    f.peer_name,
                    f"{f.ratio:.2f}x" if f.ratio is not None else "-",
                    f.target.text() if f.target else "",
                    verdict,
                )
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    numeric = {3, 4, 6}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            str(c).rjust(w) if i in numeric else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- JSON


def write_json(results: list[BenchResult], path: Path, meta: dict) -> None:
    data = {
        **meta,
        "benchmarks": {
            r.name: {
                "seconds": round(r.seconds, 1),
                "error": r.error,
                "figures": [f.as_json() for f in r.figures],
                "series": r.series,
            }
            for r in results
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def machine_meta() -> dict:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg()}


# ---------------------------------------------------------------- charts


def charts(results: list[BenchResult], out_dir: Path, prefix: str) -> list[Path]:
    """Draw what the benchmarks recorded in `series`: how cost grows with load, ours next to the peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {r.name: r.series for r in results if r.series}
    specs = [
        ("sse", "fanout_p99", "SSE fan-out p99, one user", "listeners on one user", "p99 ms (publish → receipt)", True),
        ("sse", "rss", "Server RSS vs SSE streams held", "streams", "RSS after first event (MiB)", False),
        ("music", "mib_s", "Music proxy throughput", "concurrent streams", "MiB/s", False),
        ("page", "req_s", "Profile page renders/s (views recorded)", "keep-alive connections", "req/s", True),
    ]  # (benchmark, series key, title, x label, y label, log scales)
    written = []
    for bench, key, title, xlabel, ylabel, logy in specs:
        lines = series.get(bench, {}).get(key)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for label, points in lines.items():
            xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{prefix}{bench}-{key.replace('_', '-')}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
