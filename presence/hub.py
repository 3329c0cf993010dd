"""The process-wide presence hub: one pub/sub connection per Redis node, in-process fan-out.

Per process: ONE pub/sub connection per node it listens on (presence/shards.py; separate from the
command client): the one server or Sentinel primary, or every master of a Redis Cluster. Subscribed
only to channels with at least one local listener (SUBSCRIBE on the first, UNSUBSCRIBE after the last,
pipelined and batched per loop turn; on a cluster SSUBSCRIBE, one command per slot, sent to the slot's
master). A published snapshot is encoded once into an `Event` whose bytes every listener shares, and
delivered by one delivery task in slices, yielding to the loop between slices so a 10,000-listener
fan-out does not stall other requests.

Order: a channel is "live" only once its SUBSCRIBE is confirmed and its snapshot has been read. Messages
that arrive before that are held (newest wins). SET+PUBLISH is one MULTI/EXEC in the writer, so a
message seen after the confirmation is never older than the value read after it. Deliveries (first
snapshots and changes) go through one queue, so a listener never sees an older snapshot after a newer
one. Each channel moves on its own: a slot, key or node that fails holds back only its own channels.

Expiry: Redis keyspace notifications (`Ex`, enabled on every node's connection when CONFIG is permitted;
they are node-local) arrive on the same connections; an expired key becomes a `null` event for that
user's streams. One mechanism for all streams, no timers.

Redis restarts and failovers: a lost connection comes back with jittered exponential backoff, its
channels are resubscribed and every stream gets the current snapshot again; streams stay open
meanwhile. On a cluster, MOVED, a node-sent SUNSUBSCRIBE (the slot left the node) or a lost master
triggers a rebalance: refresh the slot map, open connections to new masters, move each channel to its
slot's master and resend its snapshot. Design: docs/redis.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from tornado.iostream import IOStream

from common.metrics import OPEN_STREAMS
from common.tasks import cancel_and_wait, raise_if_cancelling
from presence.pubsub import PubSubError
from presence.shards import Shard
from presence.sse import (
    ARRIVED_DRAINING_RETRY_MS,
    DRAIN_RETRY_MS,
    NULL_EVENT,
    PING,
    Event,
    presence_event,
    retry_hint,
    stream_opening,
)
from presence.stream import Listener
from store.redis_connect import REDIS_ERRORS, RedisConnector, describe_error
from store.redis_keys import get_many

log = logging.getLogger("hepgg.presence")

SUBSCRIBING, LOADING, LIVE = 0, 1, 2
SLICE = 512  # listeners written per loop turn during a large fan-out
BATCH = 1000  # snapshots read per round
STREAM_KIND = "presence"
_OPEN_STREAMS = OPEN_STREAMS.labels(STREAM_KIND)  # bound once: labels() per connect costs
MAIN = "main"  # the one shard of a single server or a Sentinel primary
SWEEP_SECONDS = 1.0  # how often unconfirmed SUBSCRIBEs and unrouted channels are looked at
RESEND_AFTER = 3.0  # seconds a SUBSCRIBE may stay unconfirmed before it is sent again
LOAD_RETRY = 0.5  # seconds before a snapshot whose read failed is read again
REBALANCE_DELAYS = (0.2, 2.0)  # map refresh retries while a cluster fails over: first, cap
MOVED_DAMPING = 0.2  # seconds before a MOVED for the same slot is followed again


class Channel:
    """One user's channel in this process: its listeners and the last snapshot event delivered."""

    __slots__ = ("current", "held", "listeners", "name", "shard", "state")

    def __init__(self, name: str):
        self.name = name
        self.listeners: set[Listener] = set()
        self.current: Event | None = None
        self.state = SUBSCRIBING
        self.held: Event | None = None  # newest message seen before the channel went live
        self.shard: str | None = None  # key of the shard it is subscribed on (None: not routed yet)


