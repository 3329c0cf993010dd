"""One pub/sub connection to one Redis node, and the channels this process listens to there.

The presence hub (presence/hub.py) owns one `Shard` per node it listens on: the one server or Sentinel
primary, or each master of a Redis Cluster. A shard keeps its connection up (jittered backoff), enables
keyspace `expired` notifications on its node, (un)subscribes what the hub asks in one write per loop
turn, and hands every reply to the hub. It owns no policy: when the connection is lost or comes back,
it tells the hub, which decides what the channels' streams get.

On a cluster a (UN)SUBSCRIBE may only name channels of one hash slot (otherwise CROSSSLOT, and none of
them is subscribed), so a sharded shard sends one command per slot; all of one turn's commands still go
out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from common.tasks import cancel_and_wait, raise_if_cancelling
from presence.pubsub import PubSubConnection, PubSubError, pack
from store.redis_connect import REDIS_ERRORS

log = logging.getLogger("hepgg.presence")

BATCH = 1000  # channels per (UN)SUBSCRIBE command
RETRY_DELAYS = (0.1, 5.0)  # reconnect backoff: first, cap (jittered)


class ShardOwner(Protocol):
    def shard_connected(self, shard: Shard) -> None: ...
    def shard_down(self, shard: Shard) -> None: ...
    def on_reply(self, shard: Shard, reply: Any) -> None: ...


class Shard:
    def __init__(
        self,
        key: str,
        open_connection: Callable[[], AbstractConnection],
        owner: ShardOwner,
        *,
        sharded: bool,
        db: int = 0,
    ):
        self.key = key  # "main", or a cluster node's "host:port"
        self.open_connection = open_connection
        self.owner = owner
        self.sharded = sharded
        self.sub_cmd, self.unsub_cmd = (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if sharded else (b"SUBSCRIBE", b"UNSUBSCRIBE")
        self.expired_channel = f"__keyevent@{db}__:expired".encode()
        self.channels: set[str] = set()  # the hub's channels routed to this node
        self.outstanding: dict[str, list[float]] = {}  # channel -> [confirmations to come, monotonic time sent]
        self.unsubscribing: dict[str, int] = {}  # channel -> our (S)UNSUBSCRIBEs not yet confirmed
        self.conn: PubSubConnection | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.failures = 0  # connection attempts that failed since the last success
        self.expiry_events = False
        self._sub: set[str] = set()
        self._unsub: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Shard {self.key} channels={len(self.channels)} connected={self.connected.is_set()}>"

    # -- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"presence-shard-{self.key}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.connected.clear()

    # -- channels

    def add(self, name: str) -> None:
        self.channels.add(name)
        self._sub.add(name)

    def remove(self, name: str, *, unsubscribe: bool = True) -> None:
        """Forget `name` here; `unsubscribe=False` when the node no longer serves it (it moved)."""
        self.channels.discard(name)
        self.outstanding.pop(name, None)
        self._sub.discard(name)
        if unsubscribe:
            self._unsub.add(name)

    def confirmed(self, name: str) -> bool:
        """A (S)SUBSCRIBE confirmation for `name`: True once the last one we are waiting for came."""
        waiting = self.outstanding.get(name)
        if waiting is None:
            return True
        waiting[0] -= 1
        if waiting[0] > 0:
            return False
        del self.outstanding[name]
        return True

    def ours(self, name: str) -> bool:
        """An (S)UNSUBSCRIBE confirmation: True if we asked for it, False if the node dropped the channel."""
        count = self.unsubscribing.get(name, 0)
        if not count:
            return False
        if count == 1:
            del self.unsubscribing[name]
        else:
            self.unsubscribing[name] = count - 1
        return True

    def stale(self, now: float, after: float) -> list[str]:
        """Channels whose SUBSCRIBE has gone unconfirmed for `after` seconds (an error reply ate it)."""
        return [name for name, (_, sent) in self.outstanding.items() if now - sent > after]

    def resend(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.channels:
                self.outstanding.pop(name, None)
                self._sub.add(name)
        self.flush()

    def _groups(self, names: list[str]) -> list[list[str]]:
        if not self.sharded:
            return [names[i : i + BATCH] for i in range(0, len(names), BATCH)]
        by_slot: dict[int, list[str]] = defaultdict(list)
        for name in names:
            by_slot[key_slot(name.encode())].append(name)
        return [group[i : i + BATCH] for group in by_slot.values() for i in range(0, len(group), BATCH)]

    def flush(self) -> None:
        """Send what was queued, one write; while disconnected nothing is sent (a connect sends it all)."""
        conn = self.conn
        if conn is None:
            self._sub.clear()
            self._unsub.clear()
            return
        unsubscribe = [name for name in self._unsub if name not in self.channels]
        subscribe = [name for name in self._sub if name in self.channels]
        self._sub.clear()
        self._unsub.clear()
        if not (subscribe or unsubscribe):
            return
        now = time.monotonic()
        commands = []
        for group in self._groups(unsubscribe):
            commands.append(pack(self.unsub_cmd, *group))
            for name in group:
                self.unsubscribing[name] = self.unsubscribing.get(name, 0) + 1
        for group in self._groups(subscribe):
            commands.append(pack(self.sub_cmd, *group))
            for name in group:
                waiting = self.outstanding.setdefault(name, [0, now])
                waiting[0] += 1
                waiting[1] = now
        try:
            conn.send(b"".join(commands))
        except PubSubError:
            pass  # the read loop is about to notice and reconnect; a connect resubscribes everything

    def ping(self) -> None:
        """Traffic on an idle connection, so a dead peer is noticed by TCP."""
        if self.conn is not None:
            try:
                self.conn.send(pack("PING"))
            except PubSubError:
                pass

    # -- the connection

    async def _run(self) -> None:
        delay = RETRY_DELAYS[0]
        while True:
            try:
                conn = PubSubConnection(self.open_connection())
                await conn.connect()
            except REDIS_ERRORS as exc:  # PubSubError is a ConnectionError, so an OSError among them
                raise_if_cancelling()
                self.failures += 1
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning("presence hub cannot reach Redis %s (%s); retrying", self.key, exc)
                self.owner.shard_down(self)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RETRY_DELAYS[1])
                continue
            try:
                await self._check_primary(conn)
                await self._enable_expiry_events(conn)
            except (OSError, PubSubError) as exc:
                conn.close()
                raise_if_cancelling()
                log.warning("presence hub lost Redis %s while setting up (%s); retrying", self.key, exc)
                self.owner.shard_down(self)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RETRY_DELAYS[1])
                continue
            if self.failures:
                log.info("presence hub reached Redis %s again", self.key)
            self.failures = 0
            delay = RETRY_DELAYS[0]
            self.conn = conn
            self.outstanding.clear()
            self.unsubscribing.clear()
            self._unsub.clear()
            self._sub = set(self.channels)
            self.owner.shard_connected(self)
            conn.send(pack("SUBSCRIBE", self.expired_channel))  # node-local events: every node's own
            self.flush()
            self.connected.set()
            try:
                while True:
                    for reply in await conn.read_replies():
                        self.owner.on_reply(self, reply)
            except (OSError, PubSubError) as exc:
                raise_if_cancelling()
                log.warning("presence hub lost its connection to Redis %s (%s); reconnecting", self.key, exc)
            finally:
                self.conn = None
                self.connected.clear()
                conn.close()
            self.reconnects += 1
            self.owner.shard_down(self)

    async def _check_primary(self, conn: PubSubConnection) -> None:
        """Listen on primaries only: a replica generates no `expired` events (it gets DEL from its primary).

        Right after a Sentinel failover the sentinels may still name the old primary for a moment (as it
        is being turned into a replica): connect again until they name the new one.
        """
        try:
            role = await conn.call("ROLE")
        except hiredis.ReplyError:
            return  # ROLE not permitted: trust the address
        if role and role[0] != b"master":
            raise PubSubError(f"{conn.address} is a {role[0].decode(errors='replace')}, not a primary")

    async def _enable_expiry_events(self, conn: PubSubConnection) -> None:
        """Add `Ex` to notify-keyspace-events (keeping other flags); a Redis that forbids CONFIG is tolerated."""
        try:
            reply = await conn.call("CONFIG", "GET", "notify-keyspace-events")
            flags = reply[1].decode() if len(reply) > 1 else ""
            wanted = flags + ("" if "E" in flags else "E") + ("" if ("x" in flags or "A" in flags) else "x")
            if wanted != flags:
                await conn.call("CONFIG", "SET", "notify-keyspace-events", wanted)
            self.expiry_events = True
        except hiredis.ReplyError as exc:
            if self.expiry_events or not self.reconnects:
                log.warning(
                    "cannot enable keyspace notifications on Redis %s (%s): an expired snapshot reaches open "
                    "streams only with the next change",
                    self.key,
                    exc,
                )
            self.expiry_events = False
