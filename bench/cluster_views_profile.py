"""Where a view's CPU goes on a Redis Cluster and on one Redis: py-spy on both servers' workers, same burst.

    python -m bench.cluster_views_profile [--seconds 12] [--workload one|spread] [--out DIR]   (needs py-spy)

The views A/B (bench/cluster_views_ab.py) measures the rate; this says whether the server's own work per view
differs between the topologies. Both `serve --processes 2` run as in the A/B (one profile each, a new visitor
per request); after two warm-up bursts each, py-spy records both workers of one server at 200 Hz while wrk
bursts on it, then the other's. Printed per topology: views/s of the profiled burst, the samples, and the
share of samples in redis-py, in store/stats.py and in the page handler (raw stacks kept in --out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster_views_ab import (
    IPS_PER_BURST,
    PROFILES,
    burst,
    one_profile_document,
    servers_on_both,
    spread_document,
)
from bench.harness import Stack, need_tool

SHARES = {"redis-py": "(redis/", "store/stats.py": "store/stats.py", "handlers/page.py": "handlers/page.py"}


def shares(files: list[Path]) -> tuple[int, dict[str, float]]:
    """Samples in py-spy's raw output (one `frames count` line per stack), and each SHARES entry's share."""
    total, hits = 0, dict.fromkeys(SHARES, 0)
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            for name, needle in SHARES.items():
                if needle in stack:
                    hits[name] += int(count)
    return total, {name: hit / max(1, total) for name, hit in hits.items()}


def record(py_spy: str, pid: str, seconds: int, path: Path) -> subprocess.Popen:
    """py-spy sampling one worker at 200 Hz for `seconds`, raw stacks to `path`, without pausing it."""
    argv = [py_spy, "record", "-p", pid, "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(path)]
    return subprocess.Popen([*argv, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--workload", choices=("one", "spread"), default="one", help="one profile, or 100 in turn")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="views-profile-")))
    args = parser.parse_args()
    beside_python = Path(sys.executable).with_name("py-spy")  # the venv's, when bench/setup installed it there
    py_spy = str(beside_python) if beside_python.exists() else need_tool("py-spy", "pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    with Stack() as stack:
        for name, where in PROFILES.items():
            stack.import_document(f"{name}-one", one_profile_document(*where["one"]))
            if args.workload == "spread":
                stack.import_document(f"{name}-spread", spread_document(*where["spread"]))
        with servers_on_both(stack) as sides:
            servers = sides.servers
            ip = 0
            for _ in range(2):
                for name, (_, port) in servers.items():
                    ip += 1
                    burst(stack, name, port, args.workload, 2, ip * IPS_PER_BURST)
            for name, (proc, port) in servers.items():
                workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                files = [args.out / f"{name}-{pid}.txt" for pid in workers]
                spies = [record(py_spy, pid, args.seconds + 2, path) for pid, path in zip(workers, files, strict=True)]
                time.sleep(1)
                ip += 1
                result = burst(stack, name, port, args.workload, args.seconds, ip * IPS_PER_BURST)
                for spy in spies:
                    spy.wait(timeout=args.seconds + 30)
                total, share = shares(files)
                parts = ", ".join(f"{key} {value:.2%}" for key, value in share.items())
                print(f"{name}: {result['req_per_s']:.0f} views/s; {total} samples; {parts}", flush=True)
    print(f"raw stacks: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
