"""What a store outage looks like to the code: the driver errors that mean "down or not answering".

A request that meets one of these was fine and will work again, so every route
answers it with 503 and Retry-After (handlers/errors.py), never a 500; anything
else a driver raises is a bug or a bad request and must not be taken for an outage.
(MongoUnreachable covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError;
MongoTimeout is the client's timeoutMS running out server-side. A Redis Cluster failing over answers
CLUSTERDOWN or TRYAGAIN, or has a slot no master serves for a moment.)

One driver fault counts too: PyMongo 4.20's asyncio server selection, on Python 3.11, can raise
RuntimeError("cannot wait on un-acquired lock") from its own lock module while the server is down (seen
once in the suite, in test_faults.py's MongoDB outage). It is the same outage seen through a driver race,
so `is_store_outage` takes it for one; a RuntimeError from anywhere else is still a bug.
"""

from __future__ import annotations

import os
from typing import TypeGuard

import pymongo
from pymongo.errors import ConnectionFailure as MongoUnreachable
from pymongo.errors import ExecutionTimeout as MongoTimeout
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisUnreachable
from redis.exceptions import TimeoutError as RedisTimeout

STORE_OUTAGES: tuple[type[Exception], ...] = (
    MongoUnreachable,
    MongoTimeout,
    RedisUnreachable,
    RedisTimeout,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)
RETRY_AFTER_SECONDS = 5  # a restarting store is usually back within a few

_DRIVER_DIR = os.path.dirname(pymongo.__file__) + os.sep
_DRIVER_LOCK_FAULT = "cannot wait on un-acquired lock"


def is_store_outage(exc: BaseException | None) -> TypeGuard[BaseException]:
    """Whether `exc` means a store is down or not answering (see the module docstring)."""
    if isinstance(exc, STORE_OUTAGES):
        return True
    return isinstance(exc, RuntimeError) and str(exc) == _DRIVER_LOCK_FAULT and _raised_in_driver(exc)


def _raised_in_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_DRIVER_DIR)