class PresenceHub:
    def __init__(self, redis: RedisConnector, *, max_buffer: int = 65536, max_streams: int = 19000):
        self.redis = redis  # the command client (snapshot reads, the cluster's slot map) and connection opener
        self.max_buffer = max_buffer
        self.max_streams = max_streams
        self.channels: dict[str, Channel] = {}
        self.shards: dict[str, Shard] = {}
        self.listener_count = 0
        self.draining = False
        self.connected = asyncio.Event()  # set while every shard is connected
        self._sub_queue: set[str] = set()
        self._unsub_queue: dict[str, str] = {}  # channel -> the shard it was subscribed on
        self._flush_scheduled = False
        self._gauges_scheduled = False
        self._to_load: set[str] = set()
        self._load_wakeup = asyncio.Event()
        self._rebalance_wanted = asyncio.Event()
        self._moved_at: dict[str, float] = {}  # slot -> when a MOVED for it was last followed
        self._background: set[asyncio.Task[None]] = set()
        self._deliveries: asyncio.Queue[tuple[Channel, Event]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        redis.on_change(self._redis_changed)

    @property
    def sharded(self) -> bool:
        return self.redis.sharded

    @property
    def reconnects(self) -> int:
        return sum(shard.reconnects for shard in self.shards.values())

    @property
    def expiry_events(self) -> bool:
        return bool(self.shards) and all(shard.expiry_events for shard in self.shards.values())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for coro in (self._loader(), self._deliverer(), self._sweeper(), self._rebalancer()):
            self._tasks.append(asyncio.create_task(coro))
        if self.sharded:
            self._rebalance_wanted.set()  # learn the masters, one shard each
        else:
            self._shard(MAIN)

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks, *self._background)
        self._tasks.clear()
        await asyncio.gather(*(shard.close() for shard in self.shards.values()))
        for channel in list(self.channels.values()):
            for listener in list(channel.listeners):
                listener.stream.close()

    async def _redis_changed(self) -> None:
        """The command client was replaced (a late cluster detection): start over on the new topology."""
        shards, self.shards = list(self.shards.values()), {}
        await asyncio.gather(*(shard.close() for shard in shards))
        self._update_connected()
        for channel in self.channels.values():
            channel.shard, channel.state, channel.held = None, SUBSCRIBING, None
        self._sub_queue.update(self.channels)
        if self.sharded:
            self._rebalance_wanted.set()
        else:
            self._shard(MAIN)
            self._schedule_flush()

    # ------------------------------------------------------------------ listeners

    def add(self, name: str, stream: IOStream, chunked: bool) -> Listener:
        """Attach a detached stream to `name` (a Redis channel): response head now, snapshot when known."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name)
            self._queue_subscribe(name)
        listener = Listener(name, stream, chunked, self.max_buffer, self._gone)
        channel.listeners.add(listener)
        self.listener_count += 1
        self._schedule_gauges()
        head = stream_opening(chunked)
        if channel.state == LIVE and channel.current is not None:
            event = channel.current
            listener.write(head + (event.chunked if chunked else event.raw))
        else:
            listener.write(head)
        return listener

    def _gone(self, listener: Listener) -> None:
        channel = self.channels.get(listener.name)
        if channel is None or listener not in channel.listeners:
            return
        channel.listeners.discard(listener)
        self.listener_count -= 1
        self._schedule_gauges()
        if not channel.listeners:
            del self.channels[listener.name]
            self._queue_unsubscribe(channel)

    def _schedule_gauges(self) -> None:
        # Each gauge write goes to a shared mmap file (multiprocess metrics): once per loop turn, not per connect.
        if not self._gauges_scheduled:
            self._gauges_scheduled = True
            asyncio.get_running_loop().call_soon(self._update_gauges)

    def _update_gauges(self) -> None:
        self._gauges_scheduled = False
        _OPEN_STREAMS.set(self.listener_count)

    def listeners(self) -> list[Listener]:
        return [listener for channel in list(self.channels.values()) for listener in channel.listeners]

    # ------------------------------------------------------------------ subscriptions

    def _queue_subscribe(self, name: str) -> None:
        self._sub_queue.add(name)
        self._unsub_queue.pop(name, None)
        self._schedule_flush()

    def _queue_unsubscribe(self, channel: Channel) -> None:
        self._sub_queue.discard(channel.name)
        if channel.shard is not None:
            self._unsub_queue[channel.name] = channel.shard
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Route the (UN)SUBSCRIBEs queued during this loop turn to their shards; each sends one write."""
        self._flush_scheduled = False
        touched: set[Shard] = set()
        for name, key in self._unsub_queue.items():
            shard = self.shards.get(key)
            if shard is not None and name not in self.channels:
                shard.remove(name)
                touched.add(shard)
        self._unsub_queue.clear()
        unrouted = False
        for name in self._sub_queue:
            channel = self.channels.get(name)
            if channel is None or channel.shard is not None:
                continue
            route = self._route(name)
            if route is None:
                unrouted = True  # no map yet, or its slot has no master right now: the rebalance routes it
                continue
            shard = self._shard(route)
            channel.shard = route
            shard.add(name)
            touched.add(shard)
        self._sub_queue.clear()
        for shard in touched:
            shard.flush()
        if unrouted:
            self._rebalance_wanted.set()

    def _route(self, name: str) -> str | None:
        """The key of the shard that serves channel `name`: MAIN, or its slot's master (None: unknown now)."""
        if not self.sharded:
            return MAIN
        try:
            node = self.redis.cluster.get_node_from_key(name)
        except REDIS_ERRORS:
            return None
        return node.name if node is not None else None

    def _shard(self, key: str) -> Shard:
        shard = self.shards.get(key)
        if shard is None:
            shard = self.shards[key] = Shard(key, self._opener(key), self, sharded=self.sharded, db=self._db())
            shard.start()
            self._update_connected()
        return shard

    def _opener(self, key: str) -> Callable[[], AbstractConnection]:
        redis = self.redis
        if key == MAIN:
            return redis.pubsub_connection

        def open_node() -> AbstractConnection:
            node: ClusterNode | None = redis.cluster.get_node(node_name=key)
            if node is None:
                raise PubSubError(f"{key} is no longer a node of the cluster")
            return redis.pubsub_connection(node)

        return open_node

    def _db(self) -> int:
        if self.sharded:
            return 0
        client = self.redis.client
        return int(client.connection_pool.connection_kwargs.get("db") or 0)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ what the shards report

    def shard_connected(self, shard: Shard) -> None:
        """A fresh connection: its channels go back to subscribing, then are re-read and re-sent."""
        for name in shard.channels:
            channel = self.channels.get(name)
            if channel is not None:
                channel.state = SUBSCRIBING
                channel.held = None
        self._update_connected()

    def shard_down(self, shard: Shard) -> None:
        self._update_connected()
        if self.sharded:
            self._rebalance_wanted.set()  # a failover moves its slots: find out where

    def _update_connected(self) -> None:
        if self.shards and all(shard.connected.is_set() or shard.conn is not None for shard in self.shards.values()):
            self.connected.set()
        else:
            self.connected.clear()

    def on_reply(self, shard: Shard, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            if isinstance(reply, hiredis.ReplyError):
                self._on_error(shard, str(reply))
            return
        kind = reply[0]
        if kind in (b"message", b"smessage"):
            event: Event | None
            if reply[1] == shard.expired_channel:
                name, event = reply[2].decode("utf-8", "replace"), NULL_EVENT
            else:
                name, event = reply[1].decode("utf-8", "replace"), presence_event(reply[2])
            channel = self.channels.get(name)
            if channel is None or channel.shard != shard.key:
                return  # gone, or moved to another master (a late message from the old one)
            if event is None:
                log.warning("dropped a malformed presence payload on %s", name)
                return
            if channel.state == LIVE:
                self._deliveries.put_nowait((channel, event))
            else:
                channel.held = event
        elif kind in (b"subscribe", b"ssubscribe"):
            name = reply[1].decode("utf-8", "replace")
            if not shard.confirmed(name):
                return
            channel = self.channels.get(name)
            if channel is not None and channel.shard == shard.key and channel.state == SUBSCRIBING:
                channel.state = LOADING
                self._to_load.add(name)
                self._load_wakeup.set()
        elif kind in (b"unsubscribe", b"sunsubscribe"):
            name = reply[1].decode("utf-8", "replace")
            if shard.ours(name):
                return
            # The node dropped a channel we still want: its slot left this master (resharding). Ask it again:
            # its MOVED answer names the new master, which is where the channel goes.
            channel = self.channels.get(name)
            if channel is not None and channel.shard == shard.key:
                channel.state, channel.held = SUBSCRIBING, None
                shard.resend([name])

    def _on_error(self, shard: Shard, text: str) -> None:
        if text.startswith("MOVED ") and self.sharded:
            # A node names a slot's owner: believe it (as redis-py does for commands) and move that slot's
            # channels there now. An error does not say which channels it answered; the sweep resends
            # whatever stays unconfirmed.
            log.info("presence hub: Redis %s answered %s", shard.key, text)
            self._in_background(self._follow_moved(text))
        elif text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            log.info("presence hub: Redis %s answered %s; refreshing the cluster map", shard.key, text)
            self._rebalance_wanted.set()
        else:
            log.warning("presence hub: Redis %s answered %s", shard.key, text)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # held until done: the loop keeps only a weak reference to a task
        task.add_done_callback(self._background.discard)

    async def _follow_moved(self, text: str) -> None:
        slot = text.split()[1]
        now = time.monotonic()
        if now - self._moved_at.get(slot, 0.0) < MOVED_DAMPING:
            return  # two nodes naming each other mid-migration: leave it to the sweep, not a tight loop
        self._moved_at[slot] = now
        try:
            await self.redis.follow_moved(text)
        except (*REDIS_ERRORS, ValueError) as exc:  # type: ignore[misc]  # a tuple built from a tuple
            log.warning("presence hub cannot follow %s (%s)", text, describe_error(exc))
            self._rebalance_wanted.set()
            return
        self._rebalance()

    def ping_redis(self) -> None:
        """Traffic on idle connections, so a dead peer is noticed by TCP."""
        for shard in self.shards.values():
            shard.ping()

    # ------------------------------------------------------------------ keeping up with the cluster

    async def _sweeper(self) -> None:
        """Resend SUBSCRIBEs that were never confirmed (an error reply does not say for which channels)."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for shard in list(self.shards.values()):
                stale = shard.stale(now, RESEND_AFTER)
                if stale:
                    log.info("presence hub: resubscribing %d channel(s) on Redis %s", len(stale), shard.key)
                    shard.resend(stale)
            if self.sharded and any(channel.shard is None for channel in self.channels.values()):
                self._rebalance_wanted.set()

    async def _rebalancer(self) -> None:
        """On a cluster: refresh the slot map, one shard per master, every channel on its slot's master."""
        delay = REBALANCE_DELAYS[0]
        while True:
            await self._rebalance_wanted.wait()
            self._rebalance_wanted.clear()
            if not self.sharded:
                continue
            try:
                await self.redis.refresh_cluster_map()
            except REDIS_ERRORS as exc:
                raise_if_cancelling()
                log.warning("presence hub cannot read the cluster's slot map (%s); retrying", describe_error(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, REBALANCE_DELAYS[1])
                self._rebalance_wanted.set()
                continue
            self._rebalance()
            if any(not shard.connected.is_set() for shard in self.shards.values()):
                # A master is down and the map still names it: look again shortly (a failover takes seconds).
                await asyncio.sleep(delay)
                delay = min(delay * 2, REBALANCE_DELAYS[1])
                self._rebalance_wanted.set()
            else:
                delay = REBALANCE_DELAYS[0]

    def _rebalance(self) -> None:
        masters = {node.name for node in self.redis.cluster.get_primaries()}
        for key in masters:
            self._shard(key)  # every master: its keyspace notifications are its own
        touched: set[Shard] = set()
        moved = 0
        for name, channel in self.channels.items():
            route = self._route(name)
            if route is None or route == channel.shard:
                continue
            if channel.shard is not None and channel.shard in self.shards:
                # The old master no longer serves the slot (and dropped the subscription): no SUNSUBSCRIBE.
                self.shards[channel.shard].remove(name, unsubscribe=False)
                moved += 1
            shard = self._shard(route)
            channel.shard, channel.state, channel.held = route, SUBSCRIBING, None
            shard.add(name)
            touched.add(shard)
        for shard in touched:
            shard.flush()
        for key in [key for key, shard in self.shards.items() if key not in masters and not shard.channels]:
            self._in_background(self.shards.pop(key).close())
        self._update_connected()
        if moved:
            log.info("presence hub: %d channel(s) moved to their slot's new master", moved)

    # ------------------------------------------------------------------ loading and delivery

    async def _loader(self) -> None:
        """Read the snapshots of newly confirmed channels, in batches, and queue them for delivery.

        Each key has its own outcome: one whose read failed is read again shortly, the others go live.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._load_wakeup.wait()
            self._load_wakeup.clear()
            while self._to_load:
                names = list(self._to_load)[:BATCH]
                self._to_load.difference_update(names)
                values = await get_many(self.redis.client, names)
                failed: list[str] = []
                for name, value in zip(names, values, strict=True):
                    channel = self.channels.get(name)
                    if channel is None or channel.state != LOADING:
                        continue  # gone, or a reconnect started over
                    if isinstance(value, BaseException):
                        failed.append(name)
                        continue
                    event = channel.held
                    if event is None and value is not None:
                        event = presence_event(value.encode() if isinstance(value, str) else value)
                    channel.held = None
                    channel.state = LIVE
                    self._deliveries.put_nowait((channel, event or NULL_EVENT))
                if failed:
                    error = next(v for v in values if isinstance(v, BaseException))
                    log.warning(
                        "presence hub cannot read %d snapshot(s) (%s); retrying", len(failed), describe_error(error)
                    )
                    loop.call_later(LOAD_RETRY, self._reload, failed)

    def _reload(self, names: list[str]) -> None:
        self._to_load.update(name for name in names if name in self.channels)
        self._load_wakeup.set()

    async def _deliverer(self) -> None:
        """The one place events reach listeners, in the order they were queued."""
        queue = self._deliveries
        while True:
            channel, event = await queue.get()
            channel.current = event
            listeners = channel.listeners
            if len(listeners) <= SLICE:
                # Writes never remove listeners synchronously (close callbacks run later).
                for listener in listeners:
                    listener.send(event)
                continue
            snapshot = tuple(listeners)
            for start in range(0, len(snapshot), SLICE):
                for listener in snapshot[start : start + SLICE]:
                    listener.send(event)
                await asyncio.sleep(0)

    async def broadcast(self, event: Event) -> None:
        """Write one shared event (e.g. the keepalive) to every listener, in slices."""
        written = 0
        for channel in list(self.channels.values()):
            for listener in tuple(channel.listeners):
                listener.send(event)
                written += 1
                if written % SLICE == 0:
                    await asyncio.sleep(0)

    async def ping_all(self) -> None:
        self.ping_redis()
        await self.broadcast(PING)

    async def drain(self, grace: float) -> None:
        """Shed every stream with a jittered `retry:` (browsers come back, spread out) and wait for them to go."""
        self.draining = True
        shed = 0
        for channel in list(self.channels.values()):
            # Streams still waiting for their first event (just arrived, or their channel resubscribing) are
            # told to come back sooner: they had nothing from this replica (sse.ARRIVED_DRAINING_RETRY_MS).
            waiting = channel.state != LIVE or channel.current is None
            for listener in tuple(channel.listeners):
                listener.shed(retry_hint(*(ARRIVED_DRAINING_RETRY_MS if waiting else DRAIN_RETRY_MS)))
                shed += 1
                if shed % SLICE == 0:
                    await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        while self.listener_count and loop.time() < deadline:  # noqa: ASYNC110 - bounded, once per shutdown
            await asyncio.sleep(0.05)
        for listener in self.listeners():
            listener.stream.close()
