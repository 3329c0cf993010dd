"""The process-wide presence hub: one pub/sub connection, in-process fan-out.

Per process: ONE Redis connection in subscribed mode (its own, separate from
`services.redis`), subscribed only to channels with at least one local
listener (SUBSCRIBE on the first, UNSUBSCRIBE after the last, pipelined and
batched per loop iteration). A published snapshot is encoded once into an
`Event` whose bytes every listener shares, and delivered by one delivery task
in slices, yielding to the loop between slices so a 10,000-listener fan-out
does not stall other requests.

Order: a channel is "live" only once its SUBSCRIBE is confirmed and the
snapshot has been read (MGET, batched). Messages that arrive before that are
held (newest wins). SET+PUBLISH is one MULTI/EXEC in the writer, so a message
seen after the confirmation is never older than the value read after it.
Deliveries (first snapshots and changes) go through one queue, so a listener
never sees an older snapshot after a newer one.

Expiry: Redis keyspace notifications (`Ex`, enabled on connect when CONFIG is
permitted) arrive on the same connection; an expired key becomes a `null`
event for that user's streams. One mechanism for all streams, no timers.

Redis restarts: the connection loop reconnects with jittered exponential
backoff, resubscribes every channel and sends every stream the current
snapshot; streams stay open meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tornado.iostream import IOStream

from common.metrics import OPEN_STREAMS
from common.tasks import cancel_and_wait, raise_if_cancelling
from presence.pubsub import PubSubConnection, PubSubError, pack
from presence.sse import DRAIN_RETRY_MS, HEAD_CHUNKED, HEAD_PLAIN, NULL_EVENT, PING, Event, presence_event, retry_hint
from presence.stream import Listener

log = logging.getLogger("hepgg.presence")

SUBSCRIBING, LOADING, LIVE = 0, 1, 2
SLICE = 512  # listeners written per loop turn during a large fan-out
BATCH = 1000  # channels per (UN)SUBSCRIBE / MGET
STREAM_KIND = "presence"
_OPEN_STREAMS = OPEN_STREAMS.labels(STREAM_KIND)  # bound once: labels() per connect costs


class Channel:
    """One user's channel in this process: its listeners and the last snapshot event delivered."""

    __slots__ = ("current", "held", "listeners", "name", "state")

    def __init__(self, name: str):
        self.name = name
        self.listeners: set[Listener] = set()
        self.current: Event | None = None
        self.state = SUBSCRIBING
        self.held: Event | None = None  # newest message seen before the channel went live


