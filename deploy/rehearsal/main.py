"""deploy/rehearse: the production shape on one machine, under load, through a rolling restart, a kill -9
and a Redis master failover; then what every side counted, checked against each other.

Run as root on Debian (ip netns, nginx, redis-server from `scripts/install.sh --test`):

    .venv/bin/python deploy/rehearse                 # the full run (~8 min here), writes bench/results/
    .venv/bin/python deploy/rehearse --short --results-dir /tmp/r   # the slow test's version (~3.5-5.5 min here)

Exit status 0 when every check passed, 1 when one failed, 2 when the rehearsal could not run (not root, a
missing tool, another rehearsal running), 3 when it was interrupted or ran past --max-seconds. Everything
it started (namespaces, veths, processes, its temporary directory) is removed on every one of those exits,
and a crashed earlier run's leftovers are removed before starting.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.rehearsal import chart, netns, shape
from deploy.rehearsal.load import Load, Sizes
from deploy.rehearsal.stack import CREDITS, PRESENCE_KEY, Stack, owner_id, profile_id, recipient_owner
from deploy.rehearsal.verdict import Inputs, Nginx, Verdict, load_inputs, save_inputs

ROOT = shape.ROOT
LOCK = Path("/run/lock/hepgg-rehearsal.lock")
NEEDED = ("ip", "nginx", "redis-server", "redis-cli")


class Interrupted(BaseException):
    """SIGINT/SIGTERM or the --max-seconds bound: stop, clean up, exit 3."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy/rehearse", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    full, short = Sizes(), short_sizes()
    add = parser.add_argument
    add("--short", action="store_true", help="the slow test's version: smaller load, shorter phases")
    for name, value in full.describe().items():
        add(
            f"--{name.replace('_', '-')}",
            type=type(value),
            default=None,
            help=f"default {value} ({getattr(short, name)} with --short)",
        )
    add("--steady", type=float, default=None, help="seconds of steady load before the first event (45; 10)")
    add("--settle", type=float, default=None, help="seconds between events (20; 5)")
    add("--between", type=float, default=None, help="seconds between two replicas of the rolling restart (5; 2)")
    add("--restart-delay", type=float, default=2.0, help="seconds before a killed replica is started again")
    add("--replicas", type=int, default=3)
    add("--processes", type=int, default=2, help="worker processes per replica (serve --processes)")
    add("--redis", choices=["cluster", "single"], default="cluster", help="3 masters + 3 replicas, or one Redis")
    add(
        "--p99-limit",
        type=float,
        default=None,
        help="restart p99 / steady p99 must stay within (3; --short: 0 = report)",
    )
    add("--results-dir", type=Path, default=ROOT / "bench" / "results")
    add("--name", default="rehearsal-latest", help="results are NAME.json and NAME.png")
    add("--max-seconds", type=float, default=840.0, help="give up (exit 3) after this long")
    add("--keep", action="store_true", help="keep the work directory (logs, raw records) for inspection")
    add("--reanalyse", type=Path, metavar="WORKDIR", help="judge a kept run's records again (no root needed)")
    args = parser.parse_args(argv)
    base = short if args.short else full
    values = {
        name: getattr(args, name) if getattr(args, name) is not None else default
        for name, default in base.describe().items()
    }
    args.sizes = Sizes(**values)
    args.steady = args.steady if args.steady is not None else (10.0 if args.short else 45.0)
    args.settle = args.settle if args.settle is not None else (5.0 if args.short else 20.0)
    args.between = args.between if args.between is not None else (2.0 if args.short else 5.0)
    if args.p99_limit is None:
        args.p99_limit = 0.0 if args.short else 3.0
    return args


def short_sizes() -> Sizes:
    return Sizes(
        sse_listeners=300,
        sse_processes=1,
        sse_users=20,
        sse_connect_rate=200.0,
        publish_interval=1.0,
        music_listeners=20,
        page_rate=15.0,
        contact_rate=2.0,
        profiles=20,
    )


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "must run as root (network namespaces)"
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/install.sh --test"
    return None


class Timeline:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, label: str, mark: str | None = None, **details: Any) -> float:
        now = time.monotonic()
        self.events.append({"t": round(now, 3), "label": label, "mark": mark, **details})
        print(f"[{time.strftime('%H:%M:%S')}] {label}" + (f" {details}" if details else ""), flush=True)
        return now


