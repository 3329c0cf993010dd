"""A/B: the CPU our server spends per view on the one step that differs between a Redis Cluster and one Redis.

    bench/run --only claim            (or: python -m bench.claim_ab [--quick])

A view costs the same work on both topologies (render, record, group into units, MongoDB) except its
de-duplication: `store/redis_keys.claim`, one script per profile, through redis-py's `Redis` pipeline on one
Redis and its `RedisCluster` pipeline (per master) on a cluster. The cluster benchmark measures views/s end
to end, but on this 2-core virtual machine a pass's CPU per view moves by up to 25% from one pass to the
next (2026-12-01: 0.53-0.80 ms in one run), far more than the step it compares. Here the step alone runs in
one process pinned to CPU 0, on both topologies in alternation (one round each, in turn), so a drift of the
machine falls on both alike:

  one profile   a flush of 1,000 new visitors of one profile (one script of 1,000 keys)
  100 profiles  a flush of 1,000 new visitors over 100 profiles (100 scripts of 10 keys, on every master)

The figure is the median over the rounds of the process's CPU microseconds per view (`time.process_time`
around `claim`, the event loop's work included); the cluster is 3 masters + 3 replicas
(tests/redis_topologies.py) on CPU 1 with the single Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from store.redis_connect import connect  # noqa: E402
from store.redis_keys import claim  # noqa: E402
from store.stats import DEDUP_SECONDS, view_dedup_key  # noqa: E402

VIEWS = 1000  # per flush: what one worker claims per second at ~2,000 views/s over 2 workers
SHAPES = {"one profile": 1, "100 profiles": 100}


def flush_groups(profiles: int, round_no: int) -> list[list[tuple[str, str]]]:
    """A flush's claim groups: VIEWS new visitors spread evenly over `profiles`, as `store/stats._claim` builds."""
    groups: list[list[tuple[str, str]]] = [[] for _ in range(profiles)]
    for n in range(VIEWS):
        key = view_dedup_key(f"bench{n % profiles}", f"10.{round_no % 250}.{n // 250}.{n % 250}", "bench")
        groups[n % profiles].append((key, str(ObjectId())))
    return groups


async def worker(urls: dict[str, str], rounds: int) -> dict[str, dict[str, list[float]]]:
    connectors = {name: await connect(url) for name, url in urls.items()}
    samples: dict[str, dict[str, list[float]]] = {shape: {name: [] for name in urls} for shape in SHAPES}
    try:
        for round_no in range(rounds + 1):  # round 0 warms connections and the cluster's slot map up
            for shape, profiles in SHAPES.items():
                for name, connector in connectors.items():
                    groups = flush_groups(profiles, round_no)
                    started = time.process_time()
                    answers = await claim(connector.client, groups, DEDUP_SECONDS)
                    spent = time.process_time() - started
                    failed = [a for a in answers if isinstance(a, BaseException)]
                    if failed:
                        raise RuntimeError(f"{name}: {failed[0]!r}")
                    if round_no:
                        samples[shape][name].append(spent / VIEWS * 1e6)
    finally:
        for connector in connectors.values():
            await connector.close()
    return samples


def run(stack, quick: bool):
    """bench/run entry point: the worker on CPU 0, the single Redis and a 3+3 cluster on CPU 1."""
    from bench.harness import CLIENT_CPU, SERVER_CPU, child_setup
    from bench.results import BenchResult, Figure

    sys.path.insert(0, str(ROOT / "tests"))
    from redis_topologies import RedisClusterTopology

    rounds = 40 if quick else 300
    cluster = RedisClusterTopology(stack.tmp / "claim-cluster")
    try:
        cluster.start()
        if (os.cpu_count() or 1) > 1:
            for node in cluster.nodes:
                os.sched_setaffinity(node.proc.pid, {CLIENT_CPU})
        urls = {"single": stack.redis_url, "cluster": cluster.url}
        out = subprocess.run(
            [sys.executable, "-m", "bench.claim_ab", "--worker", json.dumps(urls), str(rounds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=child_setup(SERVER_CPU),
            check=True,
        )
    finally:
        cluster.stop()
    samples = json.loads(out.stdout)
    result = BenchResult("claim")
    result.series["samples"] = samples
    for shape in SHAPES:
        ours, theirs = (statistics.median(samples[shape][name]) for name in ("cluster", "single"))
        size = f"{shape}, {VIEWS} views per flush, {rounds} alternating rounds, median"
        result.figures.append(
            Figure("claim", "dedup CPU per view", size, "us", round(ours, 2), round(theirs, 2), "single Redis")
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("URLS", "ROUNDS"))
    args = parser.parse_args()
    if args.worker:
        try:
            import uvloop  # as `serve` runs when it is installed (--event-loop auto)
        except ImportError:
            print(json.dumps(asyncio.run(worker(json.loads(args.worker[0]), int(args.worker[1])))))
        else:
            print(json.dumps(uvloop.run(worker(json.loads(args.worker[0]), int(args.worker[1])))))
        return 0
    from bench.harness import Stack
    from bench.results import table

    with Stack() as stack:
        result = run(stack, args.quick)
    print(table([result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
