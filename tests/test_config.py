"""Options: every one is range- or shape-checked at start-up (exit 2, naming the option); `--help` creates nothing."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from runtime.config import OPTIONS, Config, ConfigError, load_config

from conftest import ROOT, run_cli

REFUSED = [
    ("header_timeout", "0"),
    ("connections_per_address", "0"),
    ("music_queue_timeout", "0"),
    ("music_streams_per_address", "0"),
    ("music_pause_limit", "0"),
    ("idle_timeout", "0"),
    ("sse_ping_interval", "-1"),
    ("sse_ping_interval", "0"),
    ("sse_max_buffer", "-1"),
    ("sse_max_streams", "-5"),
    ("sse_opens_per_address", "-1"),
    ("sse_opens_per_address", "0.001"),
    ("profile_cache_ttl", "-5"),
    ("view_flush_interval", "0"),
    ("reconcile_interval", "-1"),
    ("turnstile_timeout", "-1"),
    ("og_render_processes", "0"),
    ("public_origin", "notaurl"),
    ("public_origin", "https://hep.gg/some/path"),
    ("port", "65536"),
    ("port", "80.5"),
    ("processes", "-1"),
    ("shutdown_grace", "nan"),
    ("music_chunk_bytes", "1024"),
    ("music_high_water", "0"),
    ("music_max_streams", "0"),
    ("music_connect_timeout", "0"),
    ("music_stall_timeout", "0"),
    ("music_upstream_url", "ftp://music.internal/"),
    ("delivery_timeout", "-1"),
    ("smtp_port", "0"),
    ("smtp_from", "not an address"),
    ("smtp_host", "bad host"),
    ("turnstile_verify_url", "challenges.cloudflare.com/siteverify"),
    ("sms_api_url", "http://"),
    ("discord_api_url", "discord"),
    ("dashboard_url", "javascript:alert(1)"),
    ("base_domain", "hep gg"),
    ("exempt_domains", "ok.example,bad_domain!"),
    ("avatar_hosts", "cdn.example,https://x/"),
    ("image_hosts", "img.example,*.example"),
    ("trusted_proxies", "10.0.0.0/8,not-a-cidr"),
    ("mongo_uri", "postgres://db"),
    ("mongo_db", "has.dot"),
    ("redis_url", "memcached://cache"),
    ("event_loop", "trio"),
    ("log_level", "verbose"),
    ("address", "not an address"),
    ("data_dir", " "),
    ("redis_sharded_pubsub", "maybe"),
    ("turnstile_sitekey", "two\nlines"),
]


@pytest.mark.parametrize("attr, value", REFUSED)
def test_out_of_range_or_malformed_values_are_refused_naming_the_option(attr, value):
    flag = "--" + attr.replace("_", "-")
    with pytest.raises(ConfigError) as refused:
        load_config(environ={}, **{attr: value})
    assert str(refused.value).startswith(flag + " ")
    assert "HEPGG_" + attr.upper() in str(refused.value)  # and where else it could be set


def test_every_option_is_checked():
    """A new option needs a check (booleans are checked by their parser)."""
    unchecked = [option.name for option in OPTIONS if option.check is None and option.type is not bool]
    assert unchecked == []
    assert {attr for attr, _ in REFUSED} >= {option.attr for option in OPTIONS if option.type in (int, float)}


def test_secret_values_never_appear_in_the_message():
    with pytest.raises(ConfigError) as refused:
        load_config(environ={}, mongo_uri="mysql://user:hunter2@db/")
    assert "hunter2" not in str(refused.value) and "--mongo-uri" in str(refused.value)


def test_edge_values_that_mean_something_are_accepted():
    config = load_config(
        environ={},
        reconcile_interval=0,  # never reconcile inside serve
        processes=0,  # one worker per core
        port=0,  # any free port
        profile_cache_ttl=0,  # no caching
        address="",  # every interface
        avatar_hosts="127.0.0.1, Images.Example.",
        public_origin="https://hep.gg/",
        exempt_domains=("Hep.LOL.",),
    )
    assert config.reconcile_interval == 0 and config.processes == 0 and config.address == ""
    assert config.avatar_hosts == ("127.0.0.1", "images.example")
    assert config.public_origin == "https://hep.gg"
    assert config.exempt_domains == ("hep.lol",)


def test_config_is_frozen_and_typed():
    config = load_config(environ={"HEPGG_SSE_MAX_STREAMS": "7", "HEPGG_JSON_LOGS": "yes"})
    assert config.sse_max_streams == 7 and config.json_logs is True
    assert config.public_origin == "http://localhost:8888"  # derived from the port
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert {field.name for field in dataclasses.fields(Config)} == {option.attr for option in OPTIONS}


def test_a_config_file_with_a_bad_value_is_refused(tmp_path):
    path = tmp_path / "hepgg.toml"
    path.write_text("sse-ping-interval = -1\n")
    with pytest.raises(ConfigError, match=r"^--sse-ping-interval must be between"):
        load_config(environ={"HEPGG_CONFIG": str(path)})


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--sse-ping-interval", "-1"],
        ["serve", "--og-render-processes", "0"],
        ["serve", "--public-origin", "notaurl"],
        ["import", "x.json", "--mongo-db", "bad/name"],  # each command checks the options it takes
    ],
)
@pytest.mark.slow  # the server as a subprocess
def test_the_server_exits_2_naming_the_option(args, tmp_path):
    result = run_cli(*args, "--data-dir", str(tmp_path / "data"), timeout=30)
    assert result.returncode == 2
    flag = next(arg for arg in args if arg.startswith("--"))
    assert result.stderr.startswith(f"configuration error: {flag} ")
    assert not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.parametrize(
    "stores, named, not_named",
    [
        ({"mongo_uri": "mongodb://db:27017/"}, ["--mongo-uri", "HEPGG_MONGO_URI"], ["--redis-url"]),
        ({"redis_url": "redis://cache:6379/0"}, ["--redis-url", "HEPGG_REDIS_URL"], ["--mongo-uri"]),
        ({"mongo_uri": "mongodb://db/", "redis_url": "redis://cache/0"}, ["--mongo-uri", "--redis-url"], []),
    ],
)
def test_the_demo_is_refused_with_external_stores(stores, named, not_named):
    # Its Turnstile stand-in passes its own tokens and its messages go nowhere: never next to real data.
    with pytest.raises(ConfigError) as refused:
        load_config(environ={}, demo=True, **stores)
    message = str(refused.value)
    assert message.startswith("--demo runs only on the embedded stores")
    assert all(name in message for name in named) and not any(name in message for name in not_named)
    assert "db:27017" not in message and "cache" not in message  # store URLs are secrets
    assert load_config(environ={}, demo=True).demo is True  # embedded (the default) is fine
    assert load_config(environ={}, **stores).demo is False  # and so are external stores without the demo


@pytest.mark.slow  # the server as a subprocess
def test_the_server_refuses_the_demo_with_external_stores_exit_2(tmp_path):
    env = {"HEPGG_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_cli("serve", "--demo", "--data-dir", str(tmp_path / "data"), env=env, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("configuration error: --demo runs only on the embedded stores")
    assert "--redis-url (env HEPGG_REDIS_URL)" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.slow
def test_help_creates_no_metrics_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPGG_")}
    env["TMPDIR"] = str(tmp_path)
    for args in (["serve", "--help"], ["--help"], ["presence", "set", "--help"]):
        result = subprocess.run(
            [sys.executable, str(ROOT / "hepgg_server.py"), *args], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
