"""Page renders/s of this checkout against another one (e.g. main), interleaved in one run.

    python -m bench.page_ab --base DIR [--rounds 8] [--seconds 3] [--connections 32]

`bench/run --only page` on two checkouts one after the other compares two moments of a shared machine:
here a neighbour's load swung single runs by 2-3x. This starts both servers at once (same stores, same
profile as bench/page_bench.py, both pinned to the server CPU) and alternates short wrk bursts between
them, swapping which goes first each round, so both see the same machine. It prints each round's
renders/s and the median of the per-round ratios (ours / base), and the server CPU time each spent per
page (its process tree's user+system time from /proc over the burst, divided by the pages served): a
neighbour's load steals wall time from both, but changes a page's CPU cost much less. DIR is a checkout with its own
hepgg_server.py, e.g. `git worktree add /tmp/base main` or `git archive main | tar -x -C /tmp/base`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from bench.harness import BROWSER_UA, PYTHON, Stack, free_port, unique_ip_lua, wait_http, wrk
from bench.page_bench import HOST, VISITORS_LUA, document


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (those alive now), from /proc."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))  # fields[1]: ppid
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def start_base(stack: Stack, base: Path) -> tuple[int, int]:
    port = free_port()
    argv = [PYTHON, str(base / "hepgg_server.py"), "serve", "--processes", "1", "--port", str(port)]
    argv += ["--log-level", "warning", *stack.store_flags(), "--view-flush-interval", "1"]
    argv += ["--trusted-proxies", "127.0.0.1/32"]
    proc = stack.spawn("base", argv, env=stack.hepgg_env(), cwd=base)
    wait_http(port, "/healthz", proc, 90, "base")
    return proc.pid, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the other checkout (its hepgg_server.py runs)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "hepgg_server.py").exists():
        parser.error(f"{base} has no hepgg_server.py")
    headers = {"Host": HOST, "User-Agent": BROWSER_UA}
    ratios, cpu_ratios = [], []
    with Stack() as stack:
        stack.import_document("page", document())
        our_proc, ours = stack.hepgg("--view-flush-interval", "1", "--trusted-proxies", "127.0.0.1/32")
        base_pid, theirs = start_base(stack, base)
        pids = {"ours": our_proc.pid, "base": base_pid}
        sizes = {}
        for name, port in (("ours", ours), ("base", theirs)):
            page = wrk(stack, f"http://127.0.0.1:{port}/", connections=1, seconds=1, headers=headers)
            sizes[name] = page["bytes"] / max(1, page["requests"])
        print(f"response bytes per page: ours {sizes['ours']:.0f}, base {sizes['base']:.0f}")
        for round_no in range(args.rounds):
            order = [("ours", ours), ("base", theirs)]
            if round_no % 2:
                order.reverse()
            rates, cpu_ms = {}, {}
            for index, (name, port) in enumerate(order):
                lua = unique_ip_lua((round_no * 2 + index) << 22) + VISITORS_LUA  # every request a new visitor
                cpu_before = cpu_seconds(pids[name])
                result = wrk(
                    stack,
                    f"http://127.0.0.1:{port}/",
                    connections=args.connections,
                    seconds=args.seconds,
                    headers=headers,
                    lua=lua,
                )
                rates[name] = result["req_per_s"]
                cpu_ms[name] = 1000 * (cpu_seconds(pids[name]) - cpu_before) / max(1, result["requests"])
            ratios.append(rates["ours"] / rates["base"])
            cpu_ratios.append(cpu_ms["ours"] / cpu_ms["base"])
            print(
                f"round {round_no + 1}: ours {rates['ours']:.0f}/s, base {rates['base']:.0f}/s, ratio {ratios[-1]:.3f};"
                f" CPU per page ours {cpu_ms['ours']:.2f} ms, base {cpu_ms['base']:.2f} ms, ratio {cpu_ratios[-1]:.3f}"
            )
    print(f"median ratio ours/base: {statistics.median(ratios):.3f} over {len(ratios)} rounds")
    print(f"median CPU-per-page ratio ours/base: {statistics.median(cpu_ratios):.3f} (below 1: ours is cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
