"""The Redis command client for `--redis-url`: one server, a Sentinel-managed primary, or a Redis Cluster.

`RedisConnector` owns the client. Everything that sends commands reads `connector.client` when it sends
them (never keeps the client), because the client can change once: a worker that could not reach Redis at
start-up begins on the plain client and moves to the cluster client if Redis, once it answers, turns out to
be a cluster node. URL forms and what runs where: docs/redis.md.

    redis://[user:pass@]host[:port][/db][?options]      one server, or any node of a cluster (detected)
    rediss://…                                           the same over TLS
    unix:///path/to/redis.sock[?db=N]                   one server on a unix socket
    redis+sentinel://[user:pass@]host[:port][,host[:port]…]/service_name[/db][?options]
    rediss+sentinel://…                                  TLS to the sentinels and the data nodes

The hub's pub/sub connections are opened by `pubsub_connection(...)`: redis-py's own connection class with
the command client's settings (TLS, credentials, Sentinel resolution), so what works for commands works
for pub/sub.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.errors import describe_error
from store.redis_transport import guard_transport_errors

__all__ = ["REDIS_ERRORS", "RedisClient", "RedisConnector", "RedisUrlError", "check_url", "connect", "describe_error"]

log = logging.getLogger("hepgg.redis")

RedisClient = Redis | RedisCluster
# What a failing Redis raises: redis-py's errors, its cluster client's own (SlotNotCoveredError is not a
# RedisError) and socket errors.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
Mode = Literal["single", "cluster", "sentinel", "unknown"]

# The command client's sizes and timeouts (one server and Sentinel: per process; cluster: per node).
CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 15,
    "max_connections": 200,
}
SENTINEL_PORT = 26379
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
PUBSUB_CLIENT_NAME = "hepgg-presence-hub"
REPROBE_SECONDS = (1.0, 5.0)  # while Redis is unreachable at start-up: ask again, backing off to 5 s


class RedisUrlError(ValueError):
    """A --redis-url that cannot work; the message says why."""


# ------------------------------------------------------------------------------------------------ URLs


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    tls: bool
    data_options: dict[str, Any] = field(default_factory=dict)  # redis-py kwargs for the data nodes
    sentinel_options: dict[str, Any] = field(default_factory=dict)  # ... for the sentinels themselves


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """`redis+sentinel://[user:pass@]host[:port][,host[:port]…]/service_name[/db][?options]`."""
    scheme, _, rest = url.partition("://")
    tls = scheme.lower() == "rediss+sentinel"
    # urlsplit cannot take a host list (it reads "h1:1,h2" as a port), so split by hand.
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        parsed = urlsplit(f"//{item}")
        try:
            port = parsed.port or SENTINEL_PORT
        except ValueError:
            raise RedisUrlError(f"sentinel address {item!r} has an invalid port") from None
        if not parsed.hostname:
            raise RedisUrlError(f"sentinel address {item!r} has no host")
        sentinels.append((parsed.hostname, port))
    if not sentinels:
        raise RedisUrlError("a redis+sentinel:// URL names at least one sentinel host")
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        raise RedisUrlError("a redis+sentinel:// URL ends with /service_name (the name the sentinels monitor)")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise RedisUrlError("a redis+sentinel:// URL's path is /service_name or /service_name/db")
    options = {name: values[0] for name, values in parse_qs(query).items() if values}
    sentinel_options: dict[str, Any] = {}
    for name in ("sentinel_username", "sentinel_password"):
        if name in options:
            sentinel_options[name.removeprefix("sentinel_")] = options.pop(name)
    # The data nodes' options, parsed by redis-py exactly as for a redis:// URL.
    stand_in = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}sentinel-managed"
    stand_in += f"/{segments[1] if len(segments) == 2 else 0}"
    if options:
        stand_in += "?" + urlencode(options)
    try:
        data_options = dict(parse_url(stand_in))
    except ValueError as exc:
        raise RedisUrlError(str(exc)) from None
    for name in ("host", "port", "connection_class"):
        data_options.pop(name, None)
    if tls:
        data_options["ssl"] = True
        sentinel_options["ssl"] = True
        sentinel_options.update({k: v for k, v in data_options.items() if k.startswith("ssl_")})
    return SentinelUrl(tuple(sentinels), segments[0], tls, data_options, sentinel_options)


def check_url(url: str) -> None:
    """RedisUrlError unless `url` is one of the supported forms (config validation, before anything starts)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise RedisUrlError(
            "must be redis://, rediss://, unix:// or redis+sentinel:// (rediss+sentinel://); see docs/redis.md"
        )
    try:
        parse_url(url)
    except ValueError as exc:
        raise RedisUrlError(str(exc)) from None


