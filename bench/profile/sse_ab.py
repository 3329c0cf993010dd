#!/usr/bin/env python3
"""SSE A/B: two builds of hepgg_server (two source trees) alternated in one run, medians per build.

    /work/venv/bin/python bench/profile/sse_ab.py --build base=/tmp/perf-base --build new=. \
        [--n 10000] [--layout one] [--rounds 3] [--events 3] [--spy DIR]

A "build" is LABEL=TREE[:extra serve args], e.g. `uv=.:--event-loop uvloop`. Each round runs every
build once, in turn (A B A B ...), through bench/sse_bench.py's own scenario and load client (imported,
not copied), so only the server differs. With --spy, py-spy is attached to the server of each build's
first round and the folded stacks + top-frame tables are written to DIR. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from spy import Spy, print_table, top_frames  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

_spec = importlib.util.spec_from_file_location("sse_bench", ROOT / "bench" / "sse_bench.py")
sse_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sse_bench)


class Build(sse_bench.Ours):
    """sse_bench's `Ours`, started from another tree and/or with extra serve args, optionally under py-spy."""

    def __init__(self, label: str, tree: Path, extra: list[str], tmp: Path, mongo_uri: str, redis_url: str,
                 spy_out: Path | None, client: Client):
        super().__init__(tmp, mongo_uri, redis_url)
        self.label, self.tree, self.extra, self.spy_out = label, tree, extra, spy_out
        self.name = label
        self.spy = None
        self.client = client

    def start(self) -> None:
        self.port = sse_bench.free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(self.tree / "hepgg_server.py"), "serve", "--port", str(self.port),
             "--mongo-uri", self.mongo_uri, "--redis-url", self.redis_url, "--data-dir", str(self.tmp / "data"),
             "--log-level", "warning", "--sse-max-streams", "19990", "--processes", "1", *self.extra],
            cwd=self.tree, preexec_fn=sse_bench.pinned(0), stdout=subprocess.DEVNULL)
        sse_bench.wait_http(self.port, self.health)
        time.sleep(0.5)
        self.client.server_pid = self.proc.pid
        if self.spy_out is not None:
            self.spy = Spy(self.proc.pid, self.spy_out)
            time.sleep(0.5)

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.stop()
        super().stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Client(sse_bench.Client):
    """sse_bench's load client (optionally on uvloop), also timing the server's CPU during the connect storm."""

    def __init__(self, uvloop: bool):
        if not uvloop:
            super().__init__()
        else:
            code = ("import asyncio, runpy, uvloop; asyncio.run = lambda main: uvloop.run(main); "
                    f"runpy.run_path({str(ROOT / 'bench' / 'sse_load_client.py')!r}, run_name='__main__')")
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, preexec_fn=sse_bench.pinned(1))
        self.server_pid: int | None = None
        self.connect_cpu: float | None = None

    def call(self, **command) -> dict:
        if command.get("cmd") != "connect" or self.server_pid is None:
            return super().call(**command)
        before = cpu_seconds(self.server_pid)
        answer = super().call(**command)
        self.connect_cpu = cpu_seconds(self.server_pid) - before
        return answer


def parse_build(text: str) -> tuple[str, Path, list[str]]:
    label, _, rest = text.partition("=")
    tree, _, extra = rest.partition(":")
    return label, Path(tree).resolve(), shlex.split(extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True, help="LABEL=TREE[:extra serve args]")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--layout", default="one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--spy", default=None, help="directory for py-spy folded stacks (first round only)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--client-uvloop", action="store_true", help="run the load client on uvloop (a faster client)")
    args = parser.parse_args()
    builds = [parse_build(b) for b in args.build]
    spy_dir = Path(args.spy) if args.spy else None
    if spy_dir:
        spy_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sse-ab-"))
    stores = sse_bench.EmbeddedStores(tmp / "stores")
    endpoints = stores.start()
    client = Client(args.client_uvloop)
    results: dict[str, list[dict]] = {label: [] for label, _, _ in builds}
    try:
        for round_no in range(args.rounds):
            for label, tree, extra in builds:
                out = spy_dir / f"sse-{label}-{args.n}-{args.layout}.txt" if spy_dir and round_no == 0 else None
                target = Build(label, tree, extra, tmp, endpoints.mongo_uri, endpoints.redis_url, out, client)
                result = sse_bench.scenario(target, client, args.n, args.layout, args.events, 300)
                result["round"] = round_no
                result["connect_cpu_us"] = round(1e6 * client.connect_cpu / max(1, result["connected"]), 1)
                results[label].append(result)
                print(json.dumps(result), flush=True)
                if out is not None:
                    print_table(f"{label} n={args.n} {args.layout}", top_frames(out))
    finally:
        client.stop()
        stores.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds, n={args.n}, layout={args.layout}")
    print(f"{'build':10} {'conn/s':>8} {'KiB/str':>8} {'p50 ms':>8} {'p99 ms':>8} {'probe max':>9} {'µs CPU/conn':>11}")
    summary = {}
    for label, rows in results.items():
        med = lambda key: round(statistics.median(r[key] for r in rows if key in r), 2) if any(key in r for r in rows) else None  # noqa: E731
        summary[label] = {k: med(k) for k in ("connect_per_s", "kib_per_stream", "fanout_p50_ms", "fanout_p99_ms",
                                                "probe_max_ms", "connect_cpu_us")}
        s = summary[label]
        print(f"{label:10} {s['connect_per_s']:>8} {s['kib_per_stream']:>8} {s['fanout_p50_ms']:>8} "
              f"{s['fanout_p99_ms']:>8} {s['probe_max_ms'] or '':>9} {s['connect_cpu_us']:>11}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
