"""Legitimate visitors under attack: page p99, music time to first byte and SSE fan-out p99, vs idle.

    bench/run --only attack [--quick]

One server (`serve --processes 1` on CPU 0, its defaults: 256 connections per address, 32 music streams
per address, fd-fitted stream caps), an nginx music upstream serving a 5 MB file, and for each attack in
turn a client process (bench/attack_client.py, CPU 1) that first sets the attack up from 127.0.0.1 and
then, while it holds, measures visitors from 127.0.0.2: a page GET every 50 ms, a music GET every 250 ms,
20 SSE listeners receiving a PUBLISH every 250 ms. The idle run is the baseline of the same run. Per
attack: the three p99s against idle (target <= 2x), legitimate failures (target 0), the server's RSS
after, and its log lines per second.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from bench.harness import CLIENT_CPU, PYTHON, Stack, free_port, rss_bytes
from bench.music_bench import ISRC, UPSTREAM
from bench.music_bench import document as music_document
from bench.page_bench import HOST as PAGE_HOST
from bench.page_bench import document as page_document
from bench.results import BenchResult, Figure, Target

P99_TARGET = Target("ratio<=", 2.0, "issue 18: legitimate p99 <= 2x idle, same run")
FAILURES_TARGET = Target("<=", 0, "issue 18: zero legitimate failures")


def run(stack: Stack, quick: bool) -> BenchResult:
    result = BenchResult("attack")
    seconds = 5 if quick else 10
    sizes = (
        {"music": 500, "silent": 2000, "sse": 2000, "storm": 50}
        if quick
        else {
            "music": 2000,
            "silent": 18000,
            "sse": 19000,
            "storm": 200,
        }
    )
    (stack.tmp / "track.bin").write_bytes(os.urandom(5_000_000))
    upstream_port = free_port()
    stack.nginx("upstream", UPSTREAM.format(port=upstream_port, dir=stack.tmp), cpu=CLIENT_CPU, port=upstream_port)
    stack.import_document("music", music_document())
    stack.import_document("page", page_document())
    server, port = stack.hepgg(
        "--music-upstream-url",
        f"http://127.0.0.1:{upstream_port}",
        "--connections-per-address",
        "256",  # the default, over the harness's "one address is many visitors"
        name="hepgg-attack",
    )
    [log_path] = sorted(stack.tmp.glob("hepgg-attack-*.log"))
    runs: dict[str, dict] = {}
    for attack in ("idle", "music", "silent", "sse", "storm"):
        args = {
            "port": port,
            "redis_url": stack.redis_url,
            "attack": attack,
            "attackers": sizes.get(attack, 0),
            "storm": sizes["storm"],
            "seconds": seconds,
            "music_path": f"/api/v1/profiles/mu1/music/{ISRC}",
            "page_host": PAGE_HOST,
            "user": f"atk{attack}",
            "listeners": 20,
        }
        lines_before = len(log_path.read_text(errors="replace").splitlines())
        started = time.monotonic()
        client = stack.spawn(
            f"attack-{attack}",
            [PYTHON, "-m", "bench.attack_client", json.dumps(args)],
            cpu=CLIENT_CPU,
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = client.communicate(timeout=seconds * 4 + 120)
        elapsed = time.monotonic() - started
        runs[attack] = json.loads(out.strip().splitlines()[-1])
        runs[attack]["rss_mb"] = rss_bytes(server.pid) / 2**20
        runs[attack]["log_lines_per_s"] = (
            len(log_path.read_text(errors="replace").splitlines()) - lines_before
        ) / elapsed
        time.sleep(2)  # the attack's connections close and the server settles
    idle = runs["idle"]
    for attack, run_ in runs.items():
        size = f"{attack} ({sizes[attack]})" if attack in sizes else attack
        for key, label in (
            ("page_p99_ms", "page p99"),
            ("music_ttfb_p99_ms", "music TTFB p99"),
            ("sse_p99_ms", "SSE fan-out p99"),
        ):
            result.figures.append(
                Figure(
                    "attack",
                    label,
                    size,
                    "ms",
                    run_[key],
                    idle[key],
                    "idle, same run",
                    None if attack == "idle" else P99_TARGET,
                )
            )
        result.figures.append(
            Figure(
                "attack",
                "legitimate failures",
                size,
                "count",
                run_["failure_count"],
                target=FAILURES_TARGET,
                note="; ".join(run_["failures"][:3]),
            )
        )
        note = f"attack refused {run_['attack_refused']}" if "attack_refused" in run_ else ""
        if "storm" in run_:
            note = f"storm: {run_['storm']['streams']} streams, {run_['storm']['errors']} errors"
        result.figures.append(Figure("attack", "server RSS", size, "MB", run_["rss_mb"], note=note))
        result.figures.append(Figure("attack", "server log lines/s", size, "lines/s", run_["log_lines_per_s"]))
    result.series = {"runs": runs}
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.attack_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "attack", *sys.argv[1:]]))
