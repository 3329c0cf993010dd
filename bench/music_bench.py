#!/usr/bin/env python3
"""Music proxy benchmark: hepgg_server (one process) vs nginx proxy_pass vs straight from the upstream.

    /work/venv/bin/python bench/music_bench.py [--streams 50,500,1000] [--size-mb 5]
        [--slow 1000] [--slow-seconds 20] [--skip-slow]

Everything runs on 127.0.0.1 in one go, so the ratios come from the same run:
- upstream: nginx (1 worker, sendfile) serving one 5 MB file at /tracks/<ISRC>;
- nginx proxy: a second nginx (1 worker) with `proxy_pass`, `proxy_buffering off`, 64k buffers;
- hepgg: `hepgg_server.py serve --processes 1` with embedded stores and a profile whose owner has a key.
The load client is another process (`--client`, one asyncio protocol per stream; the hard fd limit is
20,000 per process). Per target and concurrency: MiB/s (all bytes / wall time), p99 stream time, the
target process's CPU seconds per GiB moved, its peak RSS. Then `--slow` listeners reading at 40 KB/s
for `--slow-seconds`: RSS growth per stream. Other processes' CPU during each run is recorded (the
machine is shared). Output: a Markdown table on stdout and JSON in bench/results/music-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ISRC = "USRC17607839"
PROFILE_PATH = f"/api/v1/profiles/p1/music/{ISRC}"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- load client (its own process)

class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future, rate: float | None):
        self.request = request
        self.done = done
        self.rate = rate  # bytes/s for slow listeners
        self.head = b""
        self.length: int | None = None
        self.got = 0
        self.started = time.monotonic()
        self.transport = None
        self.loop = asyncio.get_running_loop()
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.length is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                self._finish(f"status {status}")
                return
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
            if self.length is None:
                self._finish("no content-length")
                return
            self.head = b""
        self.got += len(data)
        if self.got >= self.length:
            self._finish(None)
        elif self.rate and not self.paused:
            ahead = self.got / self.rate - (time.monotonic() - self.started)
            if ahead > 0.05:
                self.paused = True
                self.transport.pause_reading()
                self.loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result((error, time.monotonic() - self.started, self.got))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result((f"closed after {self.got} bytes", time.monotonic() - self.started, self.got))


async def open_stream(port: int, path: str, rate: float | None, rcvbuf: int | None) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    done = loop.create_future()
    request = f"GET {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: music-bench\r\nConnection: close\r\n\r\n".encode()
    await loop.create_connection(lambda: Stream(request, done, rate), sock=sock)
    return done


async def client_main(args) -> dict:
    rate = args.rate or None
    started = time.monotonic()
    futures = []
    for i in range(args.concurrency):  # connect in small batches so the backlog never overflows
        futures.append(open_stream(args.port, args.path, rate, 65536 if rate else None))
        if len(futures) % 100 == 0:
            await asyncio.sleep(0)
    dones = await asyncio.gather(*futures)
    if args.hold:
        # Slow listeners: report when all are streaming, hold, then leave.
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.sleep(args.hold)
        return {"held": args.concurrency, "finished_early": sum(d.done() for d in dones)}
    results = await asyncio.gather(*dones)
    wall = time.monotonic() - started
    times = sorted(r[1] for r in results)
    errors = [r[0] for r in results if r[0]]
    total = sum(r[2] for r in results)
    return {
        "streams": args.concurrency, "errors": len(errors), "first_error": errors[0] if errors else None,
        "bytes": total, "wall": wall, "mib_s": total / wall / 2**20,
        "p50": times[len(times) // 2], "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


# ---------------------------------------------------------------- driver

def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def system_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_of(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


NGINX_COMMON = """
worker_processes 1;
daemon off;
master_process on;
user root root;
worker_rlimit_nofile 20000;
error_log {dir}/{name}-error.log warn;
pid {dir}/{name}.pid;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  keepalive_requests 100000;
  {body}
}}
"""

UPSTREAM_BODY = """
  sendfile on;
  tcp_nopush on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir};
    location /tracks/ {{ default_type audio/mpeg; try_files /track.bin =404; }}
  }}
