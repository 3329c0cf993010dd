#!/usr/bin/env python3
"""Page A/B: GET / of a published profile (view recording on) per build, and nginx serving the same HTML as a file.

    /work/venv/bin/python bench/profile/page_ab.py --build base=/tmp/perf-base --build new=. \
        [--seconds 5] [--connections 32] [--rounds 3] [--spy DIR]

Builds as in music_ab.py (LABEL=TREE[:ENV=VALUE,...]); each server is started by bench/music_bench.py's
start_hepgg (embedded stores, one process, one imported profile `bench.hep.gg`). The load client is its own
process: `connections` keep-alive HTTP/1.1 connections sending GET / with a browser User-Agent (so every
request records a view) as fast as answers come, for `seconds`. Rounds alternate the targets. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from spy import Spy, print_table, top_frames  # noqa: E402

_spec = importlib.util.spec_from_file_location("music_bench", ROOT / "bench" / "music_bench.py")
mb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mb)

HOST = "bench.hep.gg"
UA = "Mozilla/5.0 (X11; Linux x86_64) page-bench"


class Conn(asyncio.Protocol):
    def __init__(self, request: bytes, counter: list[int], stop_at: float):
        self.request, self.counter, self.stop_at = request, counter, stop_at
        self.buf = b""
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length: " in head else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.counter[0 if head.startswith(b"http/1.1 200") else 1] += 1
            if time.monotonic() >= self.stop_at:
                self.transport.close()
                return
            self.transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def client(port: int, connections: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {UA}\r\n\r\n".encode()
    counter = [0, 0]
    started = time.monotonic()
    conns = [(await loop.create_connection(lambda: Conn(request, counter, started + seconds), "127.0.0.1", port))[1]
             for _ in range(connections)]
    await asyncio.gather(*(c.done for c in conns))
    wall = time.monotonic() - started
    return {"ok": counter[0], "other": counter[1], "req_s": round(counter[0] / wall, 1)}


def run_client(port: int, connections: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--client", str(port), "--connections", str(connections),
                          "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    return json.loads(out.stdout)


NGINX_STATIC = """
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir};
    location = / {{ default_type "text/html; charset=utf-8"; try_files /page.html =404; }}
  }}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--build", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spy", default=None)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.connections, args.seconds))))
        return 0
    mb.raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="page-ab-"))
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        targets = {}
        for text in args.build:
            label, _, rest = text.partition("=")
            tree, _, env = rest.partition(":")
            build_dir = workdir / label
            build_dir.mkdir()
            mb.ROOT = Path(tree).resolve()
            port = mb.free_port()
            proc = mb.start_hepgg(build_dir, port, mb.free_port(),
                                  dict(item.split("=", 1) for item in env.split(",") if item))
            procs.append(proc)
            targets[label] = (proc.pid, port)
        for _, port in targets.values():
            mb.wait_port(port, 120)
        first = next(iter(targets.values()))[1]
        html = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{first}/",
                                                             headers={"Host": HOST, "User-Agent": "bench-bot"})).read()
        (workdir / "page.html").write_bytes(html)
        nginx_port = mb.free_port()
        nginx = mb.start_nginx(workdir, "static", NGINX_STATIC.format(port=nginx_port, dir=workdir))
        procs.append(nginx)
        mb.wait_port(nginx_port)
        targets["nginx"] = (mb.nginx_worker(nginx), nginx_port)
        for round_no in range(args.rounds):
            for name, (pid, port) in targets.items():
                spy = None
                if args.spy and round_no == 0 and name != "nginx":
                    Path(args.spy).mkdir(parents=True, exist_ok=True)
                    spy = Spy(pid, Path(args.spy) / f"page-{name}.txt")
                    time.sleep(0.5)
                cpu0 = mb.proc_cpu(pid)
                row = run_client(port, args.connections, args.seconds)
                row.update(target=name, round=round_no, cpu_ms_per_req=round(1000 * (mb.proc_cpu(pid) - cpu0)
                                                                             / max(1, row["ok"]), 3))
                if spy is not None:
                    print_table(f"page {name}", top_frames(spy.stop()))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGQUIT if proc is procs[-1] and "nginx" in str(proc.args) else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds, {args.connections} connections, {len(html)} byte page")
    print(f"{'target':8} {'req/s':>8} {'x nginx':>8} {'CPU ms/req':>10}")
    for name in targets:
        mine = [r for r in rows if r["target"] == name]
        ratios = [r["req_s"] / next(p["req_s"] for p in rows if p["target"] == "nginx" and p["round"] == r["round"])
                  for r in mine]
        print(f"{name:8} {statistics.median(r['req_s'] for r in mine):>8} {round(statistics.median(ratios), 3):>8} "
              f"{statistics.median(r['cpu_ms_per_req'] for r in mine):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
