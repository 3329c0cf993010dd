"""What a store outage looks like to the code: the driver errors that mean "down or not answering".

A request that meets one of these was fine and will work again, so every route
answers it with 503 and Retry-After (handlers/errors.py), never a 500; anything
else a driver raises is a bug or a bad request and must not be taken for an outage.
(MongoUnreachable covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError;
MongoTimeout is the client's timeoutMS running out server-side. A Redis Cluster failing over answers
CLUSTERDOWN or TRYAGAIN, or has a slot no master serves for a moment.)
"""

from __future__ import annotations

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
