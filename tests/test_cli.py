"""The command line: import validation, commands against a running server, restarts, embedded lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pymongo
import pytest

from conftest import ROOT, base_document, free_port, metric_value, run_cli, wait_until, wait_until_serving

pytestmark = pytest.mark.slow


def _get(port: int, path: str, host: str, user_agent: str = "Mozilla/5.0 test") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host, "User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RunningServer:
    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port = data_dir, port
        self.tmp = data_dir.parent / "tmp"  # where serve makes its metrics directory
        self.tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
        env.update(
            HEPGG_DATA_DIR=str(data_dir), HEPGG_PORT=str(port), HEPGG_VIEW_FLUSH_INTERVAL="0.2", TMPDIR=str(self.tmp)
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "hepgg_server.py"), "serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until_serving(self.proc, port)

    def embedded_pids(self) -> list[int]:
        """The server's embedded-store children (it also has OG render workers)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        pids = [int(pid) for pid in out.split()]
        return [pid for pid in pids if re.search(rb"valkey|secantus", Path(f"/proc/{pid}/cmdline").read_bytes())]

    def stop(self, signum=signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def _wait_dead(pids: list[int], timeout: float = 15) -> bool:
    await wait_until(lambda: not any(_alive(pid) for pid in pids), timeout, message=f"{pids} still alive")
    return True


def _views_flushed(port: int) -> float:
    """The server's `hepgg_stats_flushed_total{kind="view"}`: views it has written to MongoDB since it started."""
    status, body = _get(port, "/metrics", "localhost")
    assert status == 200
    return metric_value(body, "hepgg_stats_flushed_total", kind="view")


def test_import_reports_every_bad_record_and_writes_nothing(tmp_path, store_urls):
    doc = base_document()
    doc["users"].append({"id": "bad id!", "surprise": 1})
    doc["profiles"].append(dict(doc["profiles"][0], id="p2", domain="ALICE.hep.gg"))  # same domain, other case
    doc["profiles"].append(dict(doc["profiles"][0], id="p3", domain="x.hep.gg", template="nope", colour="red"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    db_name = f"cli_import_{tmp_path.name}"
    env = {"HEPGG_MONGO_URI": store_urls.mongo_uri, "HEPGG_REDIS_URL": store_urls.redis_url, "HEPGG_MONGO_DB": db_name}
    result = run_cli("import", str(path), env=env)
    assert result.returncode != 0
    for fragment in (
        "users[1]",
        "surprise",
        "domain 'alice.hep.gg' appears more than once",
        "template",
        "colour",
        "nothing was written",
    ):
        assert fragment in result.stderr
    with pymongo.MongoClient(store_urls.mongo_uri) as client:  # the valid u1/p1 were not written either
        db = client[db_name]
        assert db.users.count_documents({}) == 0 and db.profiles.count_documents({}) == 0
        good = tmp_path / "good.json"
        good.write_text(json.dumps(base_document()))
        assert run_cli("import", str(good), env=env).returncode == 0
        assert db.users.count_documents({}) == 1 and db.profiles.count_documents({}) == 1  # so the check can see writes


async def test_commands_against_a_running_server_and_restart_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    server = RunningServer(data_dir, port)
    try:
        doc_path = tmp_path / "doc.json"
        doc_path.write_text(json.dumps(base_document()))
        result = run_cli("import", str(doc_path), env={"HEPGG_DATA_DIR": str(data_dir)})
        assert result.returncode == 0, result.stderr
        assert run_cli("seed-demo", "--data-dir", str(data_dir)).returncode == 0
        # Within the profile cache bound (only 404s until then, which count no view).
        await wait_until(lambda: _get(port, "/", "alice.hep.gg")[0] == 200)
        status, body = _get(port, "/", f"demo.localhost:{port}")
        assert status == 200 and b"Demo Profile" in body
        await wait_until(lambda: _views_flushed(port) == 2)  # alice's and the demo's
        stats = json.loads(run_cli("stats", "p1", "--data-dir", str(data_dir)).stdout)
        assert stats["views"] == 1 and stats["plays"] == 0
        lines = run_cli("stats", "demo", "p1", "--data-dir", str(data_dir)).stdout.splitlines()
        assert [json.loads(line)["profile_id"] for line in lines] == ["demo", "p1"]
        assert [json.loads(line)["views"] for line in lines] == [1, 1]
        children = server.embedded_pids()
        assert len(children) == 2
        assert [p.name[:14] for p in server.tmp.iterdir()] == ["hepgg-metrics-"]  # serve's own, while it runs
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert await _wait_dead(children), "embedded servers outlived the server"
    assert list(server.tmp.iterdir()) == []  # and removed on exit

    server = RunningServer(data_dir, port)  # restart on the same data dir: data is on disk
    try:
        assert _get(port, "/", "alice.hep.gg")[0] == 200  # the same visitor again, within 30 s
        assert _get(port, "/", "alice.hep.gg", user_agent="Mozilla/5.0 another visitor")[0] == 200
    finally:
        assert server.stop(signal.SIGINT) == 0  # a drained server has written or dropped every view it queued
    stats = json.loads(run_cli("stats", "p1", "--data-dir", str(data_dir)).stdout)
    # The old count survived the restart, the new visitor counts, the repeat does not (3 without dedup,
    # 1 if nothing had been flushed).
    assert stats["views"] == 2


async def test_embedded_servers_die_with_a_crashed_server(tmp_path):
    server = RunningServer(tmp_path / "data", free_port())
    children = server.embedded_pids()
    assert len(children) == 2
    server.stop(signal.SIGKILL)
    assert await _wait_dead(children)
    # and the data dir can be opened again at once (the lock died with the server): the stores answer
    result = run_cli("stats", "p1", "--data-dir", str(tmp_path / "data"))
    assert result.stderr.startswith("error: no profile 'p1'"), result.stderr


def test_options_from_env_config_file_and_flags(tmp_path):
    from hepgg_server import build_parser
    from runtime.config import load_config

    config_file = tmp_path / "hepgg.toml"
    config_file.write_text('port = 7001\nbase-domain = "from-file.test"\ndashboard-url = "https://file/"\n')
    args = build_parser().parse_args(["serve", "--config", str(config_file), "--port", "7003"])
    config = load_config(args, environ={"HEPGG_PORT": "7002", "HEPGG_BASE_DOMAIN": "from-env.test"})
    assert config.port == 7003  # flag beats env beats file
    assert config.base_domain == "from-env.test"
    assert config.dashboard_url == "https://file/"
    assert config.public_origin == "http://localhost:7003"
    bad = run_cli("serve", "--trusted-proxies", "not-a-cidr")
    assert bad.returncode == 2 and "trusted-proxies" in bad.stderr


def test_a_second_serve_on_the_same_data_dir_is_refused_naming_the_first(tmp_path):
    data_dir = tmp_path / "data"
    server = RunningServer(data_dir, free_port())
    try:
        second = run_cli("serve", "--data-dir", str(data_dir), "--port", str(free_port()), timeout=60)
        assert second.returncode == 1
        assert f"is in use by pid {server.proc.pid} (serve)" in second.stderr and "Traceback" not in second.stderr
        # other commands still attach to the running server's stores
        assert run_cli("stats", "nobody", "--data-dir", str(data_dir)).returncode == 1
        assert server.proc.poll() is None
    finally:
        assert server.stop(signal.SIGTERM) == 0


def test_stats_of_an_unknown_profile_is_an_error(store_urls, tmp_path):
    env = {
        "HEPGG_MONGO_URI": store_urls.mongo_uri,
        "HEPGG_REDIS_URL": store_urls.redis_url,
        "HEPGG_MONGO_DB": f"cli_stats_{tmp_path.name}",
    }
    result = run_cli("stats", "no-such-profile", env=env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: no profile 'no-such-profile'")
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(base_document()))
    assert run_cli("import", str(path), env=env).returncode == 0
    result = run_cli("stats", "p1", env=env)
    assert result.returncode == 0 and json.loads(result.stdout)["views"] == 0
    result = run_cli("stats", "p1", "no-such-profile", env=env)  # one unknown among several: nothing printed
    assert (result.returncode, result.stdout) == (1, "") and "no profile 'no-such-profile'" in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{}", "nothing to import: the file has no users and no profiles"),
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply"),
        (b"\xff\xfe{", "is not JSON"),
        (json.dumps(base_document(theme={"font": []})).encode(), "profiles[0] (p1): theme.font must be one of"),
        (
            json.dumps(base_document(content={"bio": "X"})).replace('"X"', '"\\ud800"').encode(),
            "profiles[0] (p1): content.bio must be valid Unicode text",
        ),
    ],
)
def test_import_answers_bad_files_with_a_message_never_a_traceback(store_urls, tmp_path, content, message):
    path = tmp_path / "doc.json"
    path.write_bytes(content)
    env = {
        "HEPGG_MONGO_URI": store_urls.mongo_uri,
        "HEPGG_REDIS_URL": store_urls.redis_url,
        "HEPGG_MONGO_DB": f"cli_bad_{tmp_path.name}",
    }
    result = run_cli("import", str(path), env=env)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command, own, absent",
    [
        (["import"], ["file"], "--sse-ping-interval"),
        (["presence", "set"], ["USER_ID", "--status"], "--turnstile-secret"),
        (["stats"], ["PROFILE_ID"], "--port"),
    ],
)
def test_command_help_shows_its_own_arguments_first_and_only_the_options_it_reads(command, own, absent):
    result = run_cli(*command, "--help", timeout=30)
    assert result.returncode == 0
    text = result.stdout
    _usage, _, rest = text.partition("\n\n")
    assert absent not in text
    store_heading = rest.index("store options:")
    for argument in own:
        assert rest.index(argument) < store_heading, argument
    assert "--mongo-uri" in rest[store_heading:]
