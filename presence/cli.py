"""`presence set|clear` subcommands (the Discord bot's writer contract, from a shell).

    python hepgg_server.py presence set USER_ID --status online [--activity-name NAME --type 0-5
        --details ... --state ... --started-at MS --ends-at MS --large-image ... --large-text ...]
    python hepgg_server.py presence clear USER_ID

Both run the same pipeline as `presence.writer` against the configured Redis
(on embedded defaults: the running server's Valkey, or one started for the
command; runtime/cli.py resolves it and hands `run` a client). A bad snapshot is
refused with a message on stderr, exit status 1, and nothing written; so is
`set` for a user MongoDB does not know (the Discord bot writes only for known
users). `clear` needs no such check: clearing a stray snapshot is always safe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from presence.snapshot import PRESENCE_TTL, SnapshotError, check_user_id, validate_snapshot
from presence.writer import clear_presence, write_presence
from store.redis_connect import REDIS_ERRORS, RedisConnector, describe_error

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


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_arguments: Callable[[argparse.ArgumentParser, tuple[str, ...] | None], None],
    command_options: Mapping[str, tuple[str, ...]],
) -> None:
    """Register the `presence` subcommand on the top-level parser (own arguments first, then store options)."""
    presence = commands.add_parser(
        "presence",
        help="write or clear a user's Discord presence snapshot",
        description="write or clear a user's Discord presence snapshot",
    )
    actions = presence.add_subparsers(dest="presence_action", required=True, metavar="ACTION")
    set_help = "validate, store (300 s TTL) and publish a snapshot for a user known to MongoDB"
    set_cmd = actions.add_parser("set", help=set_help, description=set_help)
    set_cmd.add_argument("user_id", metavar="USER_ID")
    set_cmd.add_argument("--status", required=True, help="online, idle, dnd or offline")
    for flag, field, kind in _ACTIVITY_FLAGS:
        set_cmd.add_argument(
            f"--{flag}", dest=field, default=None, help=f"activity.{field} ({'integer' if kind is int else 'text'})"
        )
    set_cmd.add_argument("--ttl", type=float, default=PRESENCE_TTL, help=argparse.SUPPRESS)  # tests and demos
    add_arguments(set_cmd, command_options["presence set"])
    clear_help = "delete a snapshot; open streams receive null"
    clear_cmd = actions.add_parser("clear", help=clear_help, description=clear_help)
    clear_cmd.add_argument("user_id", metavar="USER_ID")
    add_arguments(clear_cmd, command_options["presence clear"])


def snapshot_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The snapshot the flags describe; SnapshotError for a flag (or a field) that is not what it must be."""
    activity: dict[str, Any] = {}
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
    snapshot: dict[str, Any] = {"status": args.status}
    if activity:
        snapshot["activity"] = activity
    check_user_id(args.user_id)
    validate_snapshot(snapshot, datetime.now(UTC))  # checked before any store is asked about the user
    return snapshot


async def run(redis: RedisConnector, args: argparse.Namespace, snapshot: dict[str, Any] | None) -> int:
    """Write or clear the snapshot; prints what was done, or the error (exit status 1).

    PUBLISH or SPUBLISH follows from the client (a cluster's is sharded): presence/writer.py.
    """
    try:
        if args.presence_action == "set":
            written = await write_presence(redis.client, args.user_id, snapshot, ttl=args.ttl)
            print(json.dumps(written, separators=(",", ":"), ensure_ascii=False))
        else:
            await clear_presence(redis.client, args.user_id)
            print(json.dumps({"cleared": args.user_id}))
        return 0
    except SnapshotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 1
    except REDIS_ERRORS as exc:
        print(f"error: Redis at {redis.where}: {describe_error(exc)}", file=sys.stderr)
        return 1
