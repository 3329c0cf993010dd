"""Build the container image's two targets and check them end to end (run by scripts/image-test.sh).

Everything happens in a podman store of its own under the work dir (HEPGG_IMAGE_TEST_DIR, default
`.image-test` in the checkout), kept between runs: the base image, the build cache and the layers, so a
second run (CI runs it, then the `container` test runs it again) rebuilds nothing that did not change.

Checks, each with a deadline:
- production (the default target) against SecantusDB and Valkey started here on loopback, reached with
  `--network host`: `seed-demo` in the image, /healthz, the demo page, a static file, og.png (a 1200x630 PNG),
  the compiled extensions load (their debug info was stripped), every process runs as uid 10001, the worker
  count follows the CPUs (`--cpus 1.5` gives 1), HEALTHCHECK healthy on a non-default HEPGG_PORT and failing
  on a wrong one, SIGTERM with SSE clients open exits 0 within the grace and every client got `retry:`;
- production without HEPGG_MONGO_URI/HEPGG_REDIS_URL exits 2 with a message naming them, no traceback;
- standalone with no environment at all serves the demo (`-p` on slirp4netns: no bridge, no firewall rules)
  with its stand-ins (`serve --demo`: the track plays, a text lands in the demo outbox; production answers
  404 for the stand-in's widget), its data dir belongs to the runtime user, HEALTHCHECK healthy, `podman stop`
  exits 0;
- nothing of the build (sources, wheels, the `ca` secret) is left in either image;
- then the image sizes: total, and the layers above the base.

Facts of these machines (shared/research): crun fails on hybrid cgroups (runc), the default ulimits cannot be
set without CAP_SYS_RESOURCE (the containers get this process's hard limits), the OCI format drops HEALTHCHECK
(--format docker), there is no systemd to schedule health checks (`podman healthcheck run`), and no registry:
when the base cannot be pulled, a stand-in is made with mmdebstrap.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.embedded import EmbeddedStores  # noqa: E402  (SecantusDB and Valkey, the "external" stores here)

BASE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE = "localhost/hepgg"
RUNTIME_UID = "10001"
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's bundle: holds a TLS proxy's CA if one is trusted

# The stand-in for BASE: Debian bookworm with Debian's python3 (3.11) and pip. Quirks against the real image:
# python is /usr/bin/python3 (python-is-python3), site-packages is /usr/local/lib/python3.11/dist-packages,
# perl comes along, so it is ~200-250 MB against ~125 MB. Like the real slim image, dpkg leaves out docs, man
# pages and locales, so the layers measured above it match the real ones.
STAND_IN = [
    "mmdebstrap",
    "--variant=minbase",
    "--include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,netbase,tzdata",
    *(
        f"--dpkgopt=path-{rule}"
        for rule in (
            "exclude=/usr/share/doc/*",
            "include=/usr/share/doc/*/copyright",
            "exclude=/usr/share/man/*",
            "exclude=/usr/share/info/*",
            "exclude=/usr/share/groff/*",
            "exclude=/usr/share/lintian/*",
            "exclude=/usr/share/locale/*",
        )
    ),
    '--customize-hook=rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED',
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/archives/*.deb',
    "bookworm",
]


class CheckFailed(Exception):
    pass


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hard_limits() -> list[str]:
    """`--ulimit` flags. The engine's defaults cannot be set here (no CAP_SYS_RESOURCE): ask for what worked on
    these machines (nofile 20,000, nproc 32,768), never more than this process's hard limits."""
    flags = []
    for name, which, wanted in (
        ("nofile", resource.RLIMIT_NOFILE, 20000),
        ("nproc", resource.RLIMIT_NPROC, 32768),
    ):
        hard = resource.getrlimit(which)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


