#!/usr/bin/env python3
"""SSE fan-out benchmark: hepgg_server's presence stream vs nginx + nchan, same client, same run.

    /work/venv/bin/python bench/sse_bench.py [--sizes 1000,5000,10000,19000] [--targets ours,nchan]

For each target, N and layout ("one": all N streams on one user; "spread": N/10 users x 10 streams)
a fresh server process is started (one process / one nginx worker, pinned to CPU 0) and the load
client (bench/sse_load_client.py, its own process, pinned to CPU 1) opens N streams with 1,000
connects in flight. Measured:
  connect/s        N / time until every response head arrived
  KiB/stream       (server RSS after every stream got its first event - RSS before connecting) / N
  fan-out p50/p99  publish -> receipt at the client (ours: Redis PUBLISH; nchan: POST to its publisher)
  probe max        worst latency of a GET to the same server, issued every 5 ms during the one-user fan-outs
Loopback only; every process is stopped at the end. Not a test: prints a table and JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from runtime.embedded import EmbeddedStores  # noqa: E402

PAD = "x" * 150


def pinned(cpu: int):
    def setup() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
            os.sched_setaffinity(0, {cpu})
    return setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_http(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on {port}{path}")


class Ours:
    name = "hepgg (1 process)"
    health = "/healthz"

    def __init__(self, tmp: Path, mongo_uri: str, redis_url: str):
        self.tmp, self.mongo_uri, self.redis_url = tmp, mongo_uri, redis_url
        self.redis = redis.Redis.from_url(redis_url)

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "hepgg_server.py"), "serve", "--port", str(self.port),
             "--mongo-uri", self.mongo_uri, "--redis-url", self.redis_url, "--data-dir", str(self.tmp / "data"),
             "--log-level", "warning", "--sse-max-streams", "19990", "--processes", "1"],
            cwd=ROOT, preexec_fn=pinned(0), stdout=subprocess.DEVNULL)
        wait_http(self.port, self.health)
        time.sleep(0.5)

    path_format = "/api/v1/profiles/presence/b{}/stream"

    def publish(self, user: int, payload: str) -> None:
        self.redis.publish(f"presence:b{user}", payload)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Nchan:
    name = "nginx+nchan (1 worker)"
    health = "/health"

    def __init__(self, tmp: Path):
        self.tmp = tmp / "nginx"
        self.tmp.mkdir(exist_ok=True)
        self._pub: http.client.HTTPConnection | None = None

    def start(self) -> None:
        self.port = free_port()
        conf = self.tmp / "nginx.conf"
        conf.write_text(f"""
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 20000;
error_log {self.tmp}/error.log warn; pid {self.tmp}/nginx.pid;
events {{ worker_connections 20000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {self.tmp}/body; proxy_temp_path {self.tmp}/proxy;
  fastcgi_temp_path {self.tmp}/fcgi; uwsgi_temp_path {self.tmp}/uwsgi; scgi_temp_path {self.tmp}/scgi;
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location ~ ^/sub/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; nchan_subscriber_first_message newest; }}
    location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 1; }}
    location = /health {{ return 200 "ok"; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.tmp)], preexec_fn=pinned(0),
                                     stdout=subprocess.DEVNULL)
        wait_http(self.port, self.health)
        self._pub = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    path_format = "/sub/b{}"

    def publish(self, user: int, payload: str) -> None:
        self._pub.request("POST", f"/pub/b{user}", body=payload, headers={"Content-Type": "application/json"})
        self._pub.getresponse().read()

    def stop(self) -> None:
        if self._pub:
            self._pub.close()
        self.proc.terminate()
        self.proc.wait(30)


class Client:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sse_load_client.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(1))

    def call(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def payload(seq: int) -> str:
    return json.dumps({"status": "online", "activity": {"name": "bench", "type": 0, "details": PAD},
                       "seq": seq, "t": time.time_ns()}, separators=(",", ":"))


class Probe(threading.Thread):
    """GET the server every 5 ms and keep the worst latency: does a fan-out stall other requests?"""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.samples: list[float] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            conn.request("GET", self.path)
            conn.getresponse().read()
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)
        conn.close()


def scenario(target, client: Client, n: int, layout: str, events: int, spread_events: int) -> dict:
    users = 1 if layout == "one" else max(1, n // 10)
    target.start()
    try:
        pid = target.proc.pid
        before = rss_kib(pid)
        connect = client.call(cmd="connect", port=target.port, path_format=target.path_format, users=users,
                              n=n, inflight=1000)
        time.sleep(0.3)
        for user in range(users):  # the first event on every stream
            target.publish(user, payload(0))
        client.call(cmd="wait", count=connect["connected"], timeout=60)
        time.sleep(0.5)
        after = rss_kib(pid)
        client.call(cmd="stats")  # reset
        probe = None
        if layout == "one":
            probe = Probe(target.port, target.health)
            probe.start()
            for seq in range(1, events + 1):
                target.publish(0, payload(seq))
                client.call(cmd="wait", count=seq * connect["connected"], timeout=30)
                time.sleep(0.2)
            probe.stop_flag.set()
            probe.join()
        else:
            for seq in range(1, spread_events + 1):
                target.publish(random.randrange(users), payload(seq))
                time.sleep(0.003)
            client.call(cmd="wait", count=spread_events * (connect["connected"] // users), timeout=30)
        stats = client.call(cmd="stats")
        client.call(cmd="close")
        result = {"target": target.name, "n": n, "layout": layout, "connected": connect["connected"],
                  "connect_per_s": connect["per_second"], "kib_per_stream": round((after - before) / n, 2),
                  "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
                  "fanout_p50_ms": stats["p50_ms"], "fanout_p99_ms": stats["p99_ms"], "fanout_max_ms": stats["max_ms"],
                  "deliveries": stats["n"]}
        if probe and probe.samples:
            samples = sorted(probe.samples)
            result["probe_p50_ms"] = round(samples[len(samples) // 2], 2)
            result["probe_max_ms"] = round(samples[-1], 2)
        return result
    finally:
        target.stop()
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000,19000")
    parser.add_argument("--targets", default="ours,nchan")
    parser.add_argument("--layouts", default="one,spread")
    parser.add_argument("--events", type=int, default=5, help="one-user fan-outs per scenario")
    parser.add_argument("--spread-events", type=int, default=300, help="publishes to random users (spread layout)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sse-bench-"))
    stores = EmbeddedStores(tmp / "stores")
    endpoints = stores.start()
    client = Client()
    results = []
    try:
        targets = {"ours": lambda: Ours(tmp, endpoints.mongo_uri, endpoints.redis_url), "nchan": lambda: Nchan(tmp)}
        for n in sizes:
            for layout in args.layouts.split(","):
                for key in args.targets.split(","):
                    result = scenario(targets[key](), client, n, layout, args.events, args.spread_events)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        client.stop()
        stores.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'target':24} {'N':>6} {'layout':7} {'conn/s':>8} {'KiB/str':>8} {'p50 ms':>8} {'p99 ms':>8} {'probe max':>9}")
    for r in results:
        print(f"{r['target']:24} {r['n']:>6} {r['layout']:7} {r['connect_per_s']:>8} {r['kib_per_stream']:>8} "
              f"{r['fanout_p50_ms']:>8} {r['fanout_p99_ms']:>8} {r.get('probe_max_ms', ''):>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
