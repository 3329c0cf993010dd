#!/usr/bin/env python3
"""Music A/B: builds of hepgg_server (source trees and/or settings) and nginx proxy_pass, alternated in one run.

    /work/venv/bin/python bench/profile/music_ab.py --build base=/tmp/perf-base --build new=. \
        [--streams 50,500] [--rounds 3] [--spy DIR]

A build is LABEL=TREE[:ENV=VALUE,...] (e.g. `big=.:HEPGG_MUSIC_CHUNK_BYTES=262144`). bench/music_bench.py's
own upstream, nginx proxy, server start-up, load client and measurement are imported, not copied; every
build runs its own server at once, and each round measures every target in turn (A, B, nginx, A, B, ...)
at each concurrency. Reports medians of MiB/s and the server's CPU s/GiB, and the ratios to nginx from
the same round. With --spy, py-spy samples each build during its first round. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from spy import Spy, print_table, top_frames  # noqa: E402

_spec = importlib.util.spec_from_file_location("music_bench", ROOT / "bench" / "music_bench.py")
mb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mb)


def user_sys(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / mb.CLK_TCK, int(fields[12]) / mb.CLK_TCK


def parse_build(text: str) -> tuple[str, Path, dict[str, str]]:
    label, _, rest = text.partition("=")
    tree, _, env = rest.partition(":")
    return label, Path(tree).resolve(), dict(item.split("=", 1) for item in env.split(",") if item)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True)
    parser.add_argument("--streams", default="50,500")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=float, default=5)
    parser.add_argument("--spy", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    builds = [parse_build(b) for b in args.build]
    mb.raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="music-ab-"))
    (workdir / "track.bin").write_bytes(os.urandom(int(args.size_mb * 1_000_000)))
    procs: list[subprocess.Popen] = []
    rows: list[dict] = []
    try:
        up_port, proxy_port = mb.free_port(), mb.free_port()
        upstream = mb.start_nginx(workdir, "upstream", mb.UPSTREAM_BODY.format(port=up_port, dir=workdir))
        proxy = mb.start_nginx(workdir, "proxy", mb.PROXY_BODY.format(port=proxy_port, upstream=up_port, isrc=mb.ISRC))
        procs += [upstream, proxy]
        targets = {}
        for label, tree, env in builds:
            build_dir = workdir / label
            build_dir.mkdir()
            mb.ROOT = tree  # start_hepgg runs <ROOT>/hepgg_server.py
            port = mb.free_port()
            proc = mb.start_hepgg(build_dir, port, up_port, env)
            procs.append(proc)
            targets[label] = (proc, port, mb.PROFILE_PATH)
        mb.ROOT = ROOT
        for port in [up_port, proxy_port] + [t[1] for t in targets.values()]:
            mb.wait_port(port, 120)
        targets["nginx"] = (None, proxy_port, "/")
        pids = {name: (proc.pid if proc else mb.nginx_worker(proxy)) for name, (proc, _, _) in targets.items()}
        for name, (_, port, path) in targets.items():
            warm = mb.run_client(port, path, 5)
            assert warm["errors"] == 0, (name, warm)
        for round_no in range(args.rounds):
            for concurrency in [int(c) for c in args.streams.split(",")]:
                for name, (_, port, path) in targets.items():
                    spy = None
                    if args.spy and round_no == 0 and name != "nginx":
                        Path(args.spy).mkdir(parents=True, exist_ok=True)
                        spy = Spy(pids[name], Path(args.spy) / f"music-{name}-{concurrency}.txt")
                        time.sleep(0.5)
                    time.sleep(1)
                    user0, sys0 = user_sys(pids[name])
                    row = mb.measure(name, pids[name], port, path, concurrency)
                    user1, sys1 = user_sys(pids[name])
                    row["user_share"] = round((user1 - user0) / max(1e-9, (user1 - user0) + (sys1 - sys0)), 2)
                    if spy is not None:
                        print_table(f"music {name} x{concurrency}", top_frames(spy.stop()))
                    row.update(round=round_no, concurrency=concurrency)
                    rows.append(row)
                    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGQUIT if proc in (upstream, proxy) else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds ({args.size_mb} MB bodies)")
    print(f"{'streams':>7} {'target':8} {'MiB/s':>8} {'x nginx':>8} {'CPU s/GiB':>9} {'errors':>6} {'user/CPU':>8}")
    summary = []
    for concurrency in sorted({r["concurrency"] for r in rows}):
        for name in targets:
            mine = [r for r in rows if r["target"] == name and r["concurrency"] == concurrency]
            ratios = []
            for r in mine:
                peer = next(p for p in rows if p["target"] == "nginx" and p["concurrency"] == concurrency
                            and p["round"] == r["round"])
                ratios.append(r["mib_s"] / peer["mib_s"])
            line = {"streams": concurrency, "target": name,
                    "mib_s": round(statistics.median(r["mib_s"] for r in mine), 1),
                    "vs_nginx": round(statistics.median(ratios), 2),
                    "cpu_s_per_gib": round(statistics.median(r["cpu_s_per_gib"] for r in mine), 2),
                    "errors": sum(r["errors"] for r in mine),
                    "user_share": statistics.median(r["user_share"] for r in mine)}
            summary.append(line)
            print(f"{concurrency:>7} {name:8} {line['mib_s']:>8} {line['vs_nginx']:>8} {line['cpu_s_per_gib']:>9} "
                  f"{line['errors']:>6} {line['user_share']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