def reanalyse(workdir: Path) -> int:
    verdict = Verdict(load_inputs(workdir)).run()
    checks = [{"name": c.name, "ok": c.ok, **c.numbers} for c in verdict.checks]
    print(json.dumps(verdict.figures, indent=1))
    print_summary({"ok": verdict.ok, "duration_s": "-", "load_seconds": "-", "checks": checks})
    return 0 if verdict.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reanalyse:
        return reanalyse(args.reanalyse)
    problem = preflight()
    if problem:
        print(f"deploy/rehearse: {problem}", file=sys.stderr)
        return 2
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("deploy/rehearse: another rehearsal is running", file=sys.stderr)
        return 2

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, interrupt)
    signal.alarm(int(args.max_seconds))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # nginx and the stores inherit it
    left = netns.remove_leftovers()
    if left:
        print(f"removed a previous run's leftovers: {', '.join(left)}", flush=True)
    for stale in Path(tempfile.gettempdir()).glob("hepgg-rehearsal-*"):
        shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix="hepgg-rehearsal-"))
    workdir.chmod(0o755)  # nginx's workers (nobody) keep temp files under it
    network = netns.Network(args.replicas)
    stack = Stack(workdir, args.replicas, args.processes, args.redis)
    load: Load | None = None
    started = time.monotonic()
    try:
        network.create()
        netns.enter(netns.NET)
        load = Load(stack, args.sizes, seconds=args.max_seconds)
        return rehearse(args, stack, load, started)
    except Interrupted as exc:
        print(f"deploy/rehearse: interrupted ({exc}); cleaning up", file=sys.stderr)
        return 3
    except Exception as exc:
        print(f"deploy/rehearse: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        for child in stack.children:
            if child.name.startswith(("app", "nginx", "load")) and child.proc is not None:
                print(f"---- {child.name} (last lines of {child.log.name})\n{child.tail(15)}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # the clean-up below is bounded; let it finish
        teardown(stack, load, network, workdir, keep=args.keep)
        print(f"deploy/rehearse: {time.monotonic() - started:.0f} s in all, torn down", flush=True)


def teardown(stack: Stack, load: Load | None, network: netns.Network, workdir: Path, *, keep: bool) -> None:
    if load is not None:
        for child in load.children.values():
            with contextlib.suppress(Exception):
                child.stop(signal.SIGKILL, timeout=5)
    with contextlib.suppress(Exception):
        stack.stop_all()
    network.destroy(spare=[os.getpid()])
    if keep:
        print(f"work directory kept: {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def pause(seconds: float, load: Load, stack: Stack, *, down: object = None) -> None:
    """Sleep, checking every half second that the load and the replicas (but `down`) are still running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        load.check_running()
        for replica in stack.replicas:
            if replica is not down and replica.child.proc is not None and not replica.child.running:
                raise RuntimeError(f"app{replica.index} exited unexpectedly:\n{replica.child.tail()}")
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def rehearse(args: argparse.Namespace, stack: Stack, load: Load, started: float) -> int:
    timeline = Timeline()
    wall_offset = time.time() - time.monotonic()
    load_avg_start = os.getloadavg()
    sizes = args.sizes
    timeline.add("starting the stores")
    stack.start_mongo()
    stack.start_redis()
    stack.start_thirdparty()
    stack.seed(sizes.profiles)
    stack.configure_replicas()
    for replica in stack.replicas:
        stack.start_replica(replica)
    for replica in stack.replicas:
        stack.wait_ready(replica, timeout=180)
    stack.start_nginx()
    timeline.add("deployment ready", topology=describe_topology(stack))

    t_load = timeline.add("load starting")
    load.start()
    ramp = load.wait_ramp(timeout=sizes.sse_listeners / sizes.sse_connect_rate * 4 + 60)
    timeline.add("every SSE listener streaming", ramp_s=round(ramp, 1))
    pause(5, load, stack)
    t_steady = timeline.add("steady state")
    pause(args.steady, load, stack)

    # 1. Rolling restart, one replica at a time.
    t_restart = time.monotonic()
    restarts = []
    for replica in stack.replicas:
        timeline.add(f"app{replica.index} SIGTERM", mark="restart")
        stopped = stack.stop_replica(replica)
        timeline.add(f"app{replica.index} exited", **stopped)
        stack.start_replica(replica)
        ready = stack.wait_ready(replica)
        timeline.add(f"app{replica.index} ready", **ready)
        restarts.append({"replica": f"app{replica.index}", **stopped, **ready})
        if replica is not stack.replicas[-1]:
            pause(args.between, load, stack)
    t_restart_end = time.monotonic()
    pause(args.settle, load, stack)

    # 2. kill -9 of one replica and its workers, started again after a restart delay.
    victim = stack.replicas[min(1, len(stack.replicas) - 1)]
    t_kill = timeline.add(f"kill -9 app{victim.index}", mark="kill")
    killed = stack.kill_replica(victim)
    pause(args.restart_delay, load, stack, down=victim)
    stack.start_replica(victim)
    ready = stack.wait_ready(victim)
    killed.update(ready)
    t_kill_end = timeline.add(f"app{victim.index} ready again", **killed)
    pause(args.settle, load, stack)

    # 3. A Redis master fails; its replica takes over.
    failover: dict[str, Any] = {}
    t_failover = time.monotonic()
    if args.redis == "cluster":
        master = stack.redis.master_of(PRESENCE_KEY)
        t_failover = timeline.add(f"kill -9 Redis master {master.address}", mark="failover", key=PRESENCE_KEY)
        master.kill()
        took = stack.redis.wait_failover(master)
        timeline.add("its replica took over", failover_s=round(took, 2))
        back = stack.redis.restart(master)
        timeline.add(f"{master.address} back as a replica", healthy_after_s=round(back, 2))
        failover = {"master": master.address, "failover_s": round(took, 2), "rejoined_s": round(back, 2)}
    else:
        timeline.add("Redis failover skipped (--redis single)")
    t_failover_end = time.monotonic()
    pause(args.settle, load, stack)

    # The end: the publisher stops first so every listener can end on the last presence.
    load.stop(["publisher"])
    t_published = timeline.add("publisher stopped")
    pause(3, load, stack)  # every listener gets the last presence (fan-out p99 is ~1 s on a loaded machine)
    load.stop(["http", "music"])
    load.stop([name for name in load.children if name.startswith("sse-")])
    t_end = timeline.add("load stopped")
    for replica in stack.replicas:  # a graceful stop flushes every batched view and play
        replica.child.send(signal.SIGTERM)
    for replica in stack.replicas:
        if replica.child.wait(stack.compose.stop_grace if stack.compose else 20) is None:
            raise RuntimeError(f"app{replica.index} did not stop within its grace at the end")
    timeline.add("replicas stopped (batched writes flushed)")

    stats = [
        json.loads(line) for line in stack.cli("stats", *(profile_id(i) for i in range(sizes.profiles))).splitlines()
    ]
    credits_left, holds_pending = read_credits(stack, sizes.profiles)
    stack.thirdparty.stop(signal.SIGTERM, timeout=30)
    counts = json.loads(stack.counts_path.read_text())
    stack.nginx.stop(signal.SIGQUIT, timeout=30)
    results = load.results()
    deliveries = {
        channel: {recipient_owner(channel, r): n for r, n in counts[channel].items()}
        for channel in ("sms", "email", "discord")
    }
    flush = float(stack.replica_env.get("HEPGG_VIEW_FLUSH_INTERVAL", "1.0"))
    inputs = Inputs(
        results=results,
        nginx=Nginx.read(stack.workdir / "nginx" / "access.log", wall_offset),
        stats={s["profile_id"]: s for s in stats},
        credits_left=credits_left,
        holds_pending=holds_pending,
        credits_start=2 * CREDITS,
        deliveries=deliveries,
        events=timeline.events,
        windows={
            "steady": (t_steady, t_steady + args.steady),
            "restart": (t_restart, t_restart_end),
            "kill": (t_kill, t_kill_end + 5),
            "failover": (t_failover, t_failover_end + 5),
        },
        killed=(victim.address, t_kill),
        flush_window=flush + 2.0,
        p99_ratio_limit=args.p99_limit or None,
        stopped_publishing=t_published,
    )
    save_inputs(inputs, stack.workdir, wall_offset)
    verdict = Verdict(inputs).run()
    duration = time.monotonic() - started
    data = chart.series(results, t_load, t_end)
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "deploy/rehearse " + " ".join(sys.argv[1:]),
        "ok": verdict.ok,
        "duration_s": round(duration, 1),
        "load_seconds": round(t_end - t_load, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": load_avg_start, "load_avg_end": os.getloadavg()},
        "topology": describe_topology(stack),
        "sizes": sizes.describe(),
        "phases": {"steady_s": args.steady, "settle_s": args.settle, "between_s": args.between},
        "replica_environment_changed": redact(stack.changed_env),
        "events": [{**e, "t": round(e["t"] - t_load, 2)} for e in timeline.events],
        "restarts": restarts,
        "kill": killed,
        "failover": failover,
        "checks": [{"name": c.name, "ok": c.ok, **c.numbers} for c in verdict.checks],
        "figures": verdict.figures,
        "server_logs": server_log_summary(stack),
        "series": data,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.results_dir / f"{args.name}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    chart.draw(
        data,
        timeline.events,
        t_load,
        args.results_dir / f"{args.name}.png",
        f"hepgg rehearsal: {args.replicas} replicas × {args.processes} workers behind nginx, "
        f"Redis {args.redis}, {sizes.sse_listeners} SSE listeners ({report['when']})",
    )
    print_summary(report)
    print(f"results: {json_path} and {json_path.with_suffix('.png')}", flush=True)
    return 0 if verdict.ok else 1


def read_credits(stack: Stack, owners: int) -> tuple[dict[int, int], dict[int, int]]:
    """Per owner: SMS + email credits left, and holds still pending (debited, outcome not yet settled)."""
    from pymongo import MongoClient

    with MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=20000) as client:
        users = list(
            client["hepgg"].users.find(
                {"_id": {"$in": [owner_id(i) for i in range(owners)]}},
                {"sms_credits": 1, "email_credits": 1, "credit_holds": 1},
            )
        )
    index = {u["_id"]: int(u["_id"].rsplit("-", 1)[1]) for u in users}
    left = {index[u["_id"]]: int(u["sms_credits"]) + int(u["email_credits"]) for u in users}
    pending = {index[u["_id"]]: len(u.get("credit_holds") or []) for u in users}
    return left, pending


def describe_topology(stack: Stack) -> dict[str, Any]:
    redis: Any
    if stack.redis_mode == "cluster" and stack.redis is not None:
        with contextlib.suppress(Exception):
            redis = [{"address": n["address"], "role": n["role"]} for n in stack.redis.describe()["nodes"]]
    else:
        redis = stack.redis_url
    return {
        "network": f"namespaces {', '.join(netns.Network(stack.replica_count).names)}; bridge {netns.BRIDGE} "
        f"{netns.SUBNET} in {netns.NET}; visitors from {netns.VISITORS} in {netns.LOAD}",
        "nginx": stack.nginx_target,
        "replicas": [
            f"{r.address}:{stack.app_port} ({r.namespace}, {stack.processes} workers)" for r in stack.replicas
        ],
        "mongo": stack.mongo_uri,
        "redis": redis if stack.redis_mode == "cluster" else stack.redis_url,
        "third_parties": {k: v for k, v in stack.fakes.items() if k != "turnstile_secret"},
        "stop_grace_s": stack.compose.stop_grace if stack.compose else None,
    }


def redact(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if any(s in k for s in ("SECRET", "TOKEN", "PASSWORD")) else v) for k, v in env.items()}


def server_log_summary(stack: Stack) -> dict[str, Any]:
    """Warnings, errors and tracebacks in each replica's log (JSON lines or text), by message."""
    summary = {}
    for replica in stack.replicas:
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            lines = replica.child.log.read_text(errors="replace").splitlines()
            for n, line in enumerate(lines):
                level = None
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        level = str(record.get("level", "")).lower()
                        message = str(record.get("message", record.get("msg", "")))[:90]
                else:
                    for name in ("WARNING", "ERROR", "CRITICAL"):
                        if f" {name} " in line or line.startswith(name):
                            level, message = name.lower(), line.split(name, 1)[1][:90]
                    if line.startswith("future: <Task"):  # asyncio's "never retrieved": which coroutine
                        coroutine = re.search(r"coro=<([^\s(>]+)", line)
                        level, message = "error", f"in task {coroutine.group(1) if coroutine else '?'}"
                    if line.startswith("Traceback"):  # named by its exception: the first unindented line after
                        raised = next((x for x in lines[n + 1 :] if x and not x[0].isspace()), "?")
                        level, message = "error", f"Traceback: {raised[:150]}"
                if level in ("warning", "error", "critical"):
                    key = f"{level}: {message.strip()}"
                    counts[key] = counts.get(key, 0) + 1
        summary[f"app{replica.index}"] = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:15])
    return summary


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    return None


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"\n{'PASSED' if report['ok'] else 'FAILED'} in {report['duration_s']} s "
        f"({report['load_seconds']} s under load)"
    )
    for check in report["checks"]:
        numbers = {k: v for k, v in check.items() if k not in ("name", "ok") and not k.startswith("first")}
        print(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['name']}: {json.dumps(numbers)}")
        if not check["ok"]:
            for key, value in check.items():
                if key.startswith("first") and value:
                    print(f"       {key}: {json.dumps(value)[:600]}")
    print(flush=True)
