"""The rehearsal's deployment: stores, third parties, app replicas and nginx, each where compose would put it.

    hgr-net   10.213.0.1   SecantusDB (one-member replica set `secantus`), the Redis Cluster (3 masters +
                           3 replicas, Debian's redis-server, ports 20000-22700 and their buses at +10000)
                           or one Redis, the third-party fakes and music worker (deploy/rehearsal/thirdparty.py),
                           nginx on :8080 with deploy/nginx.conf
    hgr-appN  10.213.0.1N  replica N: `hepgg_server.py serve` on :8888, environment from the image and compose

The rehearsal process itself runs in hgr-net (netns.enter), so everything it starts there inherits the
namespace and it reaches every address directly; replicas start through `ip netns exec`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.rehearsal import netns, shape
from deploy.rehearsal.procs import Child, python_argv, wait_for

ROOT = shape.ROOT
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from loadtest.seed import loadtest_document  # noqa: E402

SLUG_PREFIX = "rh-"
BASE_DOMAIN = "hep.gg"
ISRC = "USRC17607839"
MUSIC_KEY = "rh-music-key"
CREDITS = 1000  # SMS and email credits per owner: far more than a run spends
MONGO_DB = "hepgg"
PRESENCE_KEY = "presence:" + SLUG_PREFIX + "owner-0"  # the key whose master the failover kills


def profile_id(index: int) -> str:
    return f"{SLUG_PREFIX}{index}"


def owner_id(index: int) -> str:
    return f"{SLUG_PREFIX}owner-{index}"


def seed_document(profiles: int) -> dict[str, Any]:
    """The load test's profiles (loadtest/seed.py), each owner with recipients of its own, so every delivery
    can be traced to the owner whose credit paid for it."""
    document = copy.deepcopy(loadtest_document(profiles, BASE_DOMAIN, SLUG_PREFIX, MUSIC_KEY, ISRC, CREDITS))
    for index, user in enumerate(document["users"]):
        user["sms"]["key"] = f"sms-key-{index}"
        user["email"]["address"] = f"owner-{index}@example.com"
        user["discord"]["channel_id"] = str(100000 + index)
    return document


def recipient_owner(kind: str, recipient: str) -> int | None:
    """The owner index a fake's recipient belongs to (see seed_document)."""
    prefix = {"sms": "sms-key-", "email": "owner-"}.get(kind)
    if kind == "discord":
        return int(recipient) - 100000
    if prefix and recipient.startswith(prefix):
        return int(recipient[len(prefix) :].split("@")[0])
    return None


@dataclass
class Replica:
    index: int
    child: Child
    starts: int = 0

    @property
    def namespace(self) -> str:
        return netns.app_namespace(self.index)

    @property
    def address(self) -> str:
        return netns.app_address(self.index)


