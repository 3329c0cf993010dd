"""The contact forms' triple token bucket, decided atomically in Redis, in two steps.

Three buckets guard every send: per IP+profile burst (3/minute), per IP+profile
daily (30/day) and per owner and channel daily (50 SMS, 100 email/Discord). The
spec evaluates them before Turnstile, but the owner's bucket is the owner's
budget, not the visitor's: a request that fails validation or Turnstile must not
spend it, or anyone could burn an owner's day with bodies of `{}`. So:

1. `admit`, before the body is read: one Lua call (limiter.lua) refills all
   three buckets from the Redis server's clock and lets the request through
   only if each holds a token; it then takes one from the two per-address
   buckets (every attempt counts there) and leaves the owner's bucket as it is.
2. `take_owner_token`, once the form is valid and Turnstile passed: one Lua
   call takes the owner's token, refusing (429) if other sends took the last
   one in between. Each call is atomic, so concurrent requests from any number
   of processes cannot overshoot any bucket.

A refusal is remembered in this process until the refusing bucket would hold a
token again (`RefusalMemo`): until then the same request is refused without
asking Redis, so a flood of refused sends (the abuse the limiter exists for)
costs no Redis round trip.

Every key carries the hash tag `{contact:<owner id>}`: the owner bucket and the
IP buckets of the owner's profiles live in one Redis Cluster slot, which a
multi-key script requires.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redis.commands.core import AsyncScript

from common.client_ip import rate_limit_subject
from common.metrics import LIMITER_DECISIONS
from store.redis_connect import REDIS_ERRORS, RedisClient, RedisConnector, describe_error

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


class RefusalMemo:
    """Buckets this process knows to be empty, each until it would hold a token again.

    A bucket only fills with time: once Redis said a bucket needs `w` seconds to hold a token,
    every request needing it in those `w` seconds is refused, whatever other processes do (they
    can only take tokens). So those requests can be refused from memory, with the same answer.
    The deadline is counted from when Redis's answer arrived, so it never ends before Redis's
    own. (An operator who deletes a bucket in Redis lifts a refusal here only at its deadline.)
    """

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity  # bounds memory under a flood from many addresses
        self._until: dict[str, float] = {}  # bucket key -> monotonic deadline

    def remember(self, key: str, wait_seconds: float, now: float) -> None:
        if len(self._until) >= self.capacity:
            self._prune(now)
        self._until[key] = now + wait_seconds

    def refusing(self, keys: list[str], now: float) -> list[tuple[int, float]]:
        """(index in `keys`, seconds left) of each key still refused."""
        found = []
        for index, key in enumerate(keys):
            until = self._until.get(key)
            if until is not None:
                if until > now:
                    found.append((index, until - now))
                else:
                    del self._until[key]
        return found

    def __len__(self) -> int:
        return len(self._until)

    def _prune(self, now: float) -> None:
        self._until = {key: until for key, until in self._until.items() if until > now}
        if len(self._until) >= self.capacity:  # still full of live refusals: forget the oldest half
            keep = list(self._until.items())[len(self._until) // 2 :]
            self._until = dict(keep)


class LimiterUnavailable(Exception):
    """Redis could not answer: the caller must refuse (fail closed)."""


class ContactLimiter:
    def __init__(self, redis: RedisConnector, rules: Rules | None = None):
        self.rules = rules or Rules()
        self.redis = redis
        self._scripts: tuple[RedisClient, AsyncScript] | None = None
        self.memo = RefusalMemo()

    def _script(self) -> AsyncScript:
        """The script on the current client: EVALSHA, falling back to EVAL once per server (or node)."""
        client = self.redis.client
        if self._scripts is None or self._scripts[0] is not client:
            self._scripts = (client, client.register_script(SCRIPT))
        return self._scripts[1]

    @staticmethod
    def keys(owner_id: str, profile_id: str, ip: str, channel: str) -> list[str]:
        """burst, daily (per address and profile) and owner (per channel) keys, in the script's order."""
        tag = "{contact:%s}" % owner_id
        ip = rate_limit_subject(ip)  # an IPv6 /64 is one visitor
        return [
            f"{tag}:burst:{profile_id}:{ip}",
            f"{tag}:daily:{profile_id}:{ip}",
            ContactLimiter.owner_key(owner_id, channel),
        ]

    @staticmethod
    def owner_key(owner_id: str, channel: str) -> str:
        """The owner's daily bucket for a channel (hash-tagged with the others: one slot on a cluster)."""
        return "{contact:%s}:owner:%s" % (owner_id, channel)

    async def admit(self, owner_id: str, profile_id: str, ip: str, channel: str) -> Decision:
        """Step 1: every bucket holds a token; one is taken from the two per-address buckets."""
        rules = (self.rules.burst, self.rules.daily, self.rules.owner[channel])
        decision = await self._decide(channel, self.keys(owner_id, profile_id, ip, channel), rules, take=0b011)
        LIMITER_DECISIONS.labels(channel, decision.outcome).inc()
        return decision

    async def take_owner_token(self, owner_id: str, channel: str) -> Decision:
        """Step 2, for a valid form that passed Turnstile: take the owner's daily token (refused if gone)."""
        decision = await self._decide(
            channel, [self.owner_key(owner_id, channel)], (self.rules.owner[channel],), take=0b1
        )
        if not decision.allowed:  # an allowed send was counted once, at admission
            LIMITER_DECISIONS.labels(channel, decision.outcome).inc()
        return decision

    async def _decide(self, channel: str, keys: list[str], rules: tuple[Rule, ...], take: int) -> Decision:
        known = self.memo.refusing(keys, time.monotonic())
        if known:
            refused = tuple(rules[index].name for index, _ in known)
            return _refusal(refused, max(left for _, left in known))
        args: list[float] = [take]
        for rule in rules:
            args += [rule.capacity, rule.period]
        try:
            allowed, mask, wait_ms, *bucket_waits_ms = await self._script()(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            LIMITER_DECISIONS.labels(channel, "error").inc()
            raise LimiterUnavailable(describe_error(exc)) from exc
        if allowed:
            return Decision(True)
        now = time.monotonic()
        for key, bucket_wait_ms in zip(keys, bucket_waits_ms, strict=True):
            if int(bucket_wait_ms) > 0:
                self.memo.remember(key, int(bucket_wait_ms) / 1000, now)
        refused = tuple(rule.name for i, rule in enumerate(rules) if int(mask) & (1 << i))
        return _refusal(refused, int(wait_ms) / 1000)


def _refusal(refused: tuple[str, ...], wait_seconds: float) -> Decision:
    # The spec sends Retry-After for the burst bucket; it covers every refusing bucket, so it is not too early.
    retry_after = max(1, math.ceil(wait_seconds)) if "burst" in refused else None
    return Decision(False, refused, retry_after)
