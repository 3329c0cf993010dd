"""`presence set|clear` subcommands (the Discord bot's writer contract, from a shell).

    python hepgg_server.py presence set USER_ID --status online [--activity-name NAME --type 0-5
        --details ... --state ... --started-at MS --ends-at MS --large-image ... --large-text ...]
    python hepgg_server.py presence clear USER_ID

Both run the same pipeline as `presence.writer` against the configured Redis
(on embedded defaults: the running server's Valkey, or one started for the
command). A bad snapshot is refused with a message on stderr, exit status 1,
and nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import redis.asyncio as aioredis

from presence.snapshot import PRESENCE_TTL, SnapshotError
from presence.writer import clear_presence, write_presence
from runtime.embedded import EmbeddedStores

_ACTIVITY_FLAGS = (  # flag, snapshot field, type
    ("activity-name", "name", str),
    ("type", "type", int),
    ("details", "details", str),
    ("state", "state", str),
    ("started-at", "startedAt", int),
    ("ends-at", "endsAt", int),
    ("large-image", "largeImage", str),
    ("large-text", "largeText", str),
)


def add_parser(commands, add_arguments) -> None:
    """Register the `presence` subcommand on the top-level parser."""
    presence = commands.add_parser(
        "presence",
        help="write or clear a user's Discord presence snapshot",
        description="write or clear a user's Discord presence snapshot",
    )
    actions = presence.add_subparsers(dest="presence_action", required=True, metavar="ACTION")
    set_cmd = actions.add_parser("set", help="validate, store (300 s TTL) and publish a snapshot")
    add_arguments(set_cmd)
    set_cmd.add_argument("user_id", metavar="USER_ID")
    set_cmd.add_argument("--status", required=True, help="online, idle, dnd or offline")
    for flag, field, kind in _ACTIVITY_FLAGS:
        set_cmd.add_argument(
            f"--{flag}", dest=field, default=None, help=f"activity.{field} ({'integer' if kind is int else 'text'})"
        )
    set_cmd.add_argument("--ttl", type=float, default=PRESENCE_TTL, help=argparse.SUPPRESS)  # tests and demos
    clear_cmd = actions.add_parser("clear", help="delete a snapshot; open streams receive null")
    add_arguments(clear_cmd)
    clear_cmd.add_argument("user_id", metavar="USER_ID")


def snapshot_from_args(args: argparse.Namespace) -> dict:
    activity: dict = {}
    for flag, field, kind in _ACTIVITY_FLAGS:
        value = getattr(args, field)
        if value is None:
            continue
        if kind is int:
            try:
                value = int(value)
            except ValueError:
                raise SnapshotError(f"--{flag} must be a whole number, got {value!r}") from None
        activity[field] = value
    snapshot: dict = {"status": args.status}
    if activity:
        snapshot["activity"] = activity
    return snapshot


def run(config, args: argparse.Namespace) -> int:
    try:
        snapshot = snapshot_from_args(args) if args.presence_action == "set" else None
    except SnapshotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 1
    # Only Redis is needed: do not start an embedded MongoDB for this.
    stores = EmbeddedStores(config.data_dir, want_mongo=False, want_redis=config.redis_url == "embedded")
    endpoints = stores.start()
    redis_url = endpoints.redis_url if config.redis_url == "embedded" else config.redis_url
    try:
        return asyncio.run(_run(redis_url, config.redis_sharded_pubsub, args, snapshot))
    finally:
        stores.stop()


async def _run(redis_url: str, sharded: bool, args: argparse.Namespace, snapshot: dict | None) -> int:
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
    try:
        if args.presence_action == "set":
            written = await write_presence(redis, args.user_id, snapshot, ttl=args.ttl, sharded=sharded)
            print(json.dumps(written, separators=(",", ":"), ensure_ascii=False))
        else:
            await clear_presence(redis, args.user_id, sharded=sharded)
            print(json.dumps({"cleared": args.user_id}))
        return 0
    except SnapshotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 1
    except aioredis.RedisError as exc:
        print(f"error: Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