# ------------------------------------------------------------------------------------------------ the connector


class RedisConnector:
    """The command client for one URL, whichever kind of Redis it turns out to be.

    `await start()` decides the kind (one `INFO cluster` for redis:// and rediss://); `client` is the
    current client; `on_change` callbacks run when a late detection replaces the client.
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None):
        check_url(url)
        self.url = url
        self.options = {**CLIENT_OPTIONS, **(options or {})}
        self.mode: Mode = "unknown"
        self.sentinel: Sentinel | None = None
        self.service: str | None = None
        self._client: RedisClient | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self._closed = False

    @property
    def client(self) -> RedisClient:
        if self._client is None:
            raise RuntimeError("RedisConnector.start() was not awaited")
        return self._client

    @property
    def sharded(self) -> bool:
        """Sharded pub/sub (SPUBLISH/SSUBSCRIBE): on a cluster, and only there."""
        return self.mode == "cluster"

    @property
    def cluster(self) -> RedisCluster:
        client = self.client
        assert isinstance(client, RedisCluster), "not a cluster"
        return client

    def on_change(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._listeners.append(callback)

    async def start(self) -> RedisConnector:
        if is_sentinel_url(self.url):
            self._start_sentinel()
            return self
        if self.url.lower().startswith("unix://"):
            self._client, self.mode = guard_transport_errors(Redis.from_url(self.url, **self.options)), "single"
            return self
        detected = await self._probe()
        if detected is None:
            log.warning("Redis at %s is unreachable at start-up; using the plain client until it answers", self.where)
            self._client = guard_transport_errors(Redis.from_url(self.url, **self.options))
            self._probe_task = asyncio.create_task(self._probe_until_known(), name="redis-detect")
        else:
            await self._use(detected)
        return self

    @property
    def where(self) -> str:
        """The URL without credentials, for logs."""
        if is_sentinel_url(self.url):
            spec = parse_sentinel_url(self.url)
            return f"sentinels {','.join(f'{h}:{p}' for h, p in spec.sentinels)} service {spec.service}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    async def _probe(self) -> Mode | None:
        """'cluster' or 'single' from the named node's INFO cluster; None when it cannot be reached."""
        probe = Redis.from_url(
            self.url,
            **{**self.options, "socket_timeout": 2, "health_check_interval": 0},
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            info = await probe.info("cluster")
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.debug("Redis probe: %s", describe_error(exc))
            return None
        except RedisError as exc:
            # Reachable but refusing (NOAUTH, no INFO permission...): the plain client will say the same.
            log.warning("Redis at %s answered INFO cluster with %s; treating it as one server", self.where, exc)
            return "single"
        finally:
            await probe.aclose()
        return "cluster" if int(info.get("cluster_enabled", 0)) == 1 else "single"

    async def _use(self, mode: Mode) -> None:
        if mode == "cluster":
            db = parse_url(self.url).get("db") or 0
            if db:
                raise RedisUrlError(f"{self.where} is a Redis Cluster node: a cluster has only database 0")
            cluster_options = {k: v for k, v in self.options.items() if k != "health_check_interval"}
            cluster = guard_transport_errors(RedisCluster.from_url(self.url, **cluster_options))
            try:
                # Learn every node now, while the named one answers: a client that first speaks after that
                # node died would know no other (measured: writes never came back after its master was killed).
                await cluster.initialize()
            except REDIS_ERRORS as exc:
                log.warning("Redis Cluster at %s: cannot read its nodes yet (%s)", self.where, describe_error(exc))
            self._client = cluster
        else:
            self._client = guard_transport_errors(Redis.from_url(self.url, **self.options))
        self.mode = mode
        log.info("Redis at %s: %s", self.where, "a cluster (sharded pub/sub)" if mode == "cluster" else "one server")

    def _start_sentinel(self) -> None:
        spec = parse_sentinel_url(self.url)
        sentinel_kwargs = {
            "socket_connect_timeout": self.options["socket_connect_timeout"],
            "socket_timeout": self.options["socket_timeout"],
            "decode_responses": True,
            **spec.sentinel_options,
        }
        self.sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(spec.sentinels), sentinel_kwargs=sentinel_kwargs, **spec.data_options
        )
        self.service = spec.service
        self._client = guard_transport_errors(self.sentinel.master_for(spec.service, redis_class=Redis, **self.options))
        self.mode = "sentinel"
        log.info("Redis via %s", self.where)

    async def _probe_until_known(self) -> None:
        delay = REPROBE_SECONDS[0]
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, REPROBE_SECONDS[1])
            mode = await self._probe()
            if mode is None:
                continue
            if mode == "single":
                self.mode = "single"
                log.info("Redis at %s answers: one server", self.where)
                return
            old = self._client
            await self._use(mode)
            log.warning("Redis at %s answers as a cluster node: switched to the cluster client", self.where)
            for callback in self._listeners:
                try:
                    await callback()
                except Exception:  # one listener's failure must not keep the others on the old client
                    log.exception("Redis client change: a listener failed")
            if old is not None:
                await old.aclose()
            return

    async def close(self) -> None:
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            try:
                await self._probe_task
            except asyncio.CancelledError:
                pass
            self._probe_task = None
        if self._client is not None:
            await self._client.aclose()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                await sentinel.aclose()

    # -- health

    async def check(self) -> None:
        """Raise unless Redis can serve: PING; on a cluster, cluster_state:ok and every master answers PING."""
        client = self.client
        if isinstance(client, RedisCluster):
            info = await client.cluster_info(target_nodes=RedisCluster.RANDOM)
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state != "ok":
                raise RedisError(f"cluster_state is {state!r}")
            await asyncio.gather(
                *(client.execute_command("PING", target_nodes=node) for node in client.get_primaries())
            )
        else:
            await client.ping()

    async def refresh_cluster_map(self) -> None:
        """Read the slot map again (the presence hub, after MOVED or a lost master)."""
        cluster = self.cluster
        if getattr(cluster, "_initialize", False):
            # Never initialized (its first node did not answer at start-up): the client's own initialize also
            # sets up its command parser, which a bare map refresh would leave half-done.
            await cluster.initialize()
        else:
            # Only the map: RedisCluster.initialize() would also re-query its default node, which may be the
            # master that just died.
            await cluster.nodes_manager.initialize()

    async def follow_moved(self, text: str) -> None:
        """Apply a `MOVED <slot> <host:port>` answer to the slot map, as redis-py does for its commands."""
        await self.cluster.nodes_manager.move_slot(MovedError(text.removeprefix("MOVED ")))

    # -- pub/sub connections for the presence hub

    def pubsub_connection(self, node: ClusterNode | None = None) -> AbstractConnection:
        """A redis-py connection (not yet connected) to the one server, the Sentinel primary or `node`.

        RESP2 and no hidden retries: the hub reads it itself and decides what a lost connection means.
        """
        connection_class: type[AbstractConnection]
        if node is not None:
            connection_class, kwargs = node.connection_class, node.connection_kwargs
        else:
            client = self.client
            assert isinstance(client, Redis), "a cluster's pub/sub connections are per node"
            connection_class, kwargs = client.connection_pool.connection_class, client.connection_pool.connection_kwargs
        overrides: dict[str, Any] = {
            "protocol": 2,
            "client_name": PUBSUB_CLIENT_NAME,
            "health_check_interval": 0,
            "retry": Retry(NoBackoff(), 0),
        }
        if issubclass(connection_class, Connection):  # TCP (a unix socket has no keepalive)
            overrides["socket_keepalive"] = True
        return connection_class(**{**kwargs, **overrides})


async def connect(url: str, **options: Any) -> RedisConnector:
    """A started connector for `url` (see the module docstring for the forms)."""
    return await RedisConnector(url, options=options).start()
