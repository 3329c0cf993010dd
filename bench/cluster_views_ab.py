"""A/B: page views/s on a Redis Cluster against one Redis, both servers up at once, in alternating bursts.

    bench/run --only cluster-views      (or: python -m bench.cluster_views_ab [--quick] [--rounds 12] [--seconds 4])

bench/cluster_bench.py starts a fresh `serve` per pass, one topology at a time: its passes of one topology
spread by ±30 % (2026-12-01), so its views/s ratio could not tell the cluster from one Redis. Here, as in
bench/page_ab.py, both `serve --processes 2` run for the whole bench (the workers of both pinned to CPU 0; the
single Redis, the 3+3 cluster and wrk on CPU 1), each on its own copy of the profiles, and short wrk bursts
alternate between them, the first of each round swapped, so a drift of the shared machine falls on both.
After each burst the bench waits until its views are written (the embedded MongoDB writes fewer views per
second than a burst makes): a backlog left to drain under the next burst made the ratios swing 0.6-1.3x.
A burst's CPU per view counts the workers' CPU from its start to its last view written.
BENCH_CLUSTER_REPLICAS=0 is a diagnostic, as in bench/cluster_bench.py: a 3+0 cluster, whose figures say so.
BENCH_CLUSTER_VIEWS_AA=1 is the A/A diagnostic: the "cluster" side on a second single Redis, the cluster idle
beside it; its ratios are the bench's own bias and noise (docs/redis.md: 1.02x and 1.04x pooled, 2026-12-02).
Each burst also records its side's Redis CPU per view and how busy CPU 1 (wrk, MongoDB, Redis) was.
BENCH_VIEWS_PROCESSES=1 runs each server with one process: with two on CPU 0, which worker accepts a burst's
connections is drawn at random and moves the burst's rate by 15-40 % (each burst's busiest worker share is recorded).

Each round measures both workloads of the cluster bench: one profile (one claim script per flush) and 100
profiles in turn (a claim per profile, on every master), a new visitor per request. Printed per round, then
the median of the per-round ratios (cluster / single) with their range, and the views each server wrote
against the requests it answered, read from MongoDB once everything is flushed: a view lost on either side
shows there. Target (issue 15): no loss of view throughput, the median ratio >= 1 within the rounds' spread.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo

from bench.cluster_bench import Topology
from bench.harness import BROWSER_UA, CLIENT_CPU, ROOT, BenchError, Stack, cpu_seconds, cpu_ticks, unique_ip_lua, wrk
from bench.page_bench import VISITORS_LUA, document
from bench.results import BenchResult, Figure, Target

VIEWS_TARGET = Target("ratio>=", 1.0, "issue 15: no loss of view throughput on the cluster")
SPREAD_PROFILES = 100

# Each topology serves its own profiles, so the views each one wrote can be counted apart.
PROFILES = {
    "single": {"one": ("pg1", "alice.hep.gg"), "spread": ("pv", "v")},
    "cluster": {"one": ("pc1", "carol.hep.gg"), "spread": ("pw", "w")},
}
# unique_ip_lua counts 10.x.y.z addresses (2**24): each burst its own block, so no view is a repeat visit.
IPS_PER_BURST = 60_000
ONE_WORKER = 0.75  # a burst whose busiest worker spent this share of the workers' CPU was served by that one


def spread_lua(host_prefix: str) -> str:
    """wrk: a new visitor per request, the spread profiles' hosts (<prefix><i>.hep.gg) in turn."""
    return r"""
local turn = 0
request = function()
  turn = turn + 1
  wrk.headers["Host"] = string.format("%s%%d.hep.gg", turn %% %d)
  wrk.headers["X-Forwarded-For"] = next_ip()
  return wrk.format()
end
""" % (host_prefix, SPREAD_PROFILES)