@dataclass
class Stack:
    workdir: Path
    replica_count: int = 3
    processes: int = 2
    redis_mode: str = "cluster"
    children: list[Child] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    redis: Any = None
    mongo_uri: str = ""
    redis_url: str = ""
    fakes: dict[str, Any] = field(default_factory=dict)
    changed_env: dict[str, str] = field(default_factory=dict)
    compose: shape.ComposeApp | None = None
    nginx: Child | None = None
    nginx_port: int = 0
    app_port: int = 0
    replica_env: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers

    def child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.workdir / "logs" / f"{name}.log", env=env, cwd=ROOT)
        self.children.append(child)
        return child

    @property
    def hub(self) -> str:
        return netns.HUB_ADDRESS

    @property
    def nginx_target(self) -> str:
        return f"{self.hub}:{self.nginx_port}"

    # ------------------------------------------------------------------ stores

    def start_mongo(self) -> None:
        port = free_port(self.hub)
        child = self.child(
            "secantusdb",
            python_argv(
                "secantus",
                "--host",
                self.hub,
                "--port",
                str(port),
                "--storage-path",
                str(self.workdir / "mongo"),
                "--log-level",
                "WARNING",
            ),
        ).start()
        wait_for(lambda: port_open(self.hub, port) or _alive(child), 60, "SecantusDB listening")
        self.mongo_uri = f"mongodb://{self.hub}:{port}/?replicaSet=secantus"

    def start_redis(self) -> None:
        import redis_topologies  # tests/: the Debian redis-server topologies the suite uses

        root = self.workdir / "redis"
        reachable = ("--protected-mode", "no")  # no password, on an address that is not loopback
        if self.redis_mode == "cluster":
            self.redis = redis_topologies.RedisClusterTopology(
                root, masters=3, replicas=1, host=self.hub, extra_args=reachable
            ).start()
        else:
            port = redis_topologies.pick_ports(1, self.hub)[0]
            argv = [
                redis_topologies.need_binary("redis-server"),
                *("--port", str(port), "--bind", self.hub, "--save", "", "--appendonly", "no"),
                *("--dir", str(root), "--maxclients", "19000", *reachable),
            ]
            self.redis = redis_topologies.RedisProcess(f"redis-{port}", argv, root, self.hub, port).start()
        self.redis_url = (
            f"redis://{self.hub}:{(self.redis.nodes[0] if self.redis_mode == 'cluster' else self.redis).port}"
        )

    def start_thirdparty(self) -> None:
        child = self.child(
            "thirdparty",
            python_argv("deploy.rehearsal.thirdparty", "--host", self.hub, "--counts", str(self.counts_path)),
        ).start(stdout_pipe=True)
        self.fakes = json.loads(child.read_line(60))
        self.thirdparty = child

    @property
    def counts_path(self) -> Path:
        return self.workdir / "thirdparty-counts.json"

    def cli(self, *args: str, timeout: float = 120) -> str:
        """`hepgg_server.py ARGS` against the rehearsal's stores, as an operator runs it."""
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
        env.update(HEPGG_MONGO_URI=self.mongo_uri, HEPGG_REDIS_URL=self.redis_url, HEPGG_MONGO_DB=MONGO_DB)
        result = subprocess.run(
            [sys.executable, str(ROOT / "hepgg_server.py"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"hepgg_server.py {args[0]} exited {result.returncode}: {result.stderr[-2000:]}")
        return result.stdout

    def seed(self, profiles: int) -> None:
        path = self.workdir / "seed.json"
        path.write_text(json.dumps(seed_document(profiles)))
        self.cli("import", str(path))

    # ------------------------------------------------------------------ replicas

    def configure_replicas(self) -> None:
        self.compose = shape.compose_app()
        self.app_port = shape.app_port()
        variables = {
            "TURNSTILE_SECRET": self.fakes["turnstile_secret"],
            "TURNSTILE_SITEKEY": "1x00000000000000000000AA",  # Cloudflare's always-passes test key
            "DISCORD_BOT_TOKEN": "rehearsal-bot-token",
            "MUSIC_UPSTREAM_URL": self.fakes["music"],
            "SMS_API_URL": self.fakes["sms"],
            "SMTP_HOST": self.hub,
            "SMTP_PORT": str(self.fakes["smtp_port"]),
        }
        overrides = {
            "HEPGG_MONGO_URI": self.mongo_uri,
            "HEPGG_REDIS_URL": self.redis_url,
            "HEPGG_MONGO_DB": MONGO_DB,
            "HEPGG_PROCESSES": str(self.processes),
            "HEPGG_TRUSTED_PROXIES": netns.SUBNET,  # the rehearsal network, as compose trusts its own subnet
            "HEPGG_TURNSTILE_VERIFY_URL": self.fakes["turnstile"],  # production talks to Cloudflare and Discord
            "HEPGG_DISCORD_API_URL": self.fakes["discord"],
        }
        self.replica_env, self.changed_env = shape.replica_environment(self.compose, variables, overrides)
        if self.replica_env.get("HEPGG_PORT") != str(self.app_port):
            raise shape.ShapeError("nginx.conf's upstream port differs from the image's HEPGG_PORT")
        for index in range(1, self.replica_count + 1):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPGG_", "PROMETHEUS_"))}
            env.update(self.replica_env, HEPGG_DATA_DIR=str(self.workdir / f"app{index}"), TMPDIR="/tmp")
            argv = [*netns.exec_prefix(netns.app_namespace(index)), sys.executable, "hepgg_server.py", "serve"]
            self.replicas.append(Replica(index, self.child(f"app{index}", argv, env)))

    def start_replica(self, replica: Replica) -> None:
        with open(replica.child.log, "a") as log:
            log.write(f"---- rehearsal: start #{replica.starts + 1} at {time.monotonic():.3f}\n")
        replica.child.start()
        replica.starts += 1

    def ready(self, replica: Replica) -> bool:
        if not replica.child.running:
            raise RuntimeError(f"app{replica.index} exited with {replica.child.proc.poll()}:\n{replica.child.tail()}")
        try:
            url = f"http://{replica.address}:{self.app_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, replica: Replica, timeout: float = 120) -> dict[str, float | None]:
        """Seconds from now until the replica accepts connections (the kernel completes a connect), and
        until its /readyz answers 200. Traffic nginx sends in between waits in the listen backlog."""
        started = time.monotonic()
        accepting: list[float] = []

        def ready() -> bool:
            if not accepting and not refuses(replica.address, self.app_port):
                accepting.append(time.monotonic() - started)
            return self.ready(replica)

        wait_for(ready, timeout, f"app{replica.index} /readyz 200", interval=0.1)
        return {
            "accepting_after_s": round(accepting[0], 2) if accepting else None,
            "ready_after_s": round(time.monotonic() - started, 2),
        }

    def stop_replica(self, replica: Replica) -> dict[str, Any]:
        """SIGTERM, then wait for the exit; SIGKILL of everything in its namespace after compose's grace."""
        assert self.compose is not None
        sent = time.monotonic()
        replica.child.send(signal.SIGTERM)
        refused_at = None
        deadline = sent + self.compose.stop_grace
        code = None
        while time.monotonic() < deadline:
            code = replica.child.wait(0.1)
            if code is not None:
                break
            if refused_at is None and refuses(replica.address, self.app_port):
                refused_at = time.monotonic()
        killed = code is None
        if killed:
            netns.kill_namespace_processes(replica.namespace)
            code = replica.child.wait(10)
        exited = time.monotonic()
        netns.kill_namespace_processes(replica.namespace)  # nothing of it may linger (render processes…)
        return {
            "sigterm": round(sent, 3),
            "refusing_connects_after": round(refused_at - sent, 2) if refused_at else None,
            "exited_after": round(exited - sent, 2),
            "exit_code": code,
            "killed_after_grace": killed,
        }

    def kill_replica(self, replica: Replica) -> dict[str, Any]:
        sent = time.monotonic()
        count = netns.kill_namespace_processes(replica.namespace, signal.SIGKILL)
        code = replica.child.wait(10)
        return {"sigkill": round(sent, 3), "processes_killed": count, "exit_code": code}

    # ------------------------------------------------------------------ nginx

    def start_nginx(self) -> None:
        directory = self.workdir / "nginx"
        directory.mkdir(parents=True, exist_ok=True)
        self.nginx_port = shape.listen_port()
        conf = directory / "nginx.conf"
        conf.write_text(shape.nginx_config([r.address for r in self.replicas], directory))
        argv = ["nginx", "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")]
        self.nginx = self.child("nginx", [*argv, "-g", "daemon off;"]).start()
        wait_for(lambda: port_open(self.hub, self.nginx_port) or _alive(self.nginx), 30, "nginx listening")

    # ------------------------------------------------------------------ teardown

    def stop_all(self) -> None:
        """Everything still running, in reverse order of start (the load is stopped before)."""
        for child in reversed(self.children):
            if child.running:  # a replica gets its grace; the stores' data is thrown away with the work directory
                grace = self.compose.stop_grace if self.compose and child.name.startswith("app") else 5
                child.stop(signal.SIGTERM, timeout=grace)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def refuses(host: str, port: int) -> bool:
    """True when a connect is refused (nothing listens); a connect that succeeds or is slow is not a refusal."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _alive(child: Child) -> bool:
    if not child.running:
        raise RuntimeError(f"{child.name} exited with {child.proc.poll() if child.proc else None}:\n{child.tail()}")
    return False
