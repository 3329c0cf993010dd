"""The MongoDB connection (PyMongo's AsyncMongoClient) and the indexes the tier relies on."""

from __future__ import annotations

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase


OPERATION_TIMEOUT_MS = 5000


def connect(uri: str, db_name: str, *, app_name: str = "hepgg_server") -> tuple[AsyncMongoClient, AsyncDatabase]:
    # timeoutMS bounds every operation as a whole (server selection, a hung socket, its one retry):
    # without it a server that accepts but never answers held a request until the monitor noticed (~16 s).
    client: AsyncMongoClient = AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=3000,
        timeoutMS=OPERATION_TIMEOUT_MS,
        maxPoolSize=50,
    )
    return client, client[db_name]


async def ensure_indexes(db: AsyncDatabase) -> None:
    await db.profiles.create_index([("domain", ASCENDING)], unique=True, name="domain_unique")
    await db.profiles.create_index([("owner_id", ASCENDING)], name="by_owner")
    await db.views.create_index([("profile_id", ASCENDING), ("at", ASCENDING)], name="by_profile_time")