def spread_document(id_prefix: str, host_prefix: str) -> dict:
    """SPREAD_PROFILES copies of the page bench's profile, <id_prefix><i> at <host_prefix><i>.hep.gg, each with
    its own owner: one owner's 100 profiles are over any plan's allowance, and the reconciler that `serve` runs
    unpublished all but two of them within the run."""
    base = document()
    return {
        "users": [{**base["users"][0], "id": f"{id_prefix}-u{i}"} for i in range(SPREAD_PROFILES)],
        "profiles": [
            {
                **base["profiles"][0],
                "id": f"{id_prefix}{i}",
                "owner_id": f"{id_prefix}-u{i}",
                "domain": f"{host_prefix}{i}.hep.gg",
            }
            for i in range(SPREAD_PROFILES)
        ],
    }


def workers_cpu(proc, processes: int) -> dict[int, float]:
    """CPU seconds of each of `serve`'s worker processes, whose work is what we measure: the parent's children,
    or with one process the parent itself (its children are then the OG render processes)."""
    if processes == 1:
        return {proc.pid: processes_cpu([proc.pid])}
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return {int(pid): processes_cpu([int(pid)]) for pid in children}


def busiest_share(before: dict[int, float], after: dict[int, float]) -> float:
    """The busiest worker's share of the workers' CPU between two readings (0.5: even over two workers)."""
    spent = [after[pid] - before.get(pid, 0.0) for pid in after]
    return max(spent) / max(1e-9, sum(spent))


def one_profile_document(profile_id: str, host: str) -> dict:
    doc = copy.deepcopy(document())
    doc["users"][0]["id"] = f"{profile_id}-u1"
    doc["profiles"][0].update(id=profile_id, owner_id=f"{profile_id}-u1", domain=host)
    return doc


def recorded_views(mongo: pymongo.MongoClient, name: str, workload: str) -> int:
    """Views written to MongoDB for the topology's profiles of one workload."""
    profile_id, _ = PROFILES[name]["one"]
    spread_prefix, _ = PROFILES[name]["spread"]
    query = {"_id": profile_id} if workload == "one" else {"_id": {"$regex": f"^{spread_prefix}[0-9]"}}
    return sum(int(doc.get("views", 0)) for doc in mongo["bench"]["profile_stats"].find(query, {"views": 1}))


def burst(stack: Stack, name: str, port: int, workload: str, seconds: float, first_ip: int) -> dict:
    _, host = PROFILES[name]["one"]
    _, host_prefix = PROFILES[name]["spread"]
    lua = unique_ip_lua(first_ip) + (VISITORS_LUA if workload == "one" else spread_lua(host_prefix))
    return wrk(
        stack,
        f"http://127.0.0.1:{port}/",
        connections=32,
        seconds=seconds,
        headers={"Host": host, "User-Agent": BROWSER_UA},
        lua=lua,
    )


@dataclass
class Sides:
    """Both servers of a run: {name: (serve process, port)}, each side's Redis processes, the run's shape."""

    servers: dict[str, tuple[subprocess.Popen, int]]
    redis_pids: dict[str, list[int]]
    shape: str
    processes: int


