"""OG card benchmark: our wand card vs the same card drawn by satori + resvg, in one run.

    /work/venv/bin/python bench/og_bench.py [--renders 150] [--seconds 8] [--connections 32]

Measures, all on 127.0.0.1:
  1. cold render p50/p95 through the real render pool (one process, one card at a
     time, a different name per card so the PNG cache never answers);
  2. renders/s with 1 and 2 render processes (2 cards in flight per process);
  3. the same card drawn by satori + @resvg/resvg-js (bench/og-satori, `npm ci` first),
     p50/p95 in one node process and renders/s with 1 and 2 node processes;
  4. cached req/s over HTTP against a real `hepgg_server.py serve` process (one
     worker), from a keep-alive load generator in another process.
Prints a table with ratios. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from og.pool import RenderPool  # noqa: E402
from og.service import SAMPLE  # noqa: E402
from render.og_card import CardInput  # noqa: E402

BIO = "Hello there, I build things with Tornado and ImageMagick. Hello there, I build things with Tornado and ImageMagick."
SATORI_DIR = ROOT / "bench" / "og-satori"


def card(i: int, theme_from: str = "#0b0b10") -> CardInput:
    name = f"Alice Example {i}"
    return CardInput(display_name=name, bio=BIO, domain="alice.hep.gg", accent="#7c3aed", background_from=theme_from,
                     background_to="#302b63", gradient_angle=135, font="Inter", initials="AE")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---------------------------------------------------------------- wand through the pool

async def wand_latency(n: int) -> dict:
    pool = RenderPool(1)
    await pool.start(SAMPLE)
    for i in range(10):
        await pool.render(card(-i - 1))
    times, size = [], 0
    for i in range(n):
        started = time.perf_counter()
        png = await pool.render(card(i))
        times.append((time.perf_counter() - started) * 1000)
        size = len(png)
    # Fully cold: a theme never seen (background drawn too) on every card.
    cold_theme = []
    for i in range(min(n, 40)):
        started = time.perf_counter()
        await pool.render(card(10_000 + i, theme_from="#%06x" % (0x101010 + i * 7)))
        cold_theme.append((time.perf_counter() - started) * 1000)
    await pool.close()
    return {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "bytes": size,
            "new_theme_p50_ms": pct(cold_theme, 0.5), "new_theme_p95_ms": pct(cold_theme, 0.95)}


async def wand_throughput(processes: int, n: int) -> float:
    pool = RenderPool(processes)
    await pool.start(SAMPLE)
    for i in range(10):
        await pool.render(card(-i - 100))
    queue = iter(range(n))

    async def lane() -> None:
        for i in queue:
            await pool.render(card(50_000 + i))

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(processes * 2)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return n / elapsed


# ---------------------------------------------------------------- satori

def satori(n: int, processes: int) -> dict | None:
    if not (SATORI_DIR / "node_modules").is_dir():
        print("bench/og-satori/node_modules missing: run `npm ci` there; skipping satori", file=sys.stderr)
        return None
    per = max(1, n // processes) if processes > 1 else n
    runs = [subprocess.Popen(["node", "render.mjs", str(per), "10"], cwd=SATORI_DIR, stdout=subprocess.PIPE, text=True)
            for _ in range(processes)]
    results = [json.loads(run.communicate(timeout=300)[0]) for run in runs]
    return {"p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p95_ms": max(r["p95_ms"] for r in results),
            "renders_per_s": sum(r["renders_per_s"] for r in results), "bytes": results[0]["bytes"]}


# ---------------------------------------------------------------- cached HTTP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_worker(port: int, path: str, connections: int, seconds: float, out) -> None:
    """One process of keep-alive GET loops; sends (requests, errors) back."""

    async def one(deadline: float) -> tuple[int, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET {path} HTTP/1.1\r\nHost: bench.local\r\n\r\n".encode()
        done = errors = 0
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                done += 1
            else:
                errors += 1
        writer.close()
        return done, errors

    async def main() -> tuple[int, int]:
        deadline = time.perf_counter() + seconds
        results = await asyncio.gather(*(one(deadline) for _ in range(connections)))
        return sum(r[0] for r in results), sum(r[1] for r in results)

    out.send(asyncio.run(main()))


def cached_http(seconds: float, connections: int, log_level: str) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="og-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    common = ["--data-dir", str(data_dir), "--log-level", log_level]
    server = subprocess.Popen([sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--port", str(port),
                               "--processes", "1", "--og-render-processes", "1", *common],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.2)
        doc = {"users": [{"id": "u1"}], "profiles": [{
            "id": "p1", "owner_id": "u1", "domain": "alice.hep.gg", "is_public": 1,
            "theme": {"accent": "#7c3aed", "background": {"from": "#0b0b10", "to": "#302b63", "angle": 135}},
            "content": {"display_name": "Alice Example", "bio": BIO}}]}
        doc_path = data_dir / "doc.json"
        doc_path.write_text(json.dumps(doc))
        subprocess.run([sys.executable, str(ROOT / "hepgg_server.py"), "import", str(doc_path), *common],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        path = "/api/v1/profiles/p1/og.png"
        check = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}"],
                               capture_output=True, text=True, timeout=30)
        assert check.stdout == "200", check.stdout
        parent, child = multiprocessing.Pipe()
        load = multiprocessing.get_context("spawn").Process(target=load_worker,
                                                            args=(port, path, connections, seconds, child))
        started = time.perf_counter()
        load.start()
        done, errors = parent.recv()
        elapsed = time.perf_counter() - started
        load.join()
        return {"req_per_s": done / seconds, "errors": errors, "elapsed_s": elapsed}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


# ---------------------------------------------------------------- report

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=150, help="measured renders per latency/throughput run")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of the cached HTTP run")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections for the HTTP run")
    parser.add_argument("--server-log-level", default="info",
                        help="the server's --log-level (info writes an access log line per request, to /dev/null here)")
    args = parser.parse_args()

    wand = asyncio.run(wand_latency(args.renders))
    wand_1 = asyncio.run(wand_throughput(1, args.renders))
    wand_2 = asyncio.run(wand_throughput(2, args.renders))
    sat_1 = satori(args.renders, 1)
    sat_2 = satori(args.renders, 2)
    http = cached_http(args.seconds, args.connections, args.server_log_level)

    def ratio(ours: float, theirs: float | None) -> str:
        return f"{ours / theirs:.2f}x" if theirs else "n/a"

    rows = [
        ("cold render p50 (ms)", wand["p50_ms"], sat_1 and sat_1["p50_ms"]),
        ("cold render p95 (ms)", wand["p95_ms"], sat_1 and sat_1["p95_ms"]),
        ("renders/s, 1 process", wand_1, sat_1 and sat_1["renders_per_s"]),
        ("renders/s, 2 processes", wand_2, sat_2 and sat_2["renders_per_s"]),
        ("PNG bytes", wand["bytes"], sat_1 and sat_1["bytes"]),
    ]
    print(f"\n{'metric':<34}{'wand (ours)':>14}{'satori+resvg':>14}{'ours/satori':>13}")
    for label, ours, theirs in rows:
        print(f"{label:<34}{ours:>14.1f}{(theirs or float('nan')):>14.1f}{ratio(ours, theirs):>13}")
    print(f"{'cold, new theme too, p50/p95 (ms)':<34}{wand['new_theme_p50_ms']:>8.1f} / {wand['new_theme_p95_ms']:.1f}")
    print(f"{'cached HTTP req/s (1 worker)':<34}{http['req_per_s']:>14.0f}   (target >= 2000; "
          f"{args.connections} keep-alive connections, {args.seconds:.0f} s, "
          f"log level {args.server_log_level}, errors {http['errors']})")
    print("latency ratio < 1.00x means ours is faster; throughput ratio > 1.00x means ours is faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
