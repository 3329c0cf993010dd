"""The maintenance commands: import, seed-demo, stats, reconcile and presence set/clear.

Each runs against the same stores as `serve`: on embedded defaults it attaches
to a running server's embedded stores (see runtime/embedded.py) or starts its
own for the duration of the command. They need the stores only (`Stores`), never
the serving features.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from common.lifecycle import Lifecycle
from demo.stand_ins import DEMO_ISRC
from presence import cli as presence_cli
from presence.snapshot import SnapshotError
from runtime.config import Config
from runtime.embedded import resolve_store_urls
from runtime.reconciler import ReconcilerBusy, run_once
from runtime.services import Stores, open_stores
from store.errors import describe_error
from store.formats import parse_time
from store.importer import import_document
from store.redis_connect import REDIS_ERRORS, connect
from store.stats import read_stats


@contextlib.asynccontextmanager
async def _stores(config: Config) -> AsyncIterator[Stores]:
    embedded, mongo_uri, redis_url = await asyncio.to_thread(resolve_store_urls, config)
    try:
        lifecycle = Lifecycle()
        try:
            yield await open_stores(config, mongo_uri, redis_url, lifecycle)
        finally:
            await lifecycle.close()
    finally:
        await asyncio.to_thread(embedded.stop)


def run_command(config: Config, command: Callable[[Stores], Awaitable[int]]) -> int:
    """Run `command` on the stores; a store that fails is one line on stderr and exit status 1."""

    async def main() -> int:
        async with _stores(config) as stores:
            return await command(stores)

    return with_store_errors(lambda: asyncio.run(main()))


def with_store_errors(run: Callable[[], int]) -> int:
    """`run()`, or 1 after one `error: MongoDB|Redis: <class>: <text>` line: never a traceback."""
    try:
        return run()
    except PyMongoError as exc:
        print(f"error: MongoDB: {describe_error(exc)}", file=sys.stderr)
    except REDIS_ERRORS as exc:
        print(f"error: Redis: {describe_error(exc)}", file=sys.stderr)
    return 1


async def _import(stores: Stores, data: Any) -> int:
    report = await import_document(stores.db, data)
    if not report.ok:
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"import refused: {len(report.errors)} problem(s); nothing was written", file=sys.stderr)
        return 1
    print(json.dumps({"users": report.users, "profiles": report.profiles}))
    return 0


class ImportFileError(Exception):
    """The import file cannot be read as JSON (the message says why, without a traceback)."""


def read_import_file(path: str) -> Any:
    """The file's JSON (UTF-8, -16 or -32, as RFC 8259 allows); ImportFileError says why it cannot be read."""
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise ImportFileError(f"{path} nests arrays or objects too deeply to be an import file") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ImportFileError(f"{path} is not JSON: {exc}") from None


def cmd_import(config: Config, path: str) -> int:
    try:
        data = read_import_file(path)
    except ImportFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_command(config, lambda stores: _import(stores, data))


def demo_document(now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        "users": [
            {
                "id": "demo-owner",
                "premium_until": (now + timedelta(days=3650)).isoformat(),
                "suspended": False,
                "sms": {"enabled": True, "key": "demo-sms-key", "phone": "+15550100", "phone_verified": True},
                "sms_credits": 25,
                "email": {"enabled": True, "key": "demo-email-key", "address": "owner@example.com", "verified": True},
                "email_credits": 25,
                "discord": {"channel_id": "1234567890", "bot_present": True},
                "music": {"enabled": True, "key": "demo-music-key"},
            }
        ],
        "profiles": [
            {
                "id": "demo",
                "owner_id": "demo-owner",
                "domain": "demo.localhost",
                "template": "classic",
                "is_public": 1,
                "suspended": 0,
                "expires_at": None,
                "created_at": "2026-01-01T00:00:00Z",
                "theme": {
                    "accent": "#7c3aed",
                    "background": {"from": "#0b0b10", "to": "#24123f", "angle": 160},
                    "font": "Inter",
                },
                "content": {
                    "display_name": "Demo Profile",
                    "bio": "A hosted single-page profile with live Discord presence, music and contact forms.",
                    "avatar_url": None,
                    "links": [
                        {"label": "GitHub", "url": "https://github.com/"},
                        {"label": "YouTube", "url": "https://www.youtube.com/"},
                        {"label": "Discord server", "url": "https://discord.gg/"},
                        {"label": "Website", "url": "https://hep.gg/"},
                        {"label": "Email", "url": "mailto:hello@example.com"},
                    ],
                    "music": [{"isrc": DEMO_ISRC, "title": "Demo Track", "artist": "The Demos"}],
                },
                "toggles": {
                    "presence": True,
                    "powered_by": True,
                    "contact_sms": True,
                    "contact_email": True,
                    "contact_discord": True,
                    "view_counter": True,
                },
            }
        ],
    }


def cmd_seed_demo(config: Config) -> int:
    code = run_command(config, lambda stores: _import(stores, demo_document()))
    if code == 0:
        print(f"demo profile: http://demo.localhost:{config.port}/", file=sys.stderr)
    return code


def cmd_stats(config: Config, profile_ids: list[str]) -> int:
    """One JSON line per profile, in the order given (one process for many: a deployment's check reads dozens)."""

    async def stats(stores: Stores) -> int:
        found = {p["_id"] async for p in stores.db.profiles.find({"_id": {"$in": profile_ids}}, {"_id": 1})}
        unknown = [profile_id for profile_id in profile_ids if profile_id not in found]
        for profile_id in unknown:
            print(f"error: no profile {profile_id!r} (ids are case-sensitive; see `import`)", file=sys.stderr)
        if unknown:
            return 1
        for profile_id in profile_ids:
            print(json.dumps(await read_stats(stores.db, profile_id)))
        return 0

    return run_command(config, stats)


def cmd_reconcile(config: Config, now: str | None) -> int:
    async def reconcile(stores: Stores) -> int:
        at = parse_time(now) if now else None
        at = at or stores.clock.now()
        try:
            changes = await run_once(stores.db, stores.redis.client, at)
        except ReconcilerBusy:
            print("another reconciler is running; nothing done", file=sys.stderr)
            return 3
        print(json.dumps({"at": at.isoformat(), "changes": [c.as_dict() for c in changes]}))
        return 0

    return run_command(config, reconcile)


def cmd_presence(config: Config, args: argparse.Namespace) -> int:
    """`presence set` checks the snapshot, then that MongoDB knows the user; `clear` needs Redis only."""
    if args.presence_action == "clear":
        return _presence_clear(config, args)
    try:
        snapshot = presence_cli.snapshot_from_args(args)
    except SnapshotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 1

    async def set_presence(stores: Stores) -> int:
        if await stores.db.users.find_one({"_id": args.user_id}, {"_id": 1}) is None:
            print(
                f"error: no user {args.user_id!r} in MongoDB (presence is written only for known users); "
                "nothing was written",
                file=sys.stderr,
            )
            return 1
        return await presence_cli.run(stores.redis, args, snapshot)

    return run_command(config, set_presence)


def _presence_clear(config: Config, args: argparse.Namespace) -> int:
    embedded, _, redis_url = resolve_store_urls(config, need_mongo=False)
    try:

        async def main() -> int:
            redis = await connect(redis_url, max_connections=4)  # a cluster node or not: it asks
            try:
                return await presence_cli.run(redis, args, None)
            finally:
                await redis.close()

        return with_store_errors(lambda: asyncio.run(main()))
    finally:
        embedded.stop()
