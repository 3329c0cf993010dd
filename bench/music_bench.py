"""Music proxy: our server (one process) vs nginx proxy_pass (64k and 16k buffers) vs straight from the upstream.

    bench/run --only music [--quick]

All on 127.0.0.1, one run, so the ratios compare like with like:
- upstream: nginx (1 worker, sendfile, CPU 1) serving one 5 MB file at /tracks/<ISRC>;
- nginx proxy: nginx (1 worker, CPU 0) with `proxy_pass`, `proxy_buffering off`, 64k buffers (the issue's
  peer), and a second one with 16k buffers (the "CPU per GiB at 16k chunks" reference);
- ours: `serve --processes 1` (CPU 0), a profile whose owner has a music key, data loaded with `import`.
The load client is bench/music_client.py (its own process, CPU 1). Per target and concurrency: MiB/s (all
bytes / wall time), p99 stream time, the target's CPU seconds per GiB, its peak RSS. Then slow listeners
reading at 40 KB/s (a 320 kbit/s stream) for a while: RSS growth per stream, ours vs nginx 64k.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from bench.harness import CLIENT_CPU, PYTHON, ROOT, Stack, cpu_seconds, free_port, machine_busy_seconds, rss_bytes
from bench.results import BenchResult, Figure, Target

ISRC = "USRC17607839"
OURS_PATH = f"/api/v1/profiles/mu1/music/{ISRC}"
RATIO_TARGET = Target(
    "ratio>=", 0.5, "issue 9: music >= 0.5x nginx proxy (64k buffers); research: nginx 64k 1.0-1.27 GiB/s"
)
CPU_TARGET = Target("ratio<=", 1.0, "issue 9: CPU per GiB below nginx's at 16k chunks (research: ~1.8 s/GiB)")

UPSTREAM = """
  sendfile on; tcp_nopush on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir};
    location /tracks/ {{ default_type audio/mpeg; try_files /track.bin =404; }}
  }}"""

PROXY = """
  upstream music {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://music/tracks/{isrc};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size {buf};
      proxy_buffers 8 {buf};
    }}
  }}"""


def document() -> dict:
    return {
        "users": [
            {
                "id": "mu-u1",
                "premium_until": "2099-01-01T00:00:00Z",
                "music": {"enabled": True, "key": "bench-music-key"},
            }
        ],
        "profiles": [
            {
                "id": "mu1",
                "owner_id": "mu-u1",
                "domain": "music.hep.gg",
                "is_public": 1,
                "content": {"music": [{"isrc": ISRC, "title": "Bench", "artist": "Bench"}]},
            }
        ],
    }


def run_client(
    stack: Stack, port: int, path: str, concurrency: int, rate: float = 0, hold: float = 0, on_ready=None
) -> dict:
    proc = stack.spawn(
        "music-client",
        [
            PYTHON,
            str(ROOT / "bench" / "music_client.py"),
            "--port",
            str(port),
            "--path",
            path,
            "--concurrency",
            str(concurrency),
            "--rate",
            str(rate),
            "--hold",
            str(hold),
        ],
        cpu=CLIENT_CPU,
        stdout=subprocess.PIPE,
        text=True,
    )
    result = None
    try:
        for line in proc.stdout:
            data = json.loads(line)
            if data.get("ready"):
                if on_ready is not None:
                    on_ready()
            else:
                result = data
        proc.wait(timeout=300)
    finally:
        stack.stop(proc)
    if result is None:
        raise RuntimeError(f"music client gave no result: {stack.log_tail('music-client')}")
    return result


def measure(stack: Stack, target: str, pid: int, port: int, path: str, concurrency: int) -> dict:
    cpu0, busy0 = cpu_seconds(pid), machine_busy_seconds()
    peak = [rss_bytes(pid)]
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_bytes(pid))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        client = run_client(stack, port, path, concurrency)
    finally:
        stop.set()
        thread.join()
    cpu = cpu_seconds(pid) - cpu0
    gib = client["bytes"] / 2**30
    return {
        "target": target,
        **client,
        "cpu_s": cpu,
        "cpu_s_per_gib": cpu / gib if gib else None,
        "rss_peak_mib": peak[0] / 2**20,
        "machine_cpu_s": machine_busy_seconds() - busy0,
    }


def slow_phase(stack: Stack, target: str, pid: int, port: int, path: str, listeners: int, seconds: float) -> dict:
    before = rss_bytes(pid)
    samples: list[int] = []

    def ready() -> None:  # every listener is streaming: sample RSS through the hold
        deadline = time.monotonic() + seconds - 1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            samples.append(rss_bytes(pid))

    result = run_client(stack, port, path, listeners, rate=40_000, hold=seconds, on_ready=ready)
    peak = max(samples) if samples else rss_bytes(pid)
    return {
        "target": target,
        "listeners": listeners,
        "rss_before_mib": before / 2**20,
        "rss_peak_mib": peak / 2**20,
        "kib_per_stream": (peak - before) / listeners / 1024,
        "finished_early": result.get("finished_early"),
    }


def run(stack: Stack, quick: bool) -> BenchResult:
    streams = [10, 100] if quick else [50, 500, 1000]
    size_mb = 2 if quick else 5
    slow, slow_seconds = (200, 5) if quick else (1000, 15)
    (stack.tmp / "track.bin").write_bytes(os.urandom(size_mb * 1_000_000))
    ports = {name: free_port() for name in ("upstream", "nginx", "nginx16k")}
    upstream = stack.nginx(
        "upstream", UPSTREAM.format(port=ports["upstream"], dir=stack.tmp), cpu=CLIENT_CPU, port=ports["upstream"]
    )
    nginx = stack.nginx(
        "proxy64k",
        PROXY.format(port=ports["nginx"], upstream=ports["upstream"], isrc=ISRC, buf="64k"),
        port=ports["nginx"],
    )
    nginx16 = stack.nginx(
        "proxy16k",
        PROXY.format(port=ports["nginx16k"], upstream=ports["upstream"], isrc=ISRC, buf="16k"),
        port=ports["nginx16k"],
    )
    stack.import_document("music", document())
    ours, ours_port = stack.hepgg("--music-upstream-url", f"http://127.0.0.1:{ports['upstream']}")
    targets = {
        "direct": (upstream.pid, ports["upstream"], f"/tracks/{ISRC}"),
        "nginx": (nginx.pid, ports["nginx"], "/"),
        "nginx16k": (nginx16.pid, ports["nginx16k"], "/"),
        "ours": (ours.pid, ours_port, OURS_PATH),
    }
    for name, (_pid, port, path) in targets.items():  # warm up, check each answers
        warm = run_client(stack, port, path, 5)
        if warm["errors"]:
            raise RuntimeError(f"{name} failed the warm-up: {warm['first_error']}")
    slow_rows = []
    for name in ("ours", "nginx"):
        slow_rows.append(slow_phase(stack, name, *targets[name], slow, slow_seconds))
        time.sleep(1)
    rows = []
    for concurrency in streams:
        for name, (pid, port, path) in targets.items():
            time.sleep(0.5)
            rows.append(measure(stack, name, pid, port, path, concurrency))
            r = rows[-1]
            print(
                f"   music {name} x{concurrency}: {r['mib_s']:.0f} MiB/s, p99 {r['p99']:.2f} s, "
                f"{r['cpu_s_per_gib'] or 0:.2f} CPU s/GiB, errors {r['errors']}",
                flush=True,
            )
    return summarize(rows, slow_rows, streams, size_mb)


def summarize(rows: list[dict], slow_rows: list[dict], streams: list[int], size_mb: int) -> BenchResult:
    result = BenchResult("music")
    by = {(r["target"], r["streams"]): r for r in rows}
    for n in streams:
        ours, nginx, nginx16 = by[("ours", n)], by[("nginx", n)], by[("nginx16k", n)]
        size = f"{n} streams x {size_mb} MB"
        result.figures.append(
            Figure(
                "music",
                "throughput",
                size,
                "MiB/s",
                ours["mib_s"],
                nginx["mib_s"],
                "nginx 64k",
                RATIO_TARGET,
                note=f"errors {ours['errors']}",
            )
        )
        result.figures.append(Figure("music", "stream time p99", size, "s", ours["p99"], nginx["p99"], "nginx 64k"))
        result.figures.append(
            Figure(
                "music",
                "CPU per GiB",
                size,
                "s",
                ours["cpu_s_per_gib"],
                nginx16["cpu_s_per_gib"],
                "nginx 16k",
                CPU_TARGET,
            )
        )
    slow = {r["target"]: r for r in slow_rows}
    result.figures.append(
        Figure(
            "music",
            "RSS per slow stream",
            f"{slow['ours']['listeners']} x 40 KB/s",
            "KiB",
            slow["ours"]["kib_per_stream"],
            slow["nginx"]["kib_per_stream"],
            "nginx 64k",
        )
    )
    labels = {
        "ours": "ours (1 process)",
        "nginx": "nginx proxy 64k",
        "nginx16k": "nginx proxy 16k",
        "direct": "upstream direct",
    }
    result.series = {
        "mib_s": {
            label: [(r["streams"], r["mib_s"]) for r in rows if r["target"] == key] for key, label in labels.items()
        },
        "rows": rows,
        "slow": slow_rows,
    }
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.music_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "music", *sys.argv[1:]]))