class Podman:
    def __init__(self, work: Path):
        self.prefix = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "run"), "--runtime", "runc"]
        self.limits = hard_limits()
        self.containers: list[str] = []

    def __call__(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(f"podman {' '.join(args[:3])} took over {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise CheckFailed(f"podman {' '.join(args)} exited {result.returncode}: {quiet(result.stderr)[-2000:]}")
        return result

    def start(self, name: str, *args: str) -> str:
        self.containers.append(name)
        self("run", "-d", "--name", name, *self.limits, *args)
        return name

    def logs(self, name: str) -> str:
        result = self("logs", name, check=False, timeout=30)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        for name in self.containers:
            with contextlib.suppress(CheckFailed):
                self("rm", "-f", "-t", "0", name, check=False, timeout=60)
        self.containers.clear()


def quiet(text: str) -> str:
    """podman's stderr without its complaints that there is no systemd to time health checks."""
    return "\n".join(line for line in text.splitlines() if "systemd" not in line)


# ---------------------------------------------------------------- HTTP


def get(
    port: int,
    path: str,
    host: str | None = None,
    timeout: float = 10,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Host": host or f"127.0.0.1:{port}", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def wait_http(podman: Podman, name: str, port: int, path: str, host: str | None, deadline: float) -> bytes:
    """Poll until `path` answers 200; fail at once if the container has stopped."""
    last = "no answer"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, body = get(port, path, host, timeout=5)
            if status == 200:
                return body
            last = f"status {status}"
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("running", "created", "configured"):
            raise CheckFailed(f"{name} is {state or 'gone'} before {path} answered:\n{podman.logs(name)[-3000:]}")
        time.sleep(0.5)
    raise CheckFailed(f"{path} on port {port} did not answer 200 within {deadline:.0f}s ({last})")


def png_size(body: bytes) -> tuple[int, int]:
    if body[:8] != b"\x89PNG\r\n\x1a\n" or body[12:16] != b"IHDR":
        raise CheckFailed("og.png is not a PNG")
    return struct.unpack(">II", body[16:24])


class SSEClient:
    """A raw SSE connection: reads the first event, then everything until the server closes it."""

    def __init__(self, port: int, path: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.before = b""
        while not self._has_first_event():
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CheckFailed(f"SSE stream closed before its first event: {self.before[:300]!r}")
            self.before += chunk
        if not self.before.startswith(b"HTTP/1.1 200"):
            raise CheckFailed(f"SSE stream answered {self.before[:100]!r}")

    def _has_first_event(self) -> bool:
        """The first `event:` block has arrived (every stream opens with a `retry:` block before it)."""
        _, found, body = self.before.partition(b"\r\n\r\n")
        _, event, after = body.partition(b"event:")
        return bool(found and event) and b"\n\n" in after

    def rest(self, deadline: float) -> bytes:
        """Everything the server sends until it closes the connection (within `deadline` seconds)."""
        data = b""
        end = time.monotonic() + deadline
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                self.sock.close()
                return data
            data += chunk
        self.sock.close()
        raise CheckFailed(f"SSE stream still open {deadline:.0f}s after SIGTERM (got {data[-200:]!r})")


# ---------------------------------------------------------------- steps


def ensure_base(podman: Podman, work: Path) -> str:
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return "present"
    with contextlib.suppress(CheckFailed):
        if podman("pull", "--quiet", BASE, check=False, timeout=120).returncode == 0:
            return "pulled"
    tarball = work / "stand-in-base.tar"
    if not tarball.exists():
        say(f"{BASE} cannot be pulled: making a stand-in with mmdebstrap (about 1-2 minutes)")
        partial = work / "stand-in-base.partial.tar"  # mmdebstrap picks the output format by the extension
        log = work / "logs" / "mmdebstrap.log"
        with open(log, "w") as out:
            result = subprocess.run([*STAND_IN, str(partial)], stdout=out, stderr=subprocess.STDOUT, timeout=900)
        if result.returncode != 0:
            raise CheckFailed(f"mmdebstrap failed; see {log}")
        partial.rename(tarball)
    podman("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tarball), BASE, timeout=300)
    return "stand-in"


def build(podman: Podman, work: Path, target: str, ca: Path | None) -> float:
    secret = ["--secret", f"id=ca,src={ca}"] if ca else []
    log = work / "logs" / f"build-{target}.log"
    started = time.monotonic()
    result = podman(
        "build",
        "--format",
        "docker",
        "--pull=never",
        *podman.limits,
        *secret,
        "--target",
        target,
        "-t",
        f"{IMAGE}:{target}",
        str(ROOT),
        check=False,
        timeout=1200,
    )
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise CheckFailed(f"building {target} failed; see {log}:\n{quiet(result.stderr)[-3000:]}")
    return time.monotonic() - started


def check_clean_image(podman: Podman, image: str) -> None:
    """No sources, wheels, .deb files, apt lists or secrets of the build are left; the app runs installed."""
    script = (
        "for p in /src /wheels /stub /approot /dist /app /run/secrets/ca; do [ ! -e $p ] || echo $p; done; "
        "ls /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_Packages* 2>/dev/null || true; "
        "env | grep -i -E '^PIP_CERT|^REQUESTS_CA' || true; "
        "python -c 'import runtime.app as a; print(a.ROOT)'"
    )
    out = podman("run", "--rm", *podman.limits, "--entrypoint", "sh", image, "-c", script).stdout.split()
    if out[:-1]:
        raise CheckFailed(f"{image} keeps build leftovers: {out[:-1]}")
    if not out or "site-packages" not in out[-1]:
        raise CheckFailed(f"{image} does not run the installed app (templates found at {out[-1:]})")


def check_production(podman: Podman, work: Path, run_id: str, grace: float) -> None:
    image = f"{IMAGE}:production"
    check_clean_image(podman, image)

    # No store configured and no stand-ins installed: a clear message and exit 2, not a traceback.
    result = podman("run", "--rm", *podman.limits, image, check=False, timeout=60)
    output = quiet(result.stdout + result.stderr)
    if result.returncode != 2 or "HEPGG_MONGO_URI" not in output or "Traceback" in output:
        raise CheckFailed(f"production without stores: exit {result.returncode}, output:\n{output[-2000:]}")
    if "hepgg_server[embedded]" not in output:
        raise CheckFailed(f"production without stores does not say what to install:\n{output}")
    say("ok  production without HEPGG_MONGO_URI/HEPGG_REDIS_URL exits 2 and says what to set")

    # The CPU quota of the container, not the host's cores.
    script = "from runtime.cpus import usable_cpus; print(usable_cpus())"
    cpus = podman("run", "--rm", *podman.limits, "--cpus", "1.5", "--entrypoint", "python", image, "-c", script)
    if cpus.stdout.strip() != "1":
        raise CheckFailed(f"--cpus 1.5: usable CPUs {cpus.stdout.strip()!r}, expected 1")
    say("ok  --cpus 1.5 gives 1 usable CPU (one worker)")

    data_dir = work / f"stores-{run_id}"
    stores = EmbeddedStores(data_dir)
    endpoints = stores.start()
    try:
        port = free_port()
        env = [
            "-e",
            f"HEPGG_MONGO_URI={endpoints.mongo_uri}",
            "-e",
            f"HEPGG_REDIS_URL={endpoints.redis_url}",
            "-e",
            "HEPGG_ADDRESS=127.0.0.1",
            "-e",
            f"HEPGG_PORT={port}",
            "-e",
            f"HEPGG_SHUTDOWN_GRACE={grace:g}",
        ]
        seeded = podman("run", "--rm", *podman.limits, "--network", "host", *env, image, "seed-demo", check=False)
        if seeded.returncode != 0:
            raise CheckFailed(f"seed-demo in the image exited {seeded.returncode}: {quiet(seeded.stderr)[-2000:]}")
        name = podman.start(f"hepgg-image-test-{run_id}-production", "--network", "host", *env, image)
        wait_http(podman, name, port, "/healthz", None, 90)
        say(f"ok  production serves /healthz on HEPGG_PORT={port} against external stores")

        status, _, body = get(port, "/", host="demo.localhost")
        if status != 200 or b"Demo Profile" not in body:
            raise CheckFailed(f"the demo page answered {status}")
        stylesheet = re.search(rb'href="(/[^"]*profile\.css[^"]*)"', body)  # static_url(): hashed from the file
        if not stylesheet or b"?v=" not in stylesheet.group(1):
            raise CheckFailed("the demo page links no versioned stylesheet (static files not installed?)")
        status, headers, _ = get(port, stylesheet.group(1).decode())
        if status != 200 or "text/css" not in headers.get("content-type", ""):
            raise CheckFailed(f"{stylesheet.group(1)!r} answered {status} {headers.get('content-type')}")
        status, headers, body = get(port, "/api/v1/profiles/demo/og.png", timeout=30)
        if status != 200 or headers.get("content-type") != "image/png" or png_size(body) != (1200, 630):
            raise CheckFailed(f"og.png answered {status} {headers.get('content-type')}")
        say(f"ok  demo page, a static file and og.png (1200x630, {len(body):,} bytes)")
        status, _, _ = get(port, "/_demo/turnstile.js", host="demo.localhost")
        if status != 404:
            raise CheckFailed(f"production serves the demo's Turnstile stand-in ({status}): only `serve --demo` may")

        extensions = (
            "import pycurl, uvloop, hiredis, bson._cbson, pymongo._cmessage, tornado.speedups, wand.image, io; "
            "c = pycurl.Curl(); out = io.BytesIO(); "
            f"c.setopt(c.URL, 'http://127.0.0.1:{port}/healthz'); c.setopt(c.WRITEDATA, out); c.perform(); "
            "print(c.getinfo(c.RESPONSE_CODE))"
        )
        if podman("exec", name, "python", "-c", extensions).stdout.strip() != "200":
            raise CheckFailed("the compiled extensions do not work in the image")
        # The avatar formats the card decodes (og/avatars.py sniffs them) survive the HEIF libraries left out.
        formats = (
            "from wand.image import Image; from wand.color import Color\n"
            "for fmt in ('png', 'jpeg', 'gif', 'webp'):\n"
            "    with Image(width=8, height=8, background=Color('#7c3aed')) as im:\n"
            "        blob = im.make_blob(fmt)\n"
            "    with Image(blob=blob, format=fmt) as back:\n"
            "        print(fmt, back.width, back.height)"
        )
        decoded = podman("exec", name, "python", "-c", formats).stdout.split("\n")
        if [line.split() for line in decoded if line] != [[f, "8", "8"] for f in ("png", "jpeg", "gif", "webp")]:
            raise CheckFailed(f"ImageMagick in the image does not round-trip the avatar formats: {decoded}")
        say("ok  stripped extensions load; pycurl fetches; PNG, JPEG, GIF and WebP decode (no HEIF libraries)")

        uids = podman(
            "exec",
            name,
            "python",
            "-c",
            "import glob; print(' '.join(sorted({open(p).read().split('Uid:')[1].split()[0] "
            "for p in glob.glob('/proc/[0-9]*/status')})))",
        ).stdout.split()
        if uids != [RUNTIME_UID]:
            raise CheckFailed(f"processes run as uids {uids}, expected only {RUNTIME_UID}")
        workers = podman("exec", name, "python", "-c", "from runtime.cpus import usable_cpus; print(usable_cpus())")
        expected = f"{workers.stdout.strip()} worker process(es)"
        if expected not in podman.logs(name):
            raise CheckFailed(f"the log does not say {expected!r}:\n{podman.logs(name)[-2000:]}")
        say(f"ok  every process runs as uid {RUNTIME_UID}; {expected} (one per usable CPU)")

        health = podman("healthcheck", "run", name, check=False, timeout=30)
        if health.returncode != 0:
            raise CheckFailed(f"HEALTHCHECK on HEPGG_PORT={port}: {health.stdout} {quiet(health.stderr)}")
        wrong = podman(
            "exec", "-e", f"HEPGG_PORT={free_port()}", name, "python", "-m", "runtime.healthcheck", check=False
        )
        if wrong.returncode == 0:
            raise CheckFailed("the health check passed on a port nothing listens on")
        say(f"ok  HEALTHCHECK healthy on HEPGG_PORT={port}, unhealthy on a wrong port")

        check_sigterm(podman, name, port, grace)
    finally:
        podman.remove_all()
        stores.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def check_sigterm(podman: Podman, name: str, port: int, grace: float, clients: int = 40) -> None:
    streams = [SSEClient(port, "/api/v1/profiles/presence/demo-owner/stream") for _ in range(clients)]
    if any(s.before.count(b"retry:") > 1 for s in streams):  # one is the opening hint every stream gets
        raise CheckFailed(
            "SSE streams got a retry hint past their opening one before SIGTERM; the check would prove nothing"
        )
    started = time.monotonic()
    podman("kill", "--signal", "TERM", name)
    rests = [s.rest(grace + 5) for s in streams]
    code = podman("wait", name, timeout=grace + 30).stdout.strip()
    elapsed = time.monotonic() - started
    without = sum(1 for rest in rests if b"retry:" not in rest)
    if without:
        raise CheckFailed(f"{without} of {clients} SSE clients got no retry: before the stream closed")
    if code != "0":
        raise CheckFailed(f"SIGTERM: exit code {code}:\n{podman.logs(name)[-2000:]}")
    if elapsed > grace:
        raise CheckFailed(f"SIGTERM took {elapsed:.1f}s, over the {grace:g}s grace")
    say(f"ok  SIGTERM with {clients} SSE clients: every client got retry:, exit 0 in {elapsed:.1f}s (grace {grace:g}s)")


def check_standalone(podman: Podman, run_id: str) -> None:
    image = f"{IMAGE}:standalone"
    check_clean_image(podman, image)
    port = free_port()
    # No -e at all. slirp4netns forwards -p without a bridge or firewall rules on this shared machine.
    name = podman.start(
        f"hepgg-image-test-{run_id}-standalone", "--network", "slirp4netns", "-p", f"127.0.0.1:{port}:8888", image
    )
    try:
        started = time.monotonic()
        body = wait_http(podman, name, port, "/", f"demo.localhost:{port}", 180)
        if b"Demo Profile" not in body:
            raise CheckFailed("standalone: / on demo.localhost is not the demo page")
        say(f"ok  standalone with no environment seeds the demo and serves it ({time.monotonic() - started:.1f}s)")
        check_demo_stand_ins(podman, name, port)
        owners = podman("exec", name, "stat", "-c", "%u", "/var/lib/hepgg", "/var/lib/hepgg/mongo").stdout.split()
        if set(owners) != {RUNTIME_UID}:
            raise CheckFailed(f"standalone data dir owners: {owners}")
        health = podman("healthcheck", "run", name, check=False, timeout=30)
        if health.returncode != 0:
            raise CheckFailed(f"standalone HEALTHCHECK: {health.stdout} {quiet(health.stderr)}")
        started = time.monotonic()
        podman("stop", "-t", "20", name, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        if code != "0":
            raise CheckFailed(f"standalone: podman stop gave exit code {code}:\n{podman.logs(name)[-2000:]}")
        say(
            f"ok  standalone: data dir owned by uid {RUNTIME_UID}, HEALTHCHECK healthy, "
            f"stops with exit 0 in {time.monotonic() - started:.1f}s"
        )
    finally:
        podman.remove_all()


def check_demo_stand_ins(podman: Podman, name: str, port: int) -> None:
    """`serve --demo` in the standalone image: the track plays and a message lands in the demo outbox."""
    host = f"demo.localhost:{port}"
    status, headers, _ = get(port, "/_demo/turnstile.js", host=host)
    if status != 200 or "javascript" not in headers.get("content-type", ""):
        raise CheckFailed(f"standalone: the demo's Turnstile widget answered {status}")
    music = "/api/v1/profiles/demo/music/USRC17607839"
    status, headers, body = get(port, music, host=host, timeout=60, headers={"Range": "bytes=0-99"})
    if status != 206 or headers.get("content-type") != "audio/wav" or body[:4] != b"RIFF":
        raise CheckFailed(f"standalone: the demo track answered {status} {headers.get('content-type')}")
    token = "demo-pass-" + os.urandom(16).hex()  # the shape the demo widget makes; the stand-in passes it once
    payload = json.dumps({"message": "hello from the image test", "turnstileToken": token}).encode()
    status, _, body = get(
        port,
        "/api/v1/profiles/demo/contact/sms",
        host=host,
        timeout=30,
        method="POST",
        body=payload,
        headers={"Content-Type": "application/json"},
    )
    if status != 200:
        raise CheckFailed(f"standalone: a demo text message answered {status}: {body[:300]!r}")
    if "demo outbox: sms to +15550100" not in podman.logs(name):
        raise CheckFailed("standalone: the demo message is not in the outbox log")
    say("ok  standalone runs --demo: the track plays (206 audio/wav), a text lands in the demo outbox")


def bound_store(podman: Podman, work: Path, limit_gb: float = 10.0) -> None:
    """Each code change leaves ~5 MB of superseded layers behind; past `limit_gb` start over (the base comes back
    from its tarball, the next build is cold). Pruning every run would drop the build cache of the stages."""
    du = subprocess.run(["du", "-sb", str(work / "storage")], capture_output=True, text=True, timeout=300)
    used = int(du.stdout.split()[0]) if du.returncode == 0 else 0
    if used > limit_gb * 1e9:
        say(f"the podman store holds {used / 1e9:.1f} GB (> {limit_gb:g}): removing every image")
        podman("system", "prune", "--all", "--force", timeout=600)


def sizes(podman: Podman) -> dict[str, dict]:
    def size(image: str) -> int:
        return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())

    def layers(image: str) -> list[dict]:
        return json.loads(podman("history", "--format", "json", image).stdout)

    base_size, base_layers = size(BASE), len(layers(BASE))
    report = {"base": {"total": base_size}}
    for target in ("production", "standalone"):
        image = f"{IMAGE}:{target}"
        above = [layer for layer in layers(image)[: -base_layers or None] if layer.get("size")]
        report[target] = {
            "total": size(image),
            "above_base": size(image) - base_size,
            "layers": [
                (layer["size"], (layer.get("CreatedBy") or layer.get("createdBy") or "")[:90]) for layer in above
            ],
        }
    return report


def print_sizes(report: dict[str, dict]) -> None:
    mb = 1e6
    say(f"size  base {report['base']['total'] / mb:.0f} MB")
    for target in ("production", "standalone"):
        entry = report[target]
        say(f"size  {target}: {entry['total'] / mb:.0f} MB, {entry['above_base'] / mb:.1f} MB above the base, in:")
        for layer_size, created_by in entry["layers"]:
            say(f"        {layer_size / mb:7.1f} MB  {created_by}")


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=os.environ.get("HEPGG_IMAGE_TEST_DIR", str(ROOT / ".image-test")))
    parser.add_argument("--ca", default=os.environ.get("HEPGG_IMAGE_CA", str(SYSTEM_CA) if SYSTEM_CA.exists() else ""))
    parser.add_argument("--grace", type=float, default=8.0, help="HEPGG_SHUTDOWN_GRACE for the SIGTERM check")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    run_id = str(os.getpid())
    podman = Podman(work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` removes containers and stops stores

    with open(work / "lock", "w") as lock:
        deadline = time.monotonic() + 1800
        while True:  # one run at a time per work dir (CI and the pytest test share it)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    say(f"{work} stayed locked by another run for 30 minutes")
                    return 1
                time.sleep(1)
        started = time.monotonic()
        try:
            say(f"base {BASE}: {ensure_base(podman, work)}")
            ca = Path(args.ca) if args.ca else None
            for target in ("production", "standalone"):
                say(f"built {target} in {build(podman, work, target, ca):.1f}s (secret ca: {ca or 'none'})")
            check_production(podman, work, run_id, args.grace)
            check_standalone(podman, run_id)
            report = sizes(podman)
            (work / "sizes.json").write_text(json.dumps(report, indent=2))
            print_sizes(report)
            bound_store(podman, work)
        except CheckFailed as exc:
            say(f"FAILED: {exc}")
            return 1
        finally:
            podman.remove_all()
        say(f"all checks passed in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
