"""The contact forms' triple token bucket, decided atomically in Redis.

Three buckets guard every send: per IP+profile burst (3/minute), per IP+profile
daily (30/day) and per owner and channel daily (50 SMS, 100 email/Discord). One
Lua script (limiter.lua) refills all three from the Redis server's clock, lets
the request through only if each holds a token and then takes one from each,
so concurrent requests from any number of processes cannot overshoot.

Every key of one call carries the hash tag `{contact:<owner id>}`: the owner
bucket and the IP buckets of the owner's profiles live in one Redis Cluster
slot, which a multi-key script requires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from runtime.client_ip import rate_limit_subject
from runtime.metrics import LIMITER_DECISIONS

SCRIPT = (Path(__file__).with_name("limiter.lua")).read_text()

MINUTE = 60
DAY = 86_400


@dataclass(frozen=True)
class Rule:
    name: str
    capacity: int  # tokens when full
    period: float  # seconds to earn `capacity` tokens back


OWNER_DAILY = {
    "sms": Rule("owner", 50, DAY),
    "email": Rule("owner", 100, DAY),
    "discord": Rule("owner", 100, DAY),
}


@dataclass(frozen=True)
class Rules:
    """The spec's limits; tests pass others to reach a bucket without waiting a day."""

    burst: Rule = Rule("burst", 3, MINUTE)
    daily: Rule = Rule("daily", 30, DAY)
    owner: Mapping[str, Rule] = field(default_factory=lambda: dict(OWNER_DAILY))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    refused: tuple[str, ...] = ()  # names of the buckets that had no token
    retry_after: int | None = None  # whole seconds, set when the burst bucket refused

    @property
    def outcome(self) -> str:
        """The metric label: allowed, or the first bucket that refused."""
        return "allowed" if self.allowed else self.refused[0]


class LimiterUnavailable(Exception):
    """Redis could not answer: the caller must refuse (fail closed)."""


class ContactLimiter:
    def __init__(self, redis: aioredis.Redis, rules: Rules | None = None):
        self.rules = rules or Rules()
        self._script = redis.register_script(SCRIPT)  # EVALSHA, falling back to EVAL once per server

    @staticmethod
    def keys(owner_id: str, profile_id: str, ip: str, channel: str) -> list[str]:
        tag = "{contact:%s}" % owner_id
        ip = rate_limit_subject(ip)  # an IPv6 /64 is one visitor
        return [f"{tag}:burst:{profile_id}:{ip}", f"{tag}:daily:{profile_id}:{ip}", f"{tag}:owner:{channel}"]

    async def acquire(self, owner_id: str, profile_id: str, ip: str, channel: str) -> Decision:
        rules = (self.rules.burst, self.rules.daily, self.rules.owner[channel])
        args: list = []
        for rule in rules:
            args += [rule.capacity, rule.period]
        try:
            allowed, mask, wait_ms = await self._script(keys=self.keys(owner_id, profile_id, ip, channel), args=args)
        except (RedisError, OSError) as exc:
            LIMITER_DECISIONS.labels(channel, "error").inc()
            raise LimiterUnavailable(str(exc)) from exc
        if allowed:
            decision = Decision(True)
        else:
            refused = tuple(rule.name for i, rule in enumerate(rules) if int(mask) & (1 << i))
            retry_after = max(1, math.ceil(int(wait_ms) / 1000)) if "burst" in refused else None
            decision = Decision(False, refused, retry_after)
        LIMITER_DECISIONS.labels(channel, decision.outcome).inc()
        return decision
