"""Real Redis topologies from Debian's packages: a Redis Cluster and a Sentinel-managed primary.

Plain classes, usable from pytest (tests/redis_topology_fixtures.py), from the benchmarks and from a
rehearsal script (`python tests/redis_topologies.py cluster|sentinel`, below). Everything listens where
it is told (127.0.0.1 by default), lives under one directory of its own, is bounded in time, and is
stopped by `stop()` (also when the process that started it dies: PR_SET_PDEATHSIG).

    cluster = RedisClusterTopology(tmp_dir).start()   # 3 masters + 3 replicas, cluster_state:ok
    cluster.url                                       # redis://127.0.0.1:<port of the first node>
    killed = cluster.kill_master_of("presence:u1")    # SIGKILL the master that owns this key
    elapsed = cluster.wait_failover(killed)           # its replica took over, every survivor says ok
    cluster.restart(killed)                           # comes back as a replica of the new master
    cluster.stop()

    sentinel = SentinelTopology(tmp_dir).start()      # a primary, a replica, 3 sentinels, quorum 2
    sentinel.url                                      # redis+sentinel://127.0.0.1:<s1>,...:<s3>/hepgg
    old = sentinel.kill_primary(); sentinel.wait_failover(old); sentinel.stop()

Ports: a cluster node's bus listens on port + 10000, so data ports are picked in 20000-22700 (bus
30000-32700), both below the kernel's ephemeral range (32768+), each pair checked free before use.
The Debian `redis-server` 7.0 is required (sharded pub/sub needs 7.0); `scripts/install.sh --test`
installs redis-server, redis-tools and redis-sentinel.

Start a topology from the thread that will outlive it (PR_SET_PDEATHSIG fires when the *thread* that
forked a child exits): in pytest that is the main thread, which session fixtures run on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

PORT_LOW, PORT_HIGH = 20000, 22700  # data ports; the cluster bus is port + 10000
BUS_OFFSET = 10000
SENTINEL_SERVICE = "hepgg"

# A command prefix per node (e.g. ["ip", "netns", "exec", "app1"]) for scripts that place nodes in namespaces.
Launcher = Callable[[int], Sequence[str]]


class TopologyError(RuntimeError):
    """A topology did not reach the state asked for in time; the message says which and where the logs are."""


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise TopologyError(f"`{name}` is not installed: run scripts/install.sh --test (Debian redis packages)")
    return path


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_claimed: set[int] = set()  # ports this process already handed out (a stopped node's port stays reserved)


def pick_ports(count: int, host: str = "127.0.0.1", *, with_bus: bool = False) -> list[int]:
    """`count` free ports in 20000-22700 (and port + 10000 free too when `with_bus`), never handed out twice."""
    ports: list[int] = []
    for _ in range(5000):
        if len(ports) == count:
            return ports
        port = random.randrange(PORT_LOW, PORT_HIGH)
        if port in _claimed or not _port_free(host, port) or (with_bus and not _port_free(host, port + BUS_OFFSET)):
            continue
        _claimed.add(port)
        ports.append(port)
    raise TopologyError(f"could not find {count} free ports in {PORT_LOW}-{PORT_HIGH}")


def _die_with_parent() -> None:  # between fork and exec
    os.setpgrp()  # a Ctrl-C on the terminal reaches the owner, which stops nodes in order
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except (redis.RedisError, OSError) as exc:
            last_error, result = exc, None
        if result:
            return result
        time.sleep(interval)
    raise TopologyError(
        f"{what} not reached within {timeout:.0f}s" + (f" (last error: {last_error})" if last_error else "")
    )


@dataclass
class RedisProcess:
    """One redis-server or redis-sentinel on a fixed address: start, kill (SIGKILL), stop, pause, resume."""

    name: str
    argv: list[str]
    directory: Path
    host: str
    port: int
    prefix: Sequence[str] = ()
    tls_ca: Path | None = None  # the CA that signed a TLS-only server's certificate (checks go over TLS)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> RedisProcess:
        if self.running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *self.argv],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                close_fds=True,
            )

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise TopologyError(f"{self.name} exited with {self.proc.returncode}; see {self.directory}")
            return self.client(timeout=0.5).ping()

        _wait(answers, timeout, f"{self.name} answering PING on {self.address}")
        return self

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A fresh synchronous client for this one process (never cluster-aware): for checks and faults."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            single_connection_client=True,
            **self._tls(),
        )

    def _tls(self) -> dict:
        return {"ssl": True, "ssl_ca_certs": str(self.tls_ca)} if self.tls_ca else {}

    def call(self, *args, timeout: float = 2.0):
        """One command, its raw reply (no redis-py response parsing: INFO and CLUSTER NODES stay text)."""
        connection_class = redis.SSLConnection if self.tls_ca else redis.Connection
        connection = connection_class(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            **({"ssl_ca_certs": str(self.tls_ca)} if self.tls_ca else {}),
        )
        try:
            connection.send_command(*args)
            reply = connection.read_response()
        finally:
            connection.disconnect()
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye to peers or clients."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        self._signal_and_wait(signal.SIGTERM, timeout)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers (a hung node)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def _signal_and_wait(self, sig: int, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _server_argv(port: int, host: str, directory: Path, extra: Sequence[str]) -> list[str]:
    return [
        need_binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--maxclients",
        "19000",
        *extra,
    ]


# ------------------------------------------------------------------------------------------------ cluster


class RedisClusterTopology:
    """`masters` masters with `replicas` replicas each, created with `redis-cli --cluster create`.

    Node roles change under failover; `masters()`, `master_of(key)` and `replicas_of(node)` ask the live
    cluster, never the start-up layout.
    """

    def __init__(
        self,
        root: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        host: str | Sequence[str] = "127.0.0.1",
        node_timeout_ms: int = 1000,
        extra_args: Sequence[str] = (),
        launcher: Launcher | None = None,
    ):
        self.root = Path(root)
        self.size = masters * (1 + replicas)
        self.replicas = replicas
        self.hosts = [host] * self.size if isinstance(host, str) else list(host)
        if len(self.hosts) != self.size:
            raise ValueError(f"need {self.size} hosts, got {len(self.hosts)}")
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisProcess] = []
        ports = pick_ports(self.size, self.hosts[0], with_bus=True)
        for index, (node_host, port) in enumerate(zip(self.hosts, ports, strict=True)):
            directory = self.root / f"node-{port}"
            args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / "nodes.conf"),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                *extra_args,
            ]
            self.nodes.append(
                RedisProcess(
                    f"redis-{port}",
                    _server_argv(port, node_host, directory, args),
                    directory,
                    node_host,
                    port,
                    tuple(launcher(index)) if launcher else (),
                )
            )

    @property
    def url(self) -> str:
        """A redis:// URL naming one node (the first one still running): the app discovers the rest."""
        node = next((n for n in self.nodes if n.running), self.nodes[0])
        return f"redis://{node.address}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    def start(self, timeout: float = 60.0) -> RedisClusterTopology:
        started = time.monotonic()
        for node in self.nodes:
            node.start()
        create = subprocess.run(
            [
                need_binary("redis-cli"),
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if create.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed: {create.stdout[-2000:]} {create.stderr[-2000:]}")
        self.wait_healthy(max(5.0, timeout - (time.monotonic() - started)))
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    # -- what the live cluster says

    def _live(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.running]

    def _node_at(self, address: str) -> RedisProcess:
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def cluster_nodes(self) -> list[dict]:
        """CLUSTER NODES as seen by a live node: address, id, flags, master id, slots."""
        for node in self._live():
            with contextlib.suppress(redis.RedisError, OSError):
                return _parse_cluster_nodes(node.call("CLUSTER", "NODES"))
        raise TopologyError("no cluster node answers")

    def masters(self) -> list[RedisProcess]:
        """The nodes that serve slots now, as the live cluster sees them."""
        return [
            self._node_at(entry["address"])
            for entry in self.cluster_nodes()
            if "master" in entry["flags"] and "fail" not in entry["flags"] and entry["slots"]
        ]

    def replicas_of(self, master: RedisProcess) -> list[RedisProcess]:
        entries = self.cluster_nodes()
        master_id = next(e["id"] for e in entries if e["address"] == master.address)
        return [self._node_at(e["address"]) for e in entries if e["master_id"] == master_id]

    def slot_of(self, key: str) -> int:
        return int(self._live()[0].call("CLUSTER", "KEYSLOT", key))

    def master_of(self, key: str) -> RedisProcess:
        node = self.master_of_slot(self.slot_of(key))
        if node is None:
            raise TopologyError(f"no master serves the slot of {key!r}")
        return node

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok with all 16384 slots ok and agrees on who serves them;
        every running replica's link to its master is up."""
        live = self._live()
        views = set()
        for node in live:
            info = _info_fields(node.call("CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            entries = _parse_cluster_nodes(node.call("CLUSTER", "NODES"))
            views.add(
                tuple(
                    sorted(
                        (e["address"], tuple(e["slots"]))
                        for e in entries
                        if "master" in e["flags"] and "fail" not in e["flags"] and e["slots"]
                    )
                )
            )
            replication = _info_fields(node.call("INFO", "replication"))
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return len(views) == 1

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Seconds until `healthy()`; TopologyError after `timeout`."""
        started = time.monotonic()
        _wait(self.healthy, timeout, f"cluster healthy (logs under {self.root})", interval=0.1)
        return time.monotonic() - started

    def replicated(self) -> bool:
        """Every running replica has applied everything its master has written (replication is async)."""
        for node in self._live():
            info = _info_fields(node.call("INFO", "replication"))
            if info.get("role") != "master":
                continue
            offset = int(info.get("master_repl_offset", 0))
            for key, value in info.items():
                if key.startswith("slave") and key[5:].isdigit():
                    fields = dict(item.split("=", 1) for item in value.split(","))
                    if fields.get("state") == "online" and int(fields.get("offset", 0)) < offset:
                        return False
        return True

    def wait_replicated(self, timeout: float = 10.0) -> float:
        started = time.monotonic()
        _wait(self.replicated, timeout, "replicas caught up with their masters", interval=0.02)
        return time.monotonic() - started

    # -- resharding

    def node_id(self, node: RedisProcess) -> str:
        return next(e["id"] for e in self.cluster_nodes() if e["address"] == node.address)

    def move_slot(self, slot: int, target: RedisProcess, timeout: float = 30.0) -> None:
        """Migrate one hash slot (and its keys) to `target`, as `redis-cli --cluster reshard` does."""
        source = next(
            self._node_at(e["address"])
            for e in self.cluster_nodes()
            if "master" in e["flags"] and any(low <= slot <= high for low, high in e["slots"])
        )
        if source is target:
            return
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.call("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in self.masters():
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        _wait(
            lambda: self.master_of_slot(slot) is target and self.healthy(),
            timeout,
            f"slot {slot} served by {target.address}",
        )

    def master_of_slot(self, slot: int) -> RedisProcess | None:
        for entry in self.cluster_nodes():
            serving = "master" in entry["flags"] and "fail" not in entry["flags"]
            if serving and any(low <= slot <= high for low, high in entry["slots"]):
                return self._node_at(entry["address"])
        return None

    # -- faults

    def kill_master_of(self, key: str) -> RedisProcess:
        node = self.master_of(key)
        node.kill()
        return node

    def wait_failover(self, killed: RedisProcess, timeout: float = 30.0) -> float:
        """Seconds until a replica of `killed` serves its slots and every survivor says cluster_state:ok."""
        started = time.monotonic()

        def taken_over() -> bool:
            for node in self._live():  # every survivor: slots moved away from the killed node, state ok
                entries = _parse_cluster_nodes(node.call("CLUSTER", "NODES"))
                if any(e["address"] == killed.address and e["slots"] for e in entries):
                    return False
                info = _info_fields(node.call("CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            return True

        _wait(taken_over, timeout, f"failover of {killed.address} (logs under {self.root})", interval=0.05)
        return time.monotonic() - started

    def restart(self, node: RedisProcess, timeout: float = 30.0) -> float:
        """Start a killed node again (it rejoins as a replica) and wait until the cluster is healthy."""
        node.start()
        return self.wait_healthy(timeout)

    # -- data

    def flushall(self) -> None:
        for node in self.masters():
            node.call("FLUSHALL")

    def dbsize(self) -> int:
        return sum(int(node.call("DBSIZE")) for node in self.masters())

    def describe(self) -> dict:
        return {
            "url": self.url,
            "nodes": [
                {
                    "address": e["address"],
                    "role": "master" if "master" in e["flags"] else "replica",
                    "slots": e["slots"],
                }
                for e in self.cluster_nodes()
            ],
            "logs": str(self.root),
        }


def _info_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def _parse_cluster_nodes(text: str) -> list[dict]:
    entries = []
    for line in text.strip().splitlines():
        parts = line.split()
        slots = []
        for item in parts[8:]:
            if item.startswith("["):
                continue  # a slot being imported or migrated
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        entries.append(
            {
                "id": parts[0],
                "address": parts[1].split("@")[0],
                "flags": set(parts[2].split(",")),
                "master_id": parts[3] if parts[3] != "-" else None,
                "slots": slots,
            }
        )
    return entries


# ------------------------------------------------------------------------------------------------ sentinel


class SentinelTopology:
    """A primary, `replicas` replicas and `sentinels` redis-sentinel processes watching service `hepgg`.

    Quorum 2, down-after 1000 ms, failover-timeout 5000 ms: a killed primary is replaced in a few seconds.
    """

    def __init__(
        self,
        root: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        host: str = "127.0.0.1",
        service: str = SENTINEL_SERVICE,
        down_after_ms: int = 1000,
        launcher: Launcher | None = None,
    ):
        self.root = Path(root)
        self.host = host
        self.service = service
        self.down_after_ms = down_after_ms
        data_ports = pick_ports(1 + replicas, host)
        sentinel_ports = pick_ports(sentinels, host)
        prefix = (lambda i: tuple(launcher(i))) if launcher else (lambda i: ())
        self.servers: list[RedisProcess] = []
        for index, port in enumerate(data_ports):
            directory = self.root / f"redis-{port}"
            extra = ["--replicaof", host, str(data_ports[0])] if index else []
            self.servers.append(
                RedisProcess(
                    f"redis-{port}", _server_argv(port, host, directory, extra), directory, host, port, prefix(index)
                )
            )
        self.sentinels: list[RedisProcess] = []
        for index, port in enumerate(sentinel_ports):
            directory = self.root / f"sentinel-{port}"
            self.sentinels.append(
                RedisProcess(
                    f"sentinel-{port}",
                    [need_binary("redis-sentinel"), str(directory / "sentinel.conf")],
                    directory,
                    host,
                    port,
                    prefix(len(data_ports) + index),
                )
            )
        self._quorum = min(2, sentinels)

    @property
    def url(self) -> str:
        """The documented form: redis+sentinel://host:port[,host:port...]/service_name."""
        return "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{self.service}"

    def start(self, timeout: float = 60.0) -> SentinelTopology:
        primary = self.servers[0]
        for server in self.servers:
            server.start()
        for sentinel in self.sentinels:
            sentinel.directory.mkdir(parents=True, exist_ok=True)
            (sentinel.directory / "sentinel.conf").write_text(
                "\n".join(
                    [
                        f"port {sentinel.port}",
                        f"bind {sentinel.host}",
                        "daemonize no",
                        f"dir {sentinel.directory}",
                        f"sentinel monitor {self.service} {primary.host} {primary.port} {self._quorum}",
                        f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                        f"sentinel failover-timeout {self.service} 5000",
                        f"sentinel parallel-syncs {self.service} 1",
                        "",
                    ]
                )
            )
            sentinel.start()
        self.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        for process in [*reversed(self.sentinels), *reversed(self.servers)]:
            process.stop()

    def primary_address(self) -> str | None:
        """What a quorum of running sentinels names as the primary (None while they disagree)."""
        answers = []
        for sentinel in self.sentinels:
            if sentinel.running:
                with contextlib.suppress(redis.RedisError, OSError):
                    host, port = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                    answers.append(f"{host}:{port}")
        if answers and answers.count(answers[0]) == len(answers) and len(answers) >= self._quorum:
            return answers[0]
        return None

    def primary(self) -> RedisProcess:
        address = _wait(self.primary_address, 10, "sentinels agreeing on a primary")
        return next(s for s in self.servers if s.address == address)

    def healthy(self) -> bool:
        address = self.primary_address()
        if address is None:
            return False
        primary = next(s for s in self.servers if s.address == address)
        if not primary.running or _info_fields(primary.call("INFO", "replication")).get("role") != "master":
            return False
        for server in self.servers:
            if server is not primary and server.running:
                info = _info_fields(server.call("INFO", "replication"))
                if info.get("role") != "slave" or info.get("master_link_status") != "up":
                    return False
        for sentinel in self.sentinels:  # every sentinel knows the others, so a quorum can vote
            if sentinel.running:
                state = sentinel.call("SENTINEL", "MASTER", self.service)
                fields = state if isinstance(state, dict) else dict(zip(state[::2], state[1::2], strict=True))
                if int(fields.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                    return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        _wait(self.healthy, timeout, f"sentinel set-up healthy (logs under {self.root})", interval=0.1)
        return time.monotonic() - started

    def kill_primary(self) -> RedisProcess:
        primary = self.primary()
        primary.kill()
        return primary

    def wait_failover(self, killed: RedisProcess, timeout: float = 30.0) -> float:
        """Seconds until the sentinels name another primary and it says role:master."""
        started = time.monotonic()

        def promoted() -> bool:
            address = self.primary_address()
            if address is None or address == killed.address:
                return False
            server = next(s for s in self.servers if s.address == address)
            return _info_fields(server.call("INFO", "replication")).get("role") == "master"

        _wait(promoted, timeout, f"sentinel failover away from {killed.address} (logs under {self.root})")
        return time.monotonic() - started

    def restart(self, server: RedisProcess, timeout: float = 30.0) -> float:
        """Start a killed server again; the sentinels turn it into a replica of the new primary."""
        server.start()
        return self.wait_healthy(timeout)

    def flushall(self) -> None:
        self.primary().call("FLUSHALL")

    def describe(self) -> dict:
        return {
            "url": self.url,
            "primary": self.primary_address(),
            "servers": [s.address for s in self.servers],
            "sentinels": [s.address for s in self.sentinels],
            "logs": str(self.root),
        }


# ------------------------------------------------------------------------------------------------ TLS


def make_certificates(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throw-away CA and a server certificate for `host` (openssl CLI), valid for one day."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl = need_binary("openssl")
    paths = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr")}
    extensions = directory / "san.cnf"
    extensions.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    ca_key, ca_crt = str(paths["ca.key"]), str(paths["ca.crt"])
    key, csr, crt = str(paths["server.key"]), str(paths["server.csr"]), str(paths["server.crt"])
    for argv in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hepgg-test-ca",
            "-keyout",
            ca_key,
            "-out",
            ca_crt,
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(extensions),
            "-out",
            crt,
        ],
    ):
        subprocess.run([openssl, *argv], check=True, capture_output=True, timeout=60)
    return paths


def tls_server(root: Path, host: str = "127.0.0.1") -> RedisProcess:
    """One redis-server that speaks TLS only (no plain port); `tls_ca` holds the CA clients must trust."""
    certificates = make_certificates(root / "tls", host)
    port = pick_ports(1, host)[0]
    directory = root / f"redis-tls-{port}"
    argv = _server_argv(0, host, directory, [])
    argv += ["--tls-port", str(port), "--tls-cert-file", str(certificates["server.crt"])]
    argv += ["--tls-key-file", str(certificates["server.key"]), "--tls-ca-cert-file", str(certificates["ca.crt"])]
    argv += ["--tls-auth-clients", "no"]
    return RedisProcess(f"redis-tls-{port}", argv, directory, host, port, tls_ca=certificates["ca.crt"])


# ------------------------------------------------------------------------------------------------ script


def main(argv: list[str] | None = None) -> int:
    """Start a topology, print its URL and layout as JSON, keep it up until SIGINT/SIGTERM or --seconds."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=["cluster", "sentinel"])
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where nodes keep files and logs (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long (bounded by default)")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix=f"hepgg-{args.kind}-"))
    topology: RedisClusterTopology | SentinelTopology
    if args.kind == "cluster":
        topology = RedisClusterTopology(root, masters=args.masters, replicas=args.replicas)
    else:
        topology = SentinelTopology(root, replicas=args.replicas)
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        topology.start()
        print(json.dumps(topology.describe()), flush=True)
        deadline = time.monotonic() + args.seconds
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        topology.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
