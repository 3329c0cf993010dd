"""deploy/rehearse (issue 17): the production shape under load through a rolling restart, a kill -9 and a Redis
master failover, judged from what every side counted.

The quick tests hold the rehearsal's own pieces to what they promise: it runs deploy/nginx.conf and the compose
environment themselves (so it cannot drift from them), and its checks fail when a count is off. The slow test
runs the short rehearsal end to end (as root: it creates network namespaces) and reads its figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from deploy.rehearsal import netns, shape
from deploy.rehearsal.verdict import Inputs, Nginx, Verdict

from conftest import ROOT

# The short run's bound, stores to teardown: ~3.5 min at load 12 on this 2-core machine, ~7.5 min at load 25
# (replicas then take 40-77 s to start); past it the rehearsal stops, cleans up and exits 3.
SHORT_RUN_SECONDS = 600


def test_nginx_config_is_deploys_own_with_the_replicas_addresses(tmp_path):
    text = shape.nginx_config(["10.213.0.11", "10.213.0.12", "10.213.0.13"], tmp_path)
    original = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server 10.213.0.12:8888" in text and "server app2:8888" not in text
    assert f"access_log {tmp_path}/access.log rehearsal;" in text
    # Everything else is deploy/nginx.conf line for line: timeouts, buffering, retries.
    kept = [
        line for line in original.splitlines() if "app" not in line and "/tmp/" not in line and "access_log" not in line
    ]
    assert all(line in text.splitlines() for line in kept)


def test_nginx_config_refuses_a_replica_count_it_does_not_have(tmp_path):
    with pytest.raises(shape.ShapeError, match="3 `server appN:PORT` lines"):
        shape.nginx_config(["10.213.0.11", "10.213.0.12"], tmp_path)


def test_replica_environment_is_the_image_then_compose_then_the_rehearsal():
    app = shape.compose_app()
    variables = dict.fromkeys(
        ("TURNSTILE_SECRET", "TURNSTILE_SITEKEY", "DISCORD_BOT_TOKEN", "MUSIC_UPSTREAM_URL", "SMS_API_URL"), "x"
    )
    variables.update(SMTP_HOST="10.213.0.1", SMTP_PORT="25")
    environment, changed = shape.replica_environment(app, variables, {"HEPGG_MONGO_URI": "mongodb://10.213.0.1/"})
    assert environment["HEPGG_PORT"] == str(shape.app_port())  # the image's port is nginx's upstream port
    assert environment["HEPGG_MONGO_URI"] == "mongodb://10.213.0.1/" and "HEPGG_MONGO_URI" in changed
    assert app.stop_grace > 0 and app.replicas == ["app1", "app2", "app3"]


def test_visitor_addresses_are_distinct_and_inside_the_load_namespaces_range():
    addresses = {netns.visitor_address(n) for n in range(40_000)}
    assert len(addresses) == 32_766  # wraps around the /17, never onto its network or broadcast address
    assert all(a.startswith("10.213.") and 128 <= int(a.split(".")[2]) <= 255 for a in addresses)


def _inputs(**changes) -> Inputs:
    """A tiny run that passes every check: 2 page visitors, 1 play, 1 contact, 1 SSE reconnect."""
    visitor, other = 5, 6
    results = {
        "http": {
            "kind": "http",
            "pages": [
                [10.0, 0.01, 200, False, 40001, visitor, 0, ""],
                [11.0, 0.01, 200, False, 40002, visitor, 0, ""],  # the same visitor again: one view
                [12.0, 0.01, 200, False, 40003, other, 0, ""],
            ],
            "contacts": [[13.0, 0.02, 200, False, 40004, 7, 0, "sms", ""]],
        },
        "music": {"kind": "music", "plays": [[14.0, 14.1, 200, False, 300, 300, True, 8, 0, 40005, ""]]},
        "publisher": {"kind": "publisher", "acks": {"rh-owner-0": [[1, 1.0, 1.01], [2, 15.5, 15.51]]}, "final": {}},
        "sse-0": {
            "kind": "sse",
            "stopped": 40.0,
            "fanout_ms": {"p99": 50.0},
            "listeners": [
                {
                    "i": 0,
                    "path": "/api/v1/profiles/presence/rh-owner-0/stream",
                    "retry_ms": 2000,
                    "seen": 2,
                    "conns": [
                        [2.0, 2.01, 200, 2.02, 1, 1, 1, 15.0, "end", 0],
                        [17.0, 17.01, 200, 17.02, 2, 2, 1, 40.0, "stopped", 0],
                    ],
                }
            ],
        },
    }
    results["publisher"]["final"] = {"rh-owner-0": 2}
    inputs = Inputs(
        results=results,
        nginx=Nginx(),
        stats={"rh-0": {"profile_id": "rh-0", "views": 2, "plays": 1}},
        credits_left={0: 99},
        credits_start=100,
        deliveries={"sms": {0: 1}, "email": {}, "discord": {}},
        events=[],
        windows={"steady": (0.0, 12.5), "restart": (10.5, 13.0)},
        killed=None,
        flush_window=3.0,
    )
    for name, value in changes.items():
        setattr(inputs, name, value)
    return inputs


def _failed(verdict: Verdict) -> list[str]:
    return [check.name for check in verdict.checks if not check.ok]


def test_verdict_passes_a_run_whose_counts_agree():
    assert _failed(Verdict(_inputs()).run()) == []


def test_verdict_fails_a_lost_view_an_extra_play_and_an_unpaid_message():
    failed = _failed(
        Verdict(
            _inputs(
                stats={"rh-0": {"profile_id": "rh-0", "views": 1, "plays": 2}},
                credits_left={0: 100},
            )
        ).run()
    )
    assert failed == [
        "views equal the distinct-visitor renders answered",
        "plays equal the tracks started",
        "credits spent equal messages delivered",
    ]


def test_verdict_fails_a_slow_reconnect_a_stale_first_event_and_an_undocumented_5xx():
    inputs = _inputs()
    conns = inputs.results["sse-0"]["listeners"][0]["conns"]
    conns[1][3] = 26.0  # first event 11 s after the stream was lost
    conns[1][4] = 1  # ... and it was seq 1, while seq 2 had been acknowledged at 15.5 s
    inputs.results["http"]["pages"].append([13.0, 0.01, 502, False, 40006, 9, 1, ""])
    failed = _failed(Verdict(inputs).run())
    assert failed[:3] == [
        "no 5xx except 503 with Retry-After, and every request answered",
        "every SSE listener reconnects within 10 s",
        "the first event after each reconnect is the latest presence",
    ]


def _rehearsal_leftovers() -> list[str]:
    found = [f"namespace {name}" for name in netns.namespaces()]
    ps = subprocess.run(["pgrep", "-af", "hepgg-rehearsal-"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if "pgrep" not in line]
    return found


@pytest.mark.slow
@pytest.mark.timeout(SHORT_RUN_SECONDS + 200)
@pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: root only")
@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("ip", "nginx", "redis-server", "redis-cli")),
    reason="ip, nginx and redis-server are installed by scripts/install.sh --test",
)
def test_short_rehearsal_keeps_every_count_through_restarts_a_kill_and_a_failover(tmp_path):
    command = [sys.executable, str(ROOT / "deploy" / "rehearse"), "--short", "--results-dir", str(tmp_path)]
    command += ["--max-seconds", str(SHORT_RUN_SECONDS)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=SHORT_RUN_SECONDS + 60)
    except subprocess.TimeoutExpired:  # its own bound failed: stop it as Ctrl-C would, so it tears down
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    output = result.stdout[-6000:] + result.stderr[-4000:]
    assert _rehearsal_leftovers() == [], output  # torn down, passed or not
    assert result.returncode in (0, 1), output  # 2: could not run, 3: interrupted or over its time bound
    report = json.loads((tmp_path / "rehearsal-latest.json").read_text())
    assert (tmp_path / "rehearsal-latest.png").stat().st_size > 10_000
    checks = {check["name"]: check for check in report["checks"]}
    failed = {name: check for name, check in checks.items() if not check["ok"]}
    assert failed == {}, output
    # The events happened, under load.
    marks = [event["mark"] for event in report["events"] if event["mark"]]
    assert marks == ["restart", "restart", "restart", "kill", "failover"]
    assert report["failover"]["failover_s"] > 0
    figures = report["figures"]
    assert figures["sse"]["listeners"] == report["sizes"]["sse_listeners"]
    assert figures["sse"]["reconnects"] >= figures["sse"]["listeners"]  # every listener lost at least one stream
    assert figures["sse"]["reconnect_gap_s"]["max"] <= 10
    # Counted on both sides, and equal.
    views, plays, credits = figures["views"], figures["plays"], figures["credits"]
    assert views["stored"] > 100 and views["lost"] <= views["at_risk_from_kill"]
    assert plays["stored"] > 10 and plays["lost"] <= plays["at_risk_from_kill"]
    assert credits["spent"] > 10 and credits["spent"] - credits["delivered_sms_email"] <= credits["at_risk_from_kill"]


def test_verdict_allows_a_pending_credit_hold_only_for_a_send_cut_by_the_kill():
    held = {"credits_left": {0: 98}, "holds_pending": {0: 1}}  # one more debit, its outcome never settled
    assert "credits spent equal messages delivered" in _failed(Verdict(_inputs(**held)).run())
    inputs = _inputs(**held, killed=("10.213.0.12", 14.0))
    inputs.results["http"]["contacts"].append([13.5, 0.5, 0, False, 40010, 9, 0, "sms", "reset"])
    entry = {"t_end": 14.0, "status": 502, "upstreams": ["10.213.0.12:8888"], "upstream_status": "502"}
    inputs.nginx = Nginx({(netns.visitor_address(9), 40010): [{**entry, "method": "POST", "uri": "/"}]})
    assert "credits spent equal messages delivered" not in _failed(Verdict(inputs).run())


def test_verdict_counts_a_play_as_the_server_does():
    """music/plays.py and store/stats.py: a visitor's repeat of a track within 30 s is one play, and a track cut
    before 64 KiB reached the listener may or may not have counted (the server had written more than arrived)."""
    inputs = _inputs()
    plays = inputs.results["music"]["plays"]
    plays.append([20.0, 20.1, 200, False, 300, 300, True, 8, 0, 40007, ""])  # the same visitor again: one play
    assert _failed(Verdict(inputs).run()) == []
    plays.append([21.0, 21.1, 200, False, 4096, 300_000, False, 10, 0, 40008, "body ended after 4096 bytes"])
    for stored in (1, 2):
        inputs.stats["rh-0"]["plays"] = stored
        assert _failed(Verdict(inputs).run()) == []
    inputs.stats["rh-0"]["plays"] = 3
    assert _failed(Verdict(inputs).run()) == ["plays equal the tracks started"]


def test_verdict_allows_a_502_only_for_a_post_in_flight_on_the_replica_at_its_kill():
    def contact_at(t_start: float, port: int, upstream: str) -> Inputs:
        inputs = _inputs(killed=("10.213.0.12", 14.0))
        inputs.results["http"]["contacts"].append([t_start, 0.2, 502, False, port, 9, 0, "discord", ""])
        entry = {"t_end": t_start + 0.2, "status": 502, "upstreams": [f"{upstream}:8888"], "upstream_status": "502"}
        inputs.nginx = Nginx({(netns.visitor_address(9), port): [{**entry, "method": "POST", "uri": "/"}]})
        return inputs

    verdict = Verdict(contact_at(13.9, 40011, "10.213.0.12")).run()
    assert _failed(verdict) == [] and verdict.figures["posts_cut_by_kill"] == {"contact-discord": 1}
    assert "no 5xx except 503 with Retry-After, and every request answered" in _failed(
        Verdict(contact_at(13.9, 40012, "10.213.0.13")).run()  # another replica: not the kill's doing
    )
    assert "no 5xx except 503 with Retry-After, and every request answered" in _failed(
        Verdict(contact_at(14.5, 40013, "10.213.0.12")).run()  # sent after the kill: nginx should not have
    )


def test_server_log_summary_names_an_unretrieved_tasks_coroutine_and_exception(tmp_path):
    from types import SimpleNamespace

    from deploy.rehearsal.main import server_log_summary

    log = tmp_path / "app1.log"
    log.write_text(
        "2026-12-01 02:20:00,000 ERROR asyncio[7] Task exception was never retrieved\n"
        "future: <Task finished name='Task-9' coro=<Hub._listen() done, defined at hub.py:3> exception=E()>\n"
        'Traceback (most recent call last):\n  File "hub.py", line 3, in _listen\n    raise E\n'
        "redis.exceptions.ConnectionError: Connection closed by server.\n"
    )
    replica = SimpleNamespace(index=1, child=SimpleNamespace(log=log))
    assert server_log_summary(SimpleNamespace(replicas=[replica]))["app1"] == {
        "error: asyncio[7] Task exception was never retrieved": 1,
        "error: in task Hub._listen": 1,
        "error: Traceback: redis.exceptions.ConnectionError: Connection closed by server.": 1,
    }