"""

PROXY_BODY = """
  upstream music {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://music/tracks/{isrc};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
    }}
  }}
"""


def start_nginx(workdir: Path, name: str, body: str) -> subprocess.Popen:
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=workdir, name=name, body=body))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=raise_fd_limit)
    return proc


def nginx_worker(master: subprocess.Popen) -> int:
    for _ in range(50):
        kids = children_of(master.pid)
        if kids:
            return kids[0]
        time.sleep(0.1)
    raise RuntimeError("nginx worker not found")


def start_hepgg(workdir: Path, port: int, upstream_port: int, extra: dict[str, str]) -> subprocess.Popen:
    data_dir = workdir / "hepgg-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    env.update({"HEPGG_DATA_DIR": str(data_dir), "HEPGG_MUSIC_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
                "HEPGG_LOG_LEVEL": "warning", "HEPGG_PROCESSES": "1", **extra})
    document = {
        "users": [{"id": "u1", "premium_until": "2099-01-01T00:00:00Z",
                   "music": {"enabled": True, "key": "bench-music-key"}}],
        "profiles": [{"id": "p1", "owner_id": "u1", "domain": "bench.hep.gg", "is_public": 1,
                      "content": {"music": [{"isrc": ISRC, "title": "Bench", "artist": "Bench"}]}}],
    }
    (workdir / "import.json").write_text(json.dumps(document))
    subprocess.run([PYTHON, str(ROOT / "hepgg_server.py"), "import", str(workdir / "import.json")],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([PYTHON, str(ROOT / "hepgg_server.py"), "serve", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(workdir / "hepgg.log", "w"),
                            preexec_fn=raise_fd_limit)
    return proc


def run_client(port: int, path: str, concurrency: int, rate: float = 0, hold: float = 0,
               on_ready=None) -> dict:
    cmd = [PYTHON, __file__, "--client", "--port", str(port), "--path", path, "--concurrency", str(concurrency),
           "--rate", str(rate), "--hold", str(hold)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=raise_fd_limit)
    result = None
    for line in proc.stdout:
        data = json.loads(line)
        if data.get("ready") and on_ready is not None:
            on_ready()
        else:
            result = data
    proc.wait(timeout=300)
    return result


def measure(target: str, pid: int, port: int, path: str, concurrency: int) -> dict:
    cpu0, busy0 = proc_cpu(pid), system_busy()
    peak = [proc_rss(pid)]
    client = {}

    def sample() -> None:
        peak[0] = max(peak[0], proc_rss(pid))

    import threading
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.2):
            sample()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    client_cpu0 = os.times()
    client = run_client(port, path, concurrency)
    stop.set()
    thread.join()
    cpu = proc_cpu(pid) - cpu0
    busy = system_busy() - busy0
    children = os.times()
    client_cpu = (children.children_user + children.children_system) - (client_cpu0.children_user + client_cpu0.children_system)
    gib = client["bytes"] / 2**30
    return {"target": target, **client, "cpu_s": cpu, "cpu_s_per_gib": cpu / gib if gib else None,
            "rss_peak_mib": peak[0] / 2**20, "client_cpu_s": client_cpu,
            "other_cpu_s": max(0.0, busy - cpu - client_cpu)}


def slow_phase(target: str, pid: int, port: int, path: str, listeners: int, seconds: float) -> dict:
    before = proc_rss(pid)
    samples: list[int] = []

    def ready() -> None:
        # All listeners are streaming: sample RSS through the hold.
        deadline = time.monotonic() + seconds - 1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            samples.append(proc_rss(pid))

    result = run_client(port, path, listeners, rate=40_000, hold=seconds, on_ready=ready)
    peak = max(samples) if samples else proc_rss(pid)
    return {"target": target, "listeners": listeners, "rss_before_mib": before / 2**20, "rss_peak_mib": peak / 2**20,
            "kib_per_stream": (peak - before) / listeners / 1024, "finished_early": result.get("finished_early")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--streams", default="50,500,1000")
    parser.add_argument("--size-mb", type=float, default=5)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--slow-seconds", type=float, default=20)
    parser.add_argument("--skip-slow", action="store_true")
    parser.add_argument("--skip-fast", action="store_true")
    parser.add_argument("--chunk-bytes", type=int, default=0, help="hepgg --music-chunk-bytes (default: its own)")
    parser.add_argument("--high-water", type=int, default=0, help="hepgg --music-high-water (default: its own)")
    args = parser.parse_args()
    if args.client:
        raise_fd_limit()
        print(json.dumps(asyncio.run(client_main(args))), flush=True)
        return 0

    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="music-bench-"))
    (workdir / "track.bin").write_bytes(os.urandom(int(args.size_mb * 1_000_000)))
    ports = {"upstream": free_port(), "nginx": free_port(), "hepgg": free_port()}
    procs: list[subprocess.Popen] = []
    results: dict = {"size_bytes": int(args.size_mb * 1_000_000), "runs": [], "slow": []}
    try:
        upstream = start_nginx(workdir, "upstream", UPSTREAM_BODY.format(port=ports["upstream"], dir=workdir))
        procs.append(upstream)
        proxy = start_nginx(workdir, "proxy", PROXY_BODY.format(port=ports["nginx"], upstream=ports["upstream"], isrc=ISRC))
        procs.append(proxy)
        extra = {}
        if args.chunk_bytes:
            extra["HEPGG_MUSIC_CHUNK_BYTES"] = str(args.chunk_bytes)
        if args.high_water:
            extra["HEPGG_MUSIC_HIGH_WATER"] = str(args.high_water)
        results["hepgg_settings"] = extra
        hepgg = start_hepgg(workdir, ports["hepgg"], ports["upstream"], extra)
        procs.append(hepgg)
        for port in ports.values():
            wait_port(port, 120)
        targets = {
            "direct": (nginx_worker(upstream), ports["upstream"], f"/tracks/{ISRC}"),
            "nginx": (nginx_worker(proxy), ports["nginx"], "/"),
            "hepgg": (hepgg.pid, ports["hepgg"], PROFILE_PATH),
        }
        for name, (pid, port, path) in targets.items():  # warm up, check each answers
            warm = run_client(port, path, 5)
            assert warm["errors"] == 0, (name, warm)
        if not args.skip_slow:
            for name in ("hepgg", "nginx"):
                pid, port, path = targets[name]
                row = slow_phase(name, pid, port, path, args.slow, args.slow_seconds)
                results["slow"].append(row)
                print(f"slow {name}: {row}", file=sys.stderr)
                time.sleep(2)
        for concurrency in ([] if args.skip_fast else [int(c) for c in args.streams.split(",")]):
            for name, (pid, port, path) in targets.items():
                time.sleep(1)
                row = measure(name, pid, port, path, concurrency)
                results["runs"].append(row)
                print(f"{name} x{concurrency}: {row}", file=sys.stderr)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM if proc is procs[-1] else signal.SIGQUIT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(results)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"music-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict) -> None:
    print("| streams | target | MiB/s | vs nginx | p50 s | p99 s | CPU s/GiB | peak RSS MiB | errors | other CPU s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    nginx = {r["streams"]: r["mib_s"] for r in results["runs"] if r["target"] == "nginx"}
    for r in results["runs"]:
        ratio = r["mib_s"] / nginx[r["streams"]] if nginx.get(r["streams"]) else float("nan")
        print(f"| {r['streams']} | {r['target']} | {r['mib_s']:.0f} | {ratio:.2f}x | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['cpu_s_per_gib']:.2f} | {r['rss_peak_mib']:.0f} | {r['errors']} | {r['other_cpu_s']:.1f} |")
    if results["slow"]:
        print()
        print("| slow listeners (40 KB/s) | target | RSS before MiB | RSS peak MiB | KiB per stream |")
        print("|---:|---|---:|---:|---:|")
        for r in results["slow"]:
            print(f"| {r['listeners']} | {r['target']} | {r['rss_before_mib']:.0f} | {r['rss_peak_mib']:.0f} | "
                  f"{r['kib_per_stream']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
