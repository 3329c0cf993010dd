"""The benchmark suite: every benchmark, peers side by side, one table, JSON and charts.

    bench/run [--quick] [--only NAME[,NAME]] [--keep-tmp]

Each benchmark runs in its own `Stack` (its processes are stopped before the next one starts, also on
Ctrl-C or failure); a benchmark that fails is reported in the table and the others still run.
Results: bench/results/<time>.json and bench/results/<time>-*.png (the full default run also writes
bench/results/latest.json and latest-*.png, the ones committed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from bench.harness import CLIENT_CPU, RESULTS, BenchError, Stack, install_sigterm, machine_busy_seconds
from bench.results import BenchResult, charts, machine_meta, table, write_json

# name -> module with `run(stack, quick) -> BenchResult`; imported when it runs.
BENCHMARKS = {
    "page": "bench.page_bench",
    "og": "bench.og_bench",
    "sse": "bench.sse_bench",
    "music": "bench.music_bench",
    "contact": "bench.contact_bench",
    "pubsub": "bench.pubsub_ab",  # the hub's pub/sub client vs redis-py's PubSub (single Redis and cluster)
    "cluster": "bench.cluster_bench",  # SSE fan-out and views/s on a Redis Cluster vs one Redis
    "cluster-views": "bench.cluster_views_ab",  # views/s on a cluster vs one Redis, both up, alternating bursts
    "claim": "bench.claim_ab",  # the per-view CPU of the view dedup claim on a Redis Cluster vs one Redis
    "durability": "bench.durability_bench",
    "attack": "bench.attack_bench",
}


def run_one(name: str, quick: bool, keep_tmp: bool) -> BenchResult:
    started, busy = time.monotonic(), machine_busy_seconds()
    print(f"== {name} ({'quick' if quick else 'full'})", flush=True)
    try:
        with Stack(keep_tmp=keep_tmp) as stack:
            result = importlib.import_module(BENCHMARKS[name]).run(stack, quick)
    except BenchError as exc:
        result = BenchResult(name, error=str(exc))
    except Exception as exc:  # a broken benchmark must not hide the others' numbers
        traceback.print_exc()
        result = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.monotonic() - started
    result.series["machine_cpu_s"] = round(machine_busy_seconds() - busy, 1)  # everyone's CPU during the run
    status = f"FAILED: {result.error}" if result.error else "done"
    print(f"   {name} {status} in {result.seconds:.0f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke pass: small sizes, short runs (~2-3 min)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the scratch dir (server and nginx logs)")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where JSON and charts go")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    install_sigterm()
    if (os.cpu_count() or 1) > 1:  # the harness is a client too (OG timings, probes): keep it off the server's CPU
        os.sched_setaffinity(0, {CLIENT_CPU})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {**machine_meta(), "mode": "quick" if args.quick else "full", "only": names}
    results: list[BenchResult] = []
    try:
        for name in names:
            results.append(run_one(name, args.quick, args.keep_tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: every process was stopped; partial results follow", file=sys.stderr)
        meta["interrupted"] = True
    meta["loadavg_after"] = os.getloadavg()
    print()
    print(table(results))
    out = args.results_dir.resolve()
    json_path = out / f"{stamp}.json"
    write_json(results, json_path, meta)
    written = [] if args.no_charts else charts(results, out, f"{stamp}-")
    complete = not args.quick and names == list(BENCHMARKS) and not meta.get("interrupted")
    if complete:  # only a full run of everything becomes the committed reference
        shutil.copyfile(json_path, out / "latest.json")
        for path in written:
            shutil.copyfile(path, out / path.name.replace(f"{stamp}-", "latest-"))
    print(f"\nJSON: {json_path}" + "".join(f"\nchart: {p}" for p in written))
    failed = [r.name for r in results if r.error]
    return 1 if failed or meta.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
