"""The owner's SMS and email credits: one atomic debit before delivery, a refund if it fails.

`find_one_and_update` with `{field: {$gt: 0}}` and `$inc: -1` is a single
document operation, so any number of concurrent sends from any number of
processes can spend exactly the balance and no more.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from store.models import CREDIT_FIELDS
from store.mongo import Database

log = logging.getLogger("hepgg.contact.credits")


class CreditsUnavailable(Exception):
    """MongoDB could not answer; the send must not go out unpaid."""


class Credits:
    def __init__(self, db: Database):
        self.users = db.users

    async def debit(self, owner_id: str, channel: str) -> bool:
        """Take one credit; False when the balance is zero."""
        field = CREDIT_FIELDS[channel]
        try:
            doc = await self.users.find_one_and_update(
                {"_id": owner_id, field: {"$gt": 0}},
                {"$inc": {field: -1}},
                projection={"_id": 1},
            )
        except PyMongoError as exc:
            raise CreditsUnavailable(str(exc)) from exc
        return doc is not None

    async def refund(self, owner_id: str, channel: str) -> None:
        field = CREDIT_FIELDS[channel]
        try:
            await self.users.update_one({"_id": owner_id}, {"$inc": {field: 1}})
        except PyMongoError:
            # The send failed and so did the refund: leave a trace an operator can act on.
            log.error("could not refund one %s credit to owner %s", channel, owner_id)
