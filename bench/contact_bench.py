"""Contact forms: the 429 path and the allowed path, req/s per server process, next to GET /healthz.

    bench/run --only contact [--quick]

Our server (one process, CPU 0, external Redis and SecantusDB) trusts 127.0.0.1 as its proxy, so wrk
(CPU 1) can give each request a client address (X-Forwarded-For). Turnstile and Discord are the tests' own
fakes (tests/contact_fakes.py) in a separate process on CPU 1 (bench/contact_fakes_server.py).
  429 path      POST /api/v1/profiles/c0/contact/discord, always from one address: after the burst bucket
                (3/minute) is spent, every request is profile lookup + the limiter's in-process refusal memo
                (no Redis) + the 429 envelope
  allowed path  the same POST, every request from a new address and cycling over many owners (the owner
                bucket allows 100 Discord sends a day each), so each one passes the limiter, is parsed,
                verified with Turnstile and delivered to Discord: the whole send
  GET /healthz  the cheapest route of the same server, for scale (no issue target)
"""

from __future__ import annotations

import json
import subprocess

from bench.harness import CLIENT_CPU, PYTHON, ROOT, BenchError, Stack, unique_ip_lua, wrk
from bench.results import BenchResult, Figure, Target

TARGET_429 = Target(">=", 3000, "issue 9: contact 429 path >= 3,000 req/s per process")
BODY = json.dumps({"handle": "Jamie", "message": "Pinging you on Discord!", "turnstileToken": "good-token"})


def document(owners: int) -> dict:
    users = [
        {
            "id": f"c-u{i}",
            "premium_until": "2099-01-01T00:00:00Z",
            "discord": {"channel_id": str(1_000_000 + i), "bot_present": True},
        }
        for i in range(owners)
    ]
    profiles = [
        {
            "id": f"c{i}",
            "owner_id": f"c-u{i}",
            "domain": f"c{i}.hep.gg",
            "is_public": 1,
            "toggles": {"contact_discord": True},
        }
        for i in range(owners)
    ]
    return {"users": users, "profiles": profiles}


def post_lua(owners: int | None) -> str:
    """wrk script: POST the Discord form; with `owners`, a new address and the next owner's profile each time."""
    common = f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\nwrk.headers["Content-Type"] = "application/json"\n'
    if owners is None:
        return (
            common
            + 'wrk.headers["X-Forwarded-For"] = "203.0.113.9"\nwrk.path = "/api/v1/profiles/c0/contact/discord"\n'
        )
    return (
        common
        + unique_ip_lua()
        + f"""
local sent = 0
request = function()
  sent = sent + 1
  wrk.headers["X-Forwarded-For"] = next_ip()
  return wrk.format(nil, "/api/v1/profiles/c" .. (1 + sent % {owners - 1}) .. "/contact/discord")
end
"""
    )


def run(stack: Stack, quick: bool) -> BenchResult:
    connections = [8] if quick else [4, 32]
    seconds = 2 if quick else 5
    owners = 300  # x 100 Discord sends a day each: room for every allowed request of a full run
    fakes = stack.spawn(
        "contact-fakes",
        [PYTHON, str(ROOT / "bench" / "contact_fakes_server.py")],
        cpu=CLIENT_CPU,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = fakes.stdout.readline()
    if not line:
        raise BenchError(f"contact fakes did not start: {stack.log_tail('contact-fakes')}")
    urls = json.loads(line)
    stack.import_document("contact", document(owners))
    _, port = stack.hepgg(
        "--trusted-proxies",
        "127.0.0.1/32",
        "--turnstile-verify-url",
        urls["turnstile"],
        "--turnstile-secret",
        urls["secret"],
        "--discord-api-url",
        urls["discord"],
        "--discord-bot-token",
        "bench-bot-token",
        "--turnstile-timeout",
        "5",
        "--delivery-timeout",
        "5",
    )
    base = f"http://127.0.0.1:{port}"
    result = BenchResult("contact")
    series: dict = {"throttled": [], "allowed": [], "healthz": []}
    for c in connections:
        throttled = wrk(stack, base + "/", connections=c, seconds=seconds, lua=post_lua(None))
        allowed = wrk(stack, base + "/", connections=c, seconds=seconds, lua=post_lua(owners))
        healthz = wrk(stack, base + "/healthz", connections=c, seconds=seconds)
        refused = throttled["status_errors"]  # every non-2xx; all but the first three are 429s
        if refused < throttled["requests"] - 3:
            raise RuntimeError(f"429 path: only {refused} of {throttled['requests']} requests were refused")
        failed = allowed["status_errors"] + allowed["read_errors"] + allowed["timeouts"]
        result.figures.append(
            Figure(
                "contact",
                "429 path",
                f"c={c}",
                "req/s",
                throttled["req_per_s"],
                healthz["req_per_s"],
                "GET /healthz",
                TARGET_429,
                note=f"{refused} of {throttled['requests']} refused",
            )
        )
        result.figures.append(
            Figure(
                "contact",
                "allowed path (Turnstile + Discord)",
                f"c={c}",
                "req/s",
                allowed["req_per_s"],
                healthz["req_per_s"],
                "GET /healthz",
                note=f"{failed} of {allowed['requests']} not 200",
            )
        )
        result.figures.append(Figure("contact", "allowed path p99", f"c={c}", "ms", allowed["p99_us"] / 1000))
        if failed:
            result.figures[-2].note += " (see series.allowed)"
        for key, summary in (("throttled", throttled), ("allowed", allowed), ("healthz", healthz)):
            series[key].append(summary)
    result.series = series
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.contact_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "contact", *sys.argv[1:]]))
