"""The MongoDB connection (PyMongo's AsyncMongoClient) and the indexes the tier relies on."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

OPERATION_TIMEOUT_MS = 5000

Database = AsyncDatabase[dict[str, Any]]  # documents are plain dicts (the read models in store/models.py)
Client = AsyncMongoClient[dict[str, Any]]


def connect(uri: str, db_name: str, *, app_name: str = "hepgg_server") -> tuple[Client, Database]:
    # timeoutMS bounds every operation as a whole (server selection, a hung socket, its one retry):
    # without it a server that accepts but never answers held a request until the monitor noticed (~16 s).
    client: Client = AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=3000,
        timeoutMS=OPERATION_TIMEOUT_MS,
        maxPoolSize=50,
    )
    return client, client[db_name]


async def ensure_indexes(db: Database) -> None:
    """The indexes behind every query: host lookups, an owner's profiles (plans), events by time, credit holds."""
    await db.profiles.create_index([("domain", ASCENDING)], unique=True, name="domain_unique")
    await db.profiles.create_index([("owner_id", ASCENDING)], name="by_owner")
    # View/play events (store/stats.py) are kept as each profile's history, read by profile and time.
    await db.stat_events.create_index([("profile_id", ASCENDING), ("at", ASCENDING)], name="by_profile_time")
    # Pending credit holds by age: the sweeper's query (contact/credits.py); owners without holds are not in it.
    await db.users.create_index([("credit_holds.at", ASCENDING)], name="credit_holds_by_age", sparse=True)
