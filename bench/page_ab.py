"""Page renders/s of this checkout against another one (e.g. main), interleaved in one run.

    python -m bench.page_ab --base DIR [--rounds 8] [--seconds 3] [--connections 32]

`bench/run --only page` on two checkouts one after the other compares two moments of a shared machine:
here a neighbour's load swung single runs by 2-3x. This starts both servers at once (same stores, same
profile as bench/page_bench.py, both pinned to the server CPU) and alternates short wrk bursts between
them, swapping which goes first each round, so both see the same machine. It prints each round's
renders/s and the median of the per-round ratios (ours / base). DIR is a checkout with its own
hepgg_server.py, e.g. `git worktree add /tmp/base main` or `git archive main | tar -x -C /tmp/base`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench.harness import BROWSER_UA, PYTHON, Stack, free_port, unique_ip_lua, wait_http, wrk
from bench.page_bench import HOST, VISITORS_LUA, document


def start_base(stack: Stack, base: Path) -> int:
    port = free_port()
    argv = [PYTHON, str(base / "hepgg_server.py"), "serve", "--processes", "1", "--port", str(port)]
    argv += ["--log-level", "warning", *stack.store_flags(), "--view-flush-interval", "1"]
    argv += ["--trusted-proxies", "127.0.0.1/32"]
    proc = stack.spawn("base", argv, env=stack.hepgg_env(), cwd=base)
    wait_http(port, "/healthz", proc, 90, "base")
    return port


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
    ratios = []
    with Stack() as stack:
        stack.import_document("page", document())
        _, ours = stack.hepgg("--view-flush-interval", "1", "--trusted-proxies", "127.0.0.1/32")
        theirs = start_base(stack, base)
        sizes = {}
        for name, port in (("ours", ours), ("base", theirs)):
            page = wrk(stack, f"http://127.0.0.1:{port}/", connections=1, seconds=1, headers=headers)
            sizes[name] = page["bytes"] / max(1, page["requests"])
        print(f"response bytes per page: ours {sizes['ours']:.0f}, base {sizes['base']:.0f}")
        for round_no in range(args.rounds):
            order = [("ours", ours), ("base", theirs)]
            if round_no % 2:
                order.reverse()
            rates = {}
            for index, (name, port) in enumerate(order):
                lua = unique_ip_lua((round_no * 2 + index) << 22) + VISITORS_LUA  # every request a new visitor
                rates[name] = wrk(
                    stack,
                    f"http://127.0.0.1:{port}/",
                    connections=args.connections,
                    seconds=args.seconds,
                    headers=headers,
                    lua=lua,
                )["req_per_s"]
            ratios.append(rates["ours"] / rates["base"])
            print(
                f"round {round_no + 1}: ours {rates['ours']:.0f}/s, base {rates['base']:.0f}/s, ratio {ratios[-1]:.3f}"
            )
    print(f"median ratio ours/base: {statistics.median(ratios):.3f} over {len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