@contextlib.contextmanager
def servers_on_both(stack: Stack, replicas: int = 1, same: bool = False) -> Iterator[Sides]:
    """`serve --processes 2` on the single Redis and on a 3+<replicas> cluster (its nodes on CPU 1), both up
    at once; everything stopped on leaving. `same` (BENCH_CLUSTER_VIEWS_AA=1) is the A/A diagnostic: the
    side named "cluster" runs on a second single Redis, the cluster idle beside it, so that what CPU 1 holds
    is the same and a ratio away from 1 is the bench's own bias or noise."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_topologies import RedisClusterTopology

    cluster = RedisClusterTopology(stack.tmp / "cluster", replicas=replicas)
    try:
        cluster.start()
        if (os.cpu_count() or 1) > 1:
            for node in cluster.nodes:
                os.sched_setaffinity(node.proc.pid, {CLIENT_CPU})
        single_url = stack.redis_url
        single_pids = [proc.pid for name, proc in stack.procs if name == "redis"]
        if same:
            second_url, second = stack.start_redis("redis-b")
            cluster_side, cluster_pids = second_url, [second.pid]
            shape = f"A/A: two single Redis, the 3+{3 * replicas} cluster idle beside them"
        else:
            cluster_side, cluster_pids = cluster.url, [node.proc.pid for node in cluster.nodes]
            shape = f"3+{3 * replicas} cluster"
        topologies = {
            "single": Topology(stack, "single", single_url),
            "cluster": Topology(stack, "cluster", cluster_side, masters=None if same else {}),  # {}: nothing published
        }
        # BENCH_VIEWS_PROCESSES=1: one worker per server (diagnostic: no accept balance to draw, see ONE_WORKER).
        processes = int(os.environ.get("BENCH_VIEWS_PROCESSES", "2"))
        servers = {name: topology.serve(processes) for name, topology in topologies.items()}
        try:
            yield Sides(servers, {"single": single_pids, "cluster": cluster_pids}, shape, processes)
        finally:
            for proc, _ in servers.values():
                stack.stop(proc)
            for topology in topologies.values():
                topology.close()
    finally:
        cluster.stop()


def processes_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(pid)
    return total


def run(stack: Stack, quick: bool, rounds: int | None = None, seconds: float | None = None) -> BenchResult:
    """bench/run entry point."""
    rounds = rounds or (2 if quick else 12)
    seconds = seconds or (2.0 if quick else 4.0)
    for name, where in PROFILES.items():
        stack.import_document(f"{name}-one", one_profile_document(*where["one"]))
        stack.import_document(f"{name}-spread", spread_document(*where["spread"]))
    replicas = int(os.environ.get("BENCH_CLUSTER_REPLICAS", "1"))  # 0: a diagnostic 3+0 cluster, as in cluster_bench
    same = os.environ.get("BENCH_CLUSTER_VIEWS_AA") == "1"
    # One client for the whole run: the views are polled four times a second between bursts.
    with servers_on_both(stack, replicas, same) as sides, pymongo.MongoClient(stack.mongo_uri) as mongo:
        summary = {**measure(stack, mongo, sides, rounds, seconds), "shape": sides.shape, "processes": sides.processes}
    return as_result(summary)


def as_result(summary: dict) -> BenchResult:
    """Pooled views/s per topology (every burst's requests over their seconds) as the figure; the median of
    the per-round ratios, their range and the views written against the requests in its note."""
    result = BenchResult("cluster-views")
    result.series["summary"] = summary
    for workload, label in (("one", "one profile"), ("spread", f"over {SPREAD_PROFILES} profiles")):
        w = summary["workloads"][workload]
        lost = {name: w["requests"][name] - w["views_written"][name] for name in w["requests"]}
        matched = w["balance_matched_ratios"]
        matched_median = f"{statistics.median(matched):.3f}" if matched else "-"
        note = (
            f"median per-round ratio {w['median_ratio']:.3f} (range {w['min_ratio']:.3f}-{w['max_ratio']:.3f},"
            f" {w['rounds_at_or_above_1']} of {summary['rounds']} rounds >= 1); views written short of requests:"
            f" single {max(0, lost['single'])}, cluster {max(0, lost['cluster'])}; CPU per view ratio"
            f" {w['median_cpu_ratio']:.3f}; Redis CPU per view single {w['redis_cpu_ms_per_view']['single']:.4f} ms,"
            f" cluster {w['redis_cpu_ms_per_view']['cluster']:.4f} ms; CPU 1 busy during the bursts single"
            f" {w['cpu1_busy']['single']:.0%}, cluster {w['cpu1_busy']['cluster']:.0%}; rounds whose bursts were"
            f" served alike (one worker each, or split): {len(matched)}, median ratio {matched_median}"
        )
        processes = summary["processes"]
        size = f"c=32, a new visitor per request, {label}, {processes} processes each, {summary['rounds']} alternating rounds"
        result.figures.append(
            Figure(
                "cluster-views",
                "views/s (page + view recorded)",
                f"{size}, {summary['shape']}",
                "req/s",
                round(w["pooled_req_s"]["cluster"], 1),
                round(w["pooled_req_s"]["single"], 1),
                "single Redis",
                VIEWS_TARGET,
                note,
            )
        )
    return result


def measure(stack: Stack, mongo: pymongo.MongoClient, sides: Sides, rounds: int, seconds: float) -> dict:
    servers = sides.servers
    requests = {(name, w): 0 for name in servers for w in ("one", "spread")}
    errors = {(name, w): 0 for name in servers for w in ("one", "spread")}
    measured = dict(errors)  # the rounds' requests (the warm-up's count for the views, not for the rates)
    elapsed = {key: 0.0 for key in errors}
    before = {(name, w): recorded_views(mongo, name, w) for name in servers for w in ("one", "spread")}
    ip = 0  # the bursts so far: each gets its own block of visitor addresses
    for name, (_, port) in servers.items():  # warm both up: profile caches, claim scripts loaded
        for workload in ("one", "spread"):
            ip += 1
            warm = burst(stack, name, port, workload, 1, first_ip=ip * IPS_PER_BURST)
            requests[(name, workload)] += warm["requests"]
            wait_for_views(mongo, requests, before)
    ratios: dict[str, list[float]] = {"one": [], "spread": []}
    cpu_ratios: dict[str, list[float]] = {"one": [], "spread": []}
    # Where the difference could come from besides the workers: CPU 1 (wrk, SecantusDB, the Redis processes).
    redis_ms: dict[tuple[str, str], list[float]] = {key: [] for key in errors}
    cpu1_busy: dict[tuple[str, str], list[float]] = {key: [] for key in errors}
    # `serve`'s workers share one listening socket, and both are on CPU 0: the one that runs first accepts a
    # burst's 32 connections (and serves the burst alone) or they split them, at random; the rates differ.
    busiest: dict[tuple[str, str], list[float]] = {key: [] for key in errors}
    matched: dict[str, list[float]] = {"one": [], "spread": []}
    by_balance: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    rows = []
    for round_no in range(rounds):
        order = ["single", "cluster"] if round_no % 2 == 0 else ["cluster", "single"]
        for workload in ("one", "spread"):
            rate, cpu_ms = {}, {}
            for name in order:
                proc, port = servers[name]
                ip += 1
                workers_before = workers_cpu(proc, sides.processes)
                redis_before, cpu1_before = processes_cpu(sides.redis_pids[name]), cpu_ticks(CLIENT_CPU)
                result = burst(stack, name, port, workload, seconds, first_ip=ip * IPS_PER_BURST)
                cpu1_after = cpu_ticks(CLIENT_CPU)
                redis_ms[(name, workload)].append(
                    1000 * (processes_cpu(sides.redis_pids[name]) - redis_before) / max(1, result["requests"])
                )
                cpu1_busy[(name, workload)].append(
                    (cpu1_after[0] - cpu1_before[0]) / max(1, cpu1_after[1] - cpu1_before[1])
                )
                requests[(name, workload)] += result["requests"]
                # The burst's views written before the next burst: the embedded MongoDB writes fewer views per
                # second than a burst makes, and a backlog drained during the other server's burst made the
                # per-round ratios swing 0.6-1.3x. The CPU counted is the burst's and its views' writing.
                wait_for_views(mongo, requests, before)
                workers_after = workers_cpu(proc, sides.processes)
                spent = sum(workers_after.values()) - sum(workers_before.values())
                cpu_ms[name] = 1000 * spent / max(1, result["requests"])
                busiest[(name, workload)].append(busiest_share(workers_before, workers_after))
                rate[name] = result["req_per_s"]
                measured[(name, workload)] += result["requests"]
                elapsed[(name, workload)] += result["duration_us"] / 1e6
                errors[(name, workload)] += result["status_errors"] + result["read_errors"] + result["timeouts"]
            ratios[workload].append(rate["cluster"] / rate["single"])
            balance = {name: busiest[(name, workload)][-1] >= ONE_WORKER for name in order}
            if balance["single"] == balance["cluster"]:  # both bursts served alike: one worker each, or split
                matched[workload].append(rate["cluster"] / rate["single"])
            for name in order:
                by_balance[(name, workload, balance[name])].append(rate[name])
            cpu_ratios[workload].append(cpu_ms["cluster"] / cpu_ms["single"])
            rows.append({"round": round_no + 1, "workload": workload, "req_s": rate, "cpu_ms_per_view": cpu_ms})
            print(
                f"   round {round_no + 1} {workload:6}: single {rate['single']:.0f}/s, cluster {rate['cluster']:.0f}/s,"
                f" ratio {ratios[workload][-1]:.3f}; CPU per view single {cpu_ms['single']:.3f} ms,"
                f" cluster {cpu_ms['cluster']:.3f} ms; busiest worker's CPU share single"
                f" {busiest[('single', workload)][-1]:.2f}, cluster {busiest[('cluster', workload)][-1]:.2f}",
                flush=True,
            )
    failed = {f"{name} {workload}": count for (name, workload), count in errors.items() if count}
    if failed:  # a 404 or 503 is cheaper than a view: a rate that counts them measures something else
        raise BenchError(f"answers other than 200 during the bursts: {failed}")
    written = wait_for_views(mongo, requests, before, say=True)
    workloads = {}
    for workload in ("one", "spread"):
        workloads[workload] = {
            "median_ratio": statistics.median(ratios[workload]),
            "min_ratio": min(ratios[workload]),
            "max_ratio": max(ratios[workload]),
            "rounds_at_or_above_1": sum(r >= 1 for r in ratios[workload]),
            "median_cpu_ratio": statistics.median(cpu_ratios[workload]),
            "requests": {name: requests[(name, workload)] for name in servers},
            "pooled_req_s": {name: measured[(name, workload)] / elapsed[(name, workload)] for name in servers},
            "errors": {name: errors[(name, workload)] for name in servers},
            "views_written": {name: written[(name, workload)] for name in servers},
            # The burst's own Redis processes' CPU per view (not its views' later writing), and how busy CPU 1
            # was during the burst: the medians over the rounds.
            "redis_cpu_ms_per_view": {name: statistics.median(redis_ms[(name, workload)]) for name in servers},
            "cpu1_busy": {name: statistics.median(cpu1_busy[(name, workload)]) for name in servers},
            "busiest_worker_share": {name: busiest[(name, workload)] for name in servers},
            # The rounds whose two bursts were served alike, and the mean burst rate of each side by how it was
            # served: the accept's draw, not the topology, is what these separate.
            "balance_matched_ratios": matched[workload],
            "mean_rate_by_balance": {
                f"{name} {'one worker' if alone else 'split'}": statistics.mean(rates)
                for (name, kind, alone), rates in sorted(by_balance.items())
                if kind == workload
            },
        }
    return {"rounds": rounds, "seconds": seconds, "rows": rows, "workloads": workloads}


def wait_for_views(mongo: pymongo.MongoClient, requests: dict, before: dict, say: bool = False) -> dict:
    """Views written since the start, once every request's view is in, or the count has not moved for 20 s
    (a failed MongoDB write is retried a few seconds later: a shorter wait would read that as a loss)."""
    started = time.monotonic()
    last, still_since = None, started
    while True:
        now = {key: recorded_views(mongo, *key) - before[key] for key in requests}
        if all(now[key] >= requests[key] for key in requests):
            return now
        if now != last:
            last, still_since = now, time.monotonic()
            if say:
                print(f"   views written after {time.monotonic() - started:.0f} s: {sum(now.values())}", flush=True)
        if time.monotonic() - still_since > 20 or time.monotonic() - started > 300:
            return now
        time.sleep(0.25)


def main() -> int:
    from bench.results import table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    with Stack() as stack:
        result = run(stack, args.quick, args.rounds, args.seconds)
    print(table([result]))
    print(json.dumps(result.series["summary"]["workloads"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