class PresenceHub:
    def __init__(
        self,
        redis: Redis,
        conn_params: dict[str, Any],
        *,
        use_ssl: bool = False,
        sharded: bool = False,
        max_buffer: int = 65536,
        max_streams: int = 19000,
    ):
        self.redis = redis  # the shared command client, for MGET
        self._conn_params = conn_params
        self._use_ssl = use_ssl
        self.sharded = sharded
        self.max_buffer = max_buffer
        self.max_streams = max_streams
        self.channels: dict[str, Channel] = {}
        self.listener_count = 0
        self.draining = False
        self.expiry_events = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        db = int(conn_params.get("db") or 0)
        self._expired_channel = f"__keyevent@{db}__:expired".encode()
        self._sub_cmd, self._unsub_cmd = ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        self._message_kinds = (b"smessage", b"message") if sharded else (b"message",)
        self._conn: PubSubConnection | None = None
        self._outstanding: dict[str, int] = {}  # channel -> SUBSCRIBE confirmations still to come
        self._sub_queue: set[str] = set()
        self._unsub_queue: set[str] = set()
        self._flush_scheduled = False
        self._gauges_scheduled = False
        self._to_load: set[str] = set()
        self._load_wakeup = asyncio.Event()
        self._deliveries: asyncio.Queue[tuple[Channel, Event]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for coro in (self._connection_loop(), self._loader(), self._deliverer()):
            self._tasks.append(asyncio.create_task(coro))

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._conn is not None:
            self._conn.close()
        for channel in list(self.channels.values()):
            for listener in list(channel.listeners):
                listener.stream.close()

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
        head = HEAD_CHUNKED if chunked else HEAD_PLAIN
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
            self._queue_unsubscribe(listener.name)

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
        self._schedule_flush()

    def _queue_unsubscribe(self, name: str) -> None:
        self._unsub_queue.add(name)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send the (UN)SUBSCRIBEs queued during this loop turn, a few commands for any number of channels."""
        self._flush_scheduled = False
        conn = self._conn
        if conn is None:
            # While disconnected nothing is sent: the reconnect subscribes to every channel present then.
            self._sub_queue.clear()
            self._unsub_queue.clear()
            return
        unsubscribe = [name for name in self._unsub_queue if name not in self.channels]
        subscribe = [name for name in self._sub_queue if name in self.channels]
        self._sub_queue.clear()
        self._unsub_queue.clear()
        try:
            for start in range(0, len(unsubscribe), BATCH):
                conn.send(pack(self._unsub_cmd, *unsubscribe[start : start + BATCH]))
            for start in range(0, len(subscribe), BATCH):
                batch = subscribe[start : start + BATCH]
                conn.send(pack(self._sub_cmd, *batch))
                for name in batch:
                    self._outstanding[name] = self._outstanding.get(name, 0) + 1
        except PubSubError:
            pass  # the connection loop is about to reconnect and resubscribe everything

    # ------------------------------------------------------------------ the connection

    async def _connection_loop(self) -> None:
        delay = 0.1
        while True:
            conn = PubSubConnection(self._conn_params, use_ssl=self._use_ssl)
            try:
                await conn.connect()
                await self._enable_expiry_events(conn)
            except (TimeoutError, OSError, hiredis.ReplyError, PubSubError) as exc:
                conn.close()
                raise_if_cancelling()
                log.warning("presence hub cannot reach Redis (%s); retrying in about %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self._resubscribe(conn)
            try:
                while True:
                    for reply in await conn.read_replies():
                        self._on_reply(reply)
            except (OSError, PubSubError) as exc:
                raise_if_cancelling()
                log.warning("presence hub lost its Redis connection (%s); reconnecting", exc)
            finally:
                self._conn = None
                self.connected.clear()
                conn.close()
            self.reconnects += 1

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
                    "cannot enable Redis keyspace notifications (%s): an expired snapshot reaches "
                    "open streams only with the next change",
                    exc,
                )
            self.expiry_events = False

    def _resubscribe(self, conn: PubSubConnection) -> None:
        """A fresh connection: every channel goes back to subscribing, then is re-read and re-sent."""
        self._conn = conn
        self._outstanding.clear()
        self._unsub_queue.clear()
        self._sub_queue = set(self.channels)
        for channel in self.channels.values():
            channel.state = SUBSCRIBING
            channel.held = None
        conn.send(pack("SUBSCRIBE", self._expired_channel))
        self._flush()
        self.connected.set()

    def ping_redis(self) -> None:
        """Traffic on an idle connection, so a dead peer is noticed by TCP."""
        if self._conn is not None:
            try:
                self._conn.send(pack("PING"))
            except PubSubError:
                pass

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            if isinstance(reply, hiredis.ReplyError):
                log.warning("presence hub: Redis answered %s", reply)
            return
        kind = reply[0]
        if kind in self._message_kinds:
            event: Event | None
            if reply[1] == self._expired_channel:
                name, event = reply[2].decode("utf-8", "replace"), NULL_EVENT
            else:
                name, event = reply[1].decode("utf-8", "replace"), presence_event(reply[2])
            channel = self.channels.get(name)
            if channel is None:
                return
            if event is None:
                log.warning("dropped a malformed presence payload on %s", name)
                return
            if channel.state == LIVE:
                self._deliveries.put_nowait((channel, event))
            else:
                channel.held = event
        elif kind in (b"subscribe", b"ssubscribe"):
            name = reply[1].decode("utf-8", "replace")
            remaining = self._outstanding.get(name, 0) - 1
            if remaining > 0:
                self._outstanding[name] = remaining
                return
            self._outstanding.pop(name, None)
            channel = self.channels.get(name)
            if channel is not None and channel.state == SUBSCRIBING:
                channel.state = LOADING
                self._to_load.add(name)
                self._load_wakeup.set()

    # ------------------------------------------------------------------ loading and delivery

    async def _loader(self) -> None:
        """Read the snapshots of newly confirmed channels, in batches, and queue them for delivery."""
        while True:
            await self._load_wakeup.wait()
            self._load_wakeup.clear()
            while self._to_load:
                names = list(self._to_load)[:BATCH]
                self._to_load.difference_update(names)
                try:
                    values = await self.redis.mget(names)
                except RedisError as exc:
                    raise_if_cancelling()
                    log.warning("presence hub cannot read snapshots (%s); retrying", exc)
                    self._to_load.update(name for name in names if name in self.channels)
                    await asyncio.sleep(0.5)
                    continue
                for name, value in zip(names, values, strict=True):
                    channel = self.channels.get(name)
                    if channel is None or channel.state != LOADING:
                        continue  # gone, or a reconnect started over
                    event = channel.held
                    if event is None and value is not None:
                        event = presence_event(value.encode() if isinstance(value, str) else value)
                    channel.held = None
                    channel.state = LIVE
                    self._deliveries.put_nowait((channel, event or NULL_EVENT))

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
        for listener in self.listeners():
            listener.shed(retry_hint(*DRAIN_RETRY_MS))
            shed += 1
            if shed % SLICE == 0:
                await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        while self.listener_count and loop.time() < deadline:  # noqa: ASYNC110 - bounded, once per shutdown
            await asyncio.sleep(0.05)
        for listener in self.listeners():
            listener.stream.close()
