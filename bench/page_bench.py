"""Profile page renders/s with view recording on, vs nginx serving the same HTML as a static file.

    bench/run --only page [--quick]

Our server (one process, CPU 0) renders GET / for alice.hep.gg with a browser User-Agent, and each request from
its own X-Forwarded-For address (127.0.0.1 is a trusted proxy), so every request looks up the profile,
renders the template and records a distinct visitor's view (batched to MongoDB by the stats writer).
The HTML is fetched from our server once and nginx (one worker, CPU 0) serves it as a file. wrk (one
thread, CPU 1) drives both with N keep-alive connections for a fixed time. After the run the profile's
view count (read with `hepgg_server.py stats`) must have grown: otherwise view recording was not on.
"""

from __future__ import annotations

import json
import time

from bench.harness import BROWSER_UA, Stack, free_port, http_get, unique_ip_lua, wrk
from bench.results import BenchResult, Figure, Target

HOST = "alice.hep.gg"
VISITORS_LUA = r"""
request = function()
  wrk.headers["X-Forwarded-For"] = next_ip()
  return wrk.format()
end
"""
TARGET = Target("ratio>=", 0.25, "issue 9: page >= 0.25x nginx static")


def document() -> dict:
    return {
        "users": [{"id": "pg-u1", "premium_until": "2099-01-01T00:00:00Z"}],
        "profiles": [
            {
                "id": "pg1",
                "owner_id": "pg-u1",
                "domain": HOST,
                "template": "classic",
                "is_public": 1,
                "theme": {"accent": "#7c3aed", "background": "#0b0b10", "font": "Inter"},
                "content": {
                    "display_name": "Alice",
                    "bio": "Hello there, I build things with Tornado.",
                    "links": [
                        {"label": "GitHub", "url": "https://github.com/alice"},
                        {"label": "Site", "url": "https://example.com/"},
                    ],
                    "music": [{"isrc": "USRC17607839", "title": "Song", "artist": "Band"}],
                },
                "toggles": {"presence": True, "powered_by": True},
            }
        ],
    }


def views(stack: Stack) -> int:
    return json.loads(stack.hepgg_cli("stats", "pg1"))["views"]


def run(stack: Stack, quick: bool) -> BenchResult:
    result = BenchResult("page")
    connections = [1, 16] if quick else [1, 8, 32, 128]
    seconds = 2 if quick else 5
    stack.import_document("page", document())
    _server, port = stack.hepgg("--view-flush-interval", "1", "--trusted-proxies", "127.0.0.1/32")
    status, html = http_get(port, "/", host=HOST, headers={"User-Agent": BROWSER_UA})
    if status != 200:
        raise RuntimeError(f"our page answered {status}")
    static_dir = stack.tmp / "static"
    static_dir.mkdir(exist_ok=True)
    (static_dir / "index.html").write_bytes(html)
    nginx_port = free_port()
    stack.nginx(
        "static",
        f"""
  server {{
    listen 127.0.0.1:{nginx_port} backlog=4096;
    root {static_dir};
    location = / {{ default_type "text/html; charset=utf-8"; try_files /index.html =404; }}
  }}""",
        port=nginx_port,
    )
    views_before = views(stack)
    headers = {"Host": HOST, "User-Agent": BROWSER_UA}
    series = {"ours (1 process)": [], "ours: /healthz (Tornado floor)": [], "nginx static (1 worker)": []}
    total_requests = 0
    for run, c in enumerate(connections):
        ours = wrk(
            stack,
            f"http://127.0.0.1:{port}/",
            connections=c,
            seconds=seconds,
            headers=headers,
            lua=unique_ip_lua(run << 22) + VISITORS_LUA,
        )  # 4M addresses per run
        # Tornado's own floor on this core: the same server answering /healthz (no lookup, no template,
        # no view), so a reader can tell our per-page work from the framework's per-request cost.
        floor = wrk(stack, f"http://127.0.0.1:{port}/healthz", connections=c, seconds=seconds, headers=headers)
        # nginx ignores the address: a fixed request keeps wrk cheaper, so the peer is never client-bound.
        peer = wrk(stack, f"http://127.0.0.1:{nginx_port}/", connections=c, seconds=seconds, headers=headers)
        total_requests += ours["requests"]
        errors = ours["status_errors"] + ours["read_errors"] + ours["timeouts"]
        series["ours (1 process)"].append((c, ours["req_per_s"]))
        series["ours: /healthz (Tornado floor)"].append((c, floor["req_per_s"]))
        series["nginx static (1 worker)"].append((c, peer["req_per_s"]))
        result.figures.append(
            Figure(
                "page",
                "renders/s",
                f"c={c}",
                "req/s",
                ours["req_per_s"],
                peer["req_per_s"],
                "nginx static",
                TARGET,
                note=f"errors {errors}",
            )
        )
        result.figures.append(
            Figure(
                "page",
                "renders/s vs Tornado floor",
                f"c={c}",
                "req/s",
                ours["req_per_s"],
                floor["req_per_s"],
                "our /healthz",
            )
        )
        result.figures.append(
            Figure("page", "latency p99", f"c={c}", "ms", ours["p99_us"] / 1000, peer["p99_us"] / 1000, "nginx static")
        )
    time.sleep(3)  # the stats writer flushes every second
    recorded = views(stack) - views_before
    result.figures.append(
        Figure(
            "page",
            "views recorded",
            f"{total_requests} page requests",
            "views",
            recorded,
            note="distinct visitors: should be close to the requests",
        )
    )
    if recorded <= 0:
        raise RuntimeError(f"no views recorded after {total_requests} page requests")
    result.series = {"req_s": series, "html_bytes": len(html)}
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.page_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "page", *sys.argv[1:]]))
