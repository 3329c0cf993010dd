"""OG card: our wand card vs the same card drawn by satori + resvg, both over HTTP, in one run.

    bench/run --only og [--quick]          (satori needs `npm ci` in bench/og-satori, see bench/setup)

Ours: `hepgg_server.py serve --processes 1 --og-render-processes 1` (one server process, one render
process, CPU 0). Peer: bench/og-satori/server.mjs, one node process on CPU 0, rendering the same layout for
every request. The client runs on CPU 1.
  cold p50/p95   one request at a time, each for a different profile (ours: distinct profiles imported
                 with the `import` command, so the PNG cache misses every time; satori: distinct names)
  cold cards/s   the same with 2 requests in flight (our server queues renders in its pool)
  cached req/s   wrk, 32 connections, one profile's card after its first render (ours answers from its
                 cache; satori has none and renders each one: what a cache buys)
"""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import time
from pathlib import Path

from bench.harness import BenchError, Stack, free_port, percentile, wait_http, wrk
from bench.results import BenchResult, Figure, Target

SATORI_DIR = Path(__file__).resolve().parent / "og-satori"
BIO = "Hello there, I build things with Tornado and ImageMagick. Hello there, I build things with Tornado and ImageMagick."
COLD_TARGET = Target("ratio<=", 1.0, "issue 9: OG cold p50 <= satori (research: satori+resvg p50 46 ms)")
CACHED_TARGET = Target(">=", 2000, "OG issue: cached card >= 2,000 req/s per worker (docs/og.md)")


def document(count: int) -> dict:
    users = [{"id": "og-u1", "premium_until": "2099-01-01T00:00:00Z"}]
    profiles = [
        {
            "id": f"og{i}",
            "owner_id": "og-u1",
            "domain": f"og{i}.hep.gg",
            "is_public": 1,
            "theme": {"accent": "#7c3aed", "background": {"from": "#0b0b10", "to": "#302b63", "angle": 135}},
            "content": {"display_name": f"Alice Example {i}", "bio": BIO},
        }
        for i in range(count)
    ]
    return {"users": users, "profiles": profiles}


def timed_gets(port: int, paths: list[str], in_flight: int) -> tuple[list[float], float]:
    """GET each path once, `in_flight` at a time on keep-alive connections; per-request ms and wall seconds."""

    def lane(lane_paths: list[str]) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        times = []
        for path in lane_paths:
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or not body.startswith(b"\x89PNG"):
                raise BenchError(f"GET {path} answered {response.status}")
            times.append((time.perf_counter() - started) * 1000)
        conn.close()
        return times

    lanes = [paths[i::in_flight] for i in range(in_flight)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        times = [t for lane_times in pool.map(lane, lanes) for t in lane_times]
    return times, time.perf_counter() - started


def run(stack: Stack, quick: bool) -> BenchResult:
    if not (SATORI_DIR / "node_modules").is_dir():
        raise BenchError("bench/og-satori/node_modules is missing: run `npm ci` there (or bench/setup)")
    result = BenchResult("og")
    cold = 12 if quick else 60
    warm = 10
    stack.import_document("og", document(warm + 2 * cold + 1))
    _, port = stack.hepgg("--og-render-processes", "1")
    satori_port = free_port()
    satori = stack.spawn("satori", ["node", "server.mjs"], cwd=SATORI_DIR, env={**os.environ, "PORT": str(satori_port)})
    wait_http(satori_port, "/health", satori, 30, "satori server")

    ours_paths = [f"/api/v1/profiles/og{i}/og.png" for i in range(warm + 2 * cold + 1)]
    satori_paths = [f"/card.png?name=Alice+Example+{i}" for i in range(warm + 2 * cold + 1)]
    timed_gets(port, ours_paths[:warm], 1)  # warm both: pools, fonts, JIT
    timed_gets(satori_port, satori_paths[:warm], 1)
    series: dict = {}
    for in_flight, chunk in ((1, slice(warm, warm + cold)), (2, slice(warm + cold, warm + 2 * cold))):
        ours_ms, ours_wall = timed_gets(port, ours_paths[chunk], in_flight)
        peer_ms, peer_wall = timed_gets(satori_port, satori_paths[chunk], in_flight)
        size = f"{cold} cards, {in_flight} in flight"
        if in_flight == 1:
            result.figures.append(
                Figure(
                    "og",
                    "cold p50",
                    size,
                    "ms",
                    percentile(ours_ms, 0.5),
                    percentile(peer_ms, 0.5),
                    "satori+resvg",
                    COLD_TARGET,
                )
            )
            result.figures.append(
                Figure(
                    "og", "cold p95", size, "ms", percentile(ours_ms, 0.95), percentile(peer_ms, 0.95), "satori+resvg"
                )
            )
        result.figures.append(
            Figure("og", "cold cards/s", size, "cards/s", cold / ours_wall, cold / peer_wall, "satori+resvg")
        )
        series[f"cold_ms_in_flight_{in_flight}"] = {"ours": ours_ms, "satori": peer_ms}

    cached_path = ours_paths[-1]
    timed_gets(port, [cached_path], 1)  # render it once; from now on it is a cache hit
    seconds = 2 if quick else 6
    ours = wrk(stack, f"http://127.0.0.1:{port}{cached_path}", connections=32, seconds=seconds)
    peer = wrk(stack, f"http://127.0.0.1:{satori_port}/card.png?name=Cached", connections=4, seconds=seconds)
    result.figures.append(
        Figure(
            "og",
            "cached req/s",
            "c=32 (satori c=4, no cache)",
            "req/s",
            ours["req_per_s"],
            peer["req_per_s"],
            "satori+resvg",
            CACHED_TARGET,
            note=f"errors {ours['status_errors'] + ours['read_errors']}",
        )
    )
    series["cached"] = {"ours": ours, "satori": peer}
    result.series = series
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.og_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "og", *sys.argv[1:]]))
