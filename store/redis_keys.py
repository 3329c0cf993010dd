"""Commands over many keys, on one server or a Redis Cluster alike, each key with its own outcome.

On a cluster one pipeline over keys of every master is one failure domain: redis-py retries the whole
pipeline while any one master is failing over (measured: 2.8 s for 30 keys when one of three masters was
killed), so keys on healthy masters would wait for the sick one. Here the keys are grouped by the master
that serves them and each group is its own pipeline, run side by side: a failing master delays or fails
only its own keys. On one server there is one group (one failure domain anyway).

`claim` sets many keys at once where they share a hash tag: one script per tag instead of one command per
key (a cluster pipeline resolves a slot and a node for every command it is given).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisError

from store.redis_connect import REDIS_ERRORS

log = logging.getLogger("hepgg.redis")

BATCH = 1000  # keys per MGET on one server

# SET key token NX EX seconds GET for every key; the reply has one character per key: "1" where the key is
# now the caller's (it was free, or an earlier try whose reply was lost set it to this token), "0" where
# another token holds it. One string, not an array: the cheapest reply to read.
CLAIM_SCRIPT = """local claimed = {}
for i, key in ipairs(KEYS) do
  local token = ARGV[i + 1]
  local held = redis.call('SET', key, token, 'NX', 'EX', ARGV[1], 'GET')
  claimed[i] = (not held or held == token) and '1' or '0'
end
return table.concat(claimed)"""

AddCommand = Callable[[Pipeline | ClusterPipeline, int], object]  # (pipeline, index into the keys)


def group_by_master(
    client: Redis | RedisCluster, keys: Sequence[str]
) -> tuple[list[list[int]], dict[int, BaseException]]:
    """Indexes of `keys` grouped by the master that serves them (one group on one server), and the keys
    no master serves right now (a slot uncovered mid-failover), each with the error that says so."""
    if not isinstance(client, RedisCluster):
        return [list(range(len(keys)))], {}
    groups: dict[str, list[int]] = defaultdict(list)
    uncovered: dict[int, BaseException] = {}
    for index, key in enumerate(keys):
        try:
            node = client.get_node_from_key(key)
        except REDIS_ERRORS as exc:
            uncovered[index] = exc
            continue
        if node is None:
            uncovered[index] = RedisError(f"no master serves the slot of {key!r}")
        else:
            groups[node.name].append(index)
    return list(groups.values()), uncovered


async def per_key(client: Redis | RedisCluster, keys: Sequence[str], add: AddCommand) -> list[Any | BaseException]:
    """Run `add(pipe, i)` for every key (`keys[i]`), pipelined per master; each key's reply, or the exception
    it met, in the order of `keys`."""
    results: list[Any | BaseException] = [None] * len(keys)

    async def run(indexes: list[int]) -> None:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for index in indexes:
                    add(pipe, index)
                replies = await pipe.execute(raise_on_error=False)
            if len(replies) != len(indexes):
                raise RedisError(f"{len(replies)} replies to {len(indexes)} commands")
        except Exception as exc:  # whatever failed, these keys have no answer: the caller keeps them for later
            if not isinstance(exc, REDIS_ERRORS):
                log.warning("pipeline failed with %r", exc)
            replies = [exc] * len(indexes)
        for index, reply in zip(indexes, replies, strict=True):
            results[index] = reply

    groups, uncovered = group_by_master(client, keys)
    for index, error in uncovered.items():
        results[index] = error
    await asyncio.gather(*(run(group) for group in groups))
    return results


async def get_many(client: Redis | RedisCluster, keys: Sequence[str]) -> list[Any | BaseException]:
    """The value of each key (None if absent) or the exception its read met.

    One server: MGET in batches (one round trip per 1,000). A cluster: GETs pipelined per master (MGET
    may only name keys of one slot, and the keys of a presence hub's channels are spread over all).
    """
    if isinstance(client, RedisCluster):
        return await per_key(client, keys, lambda pipe, i: pipe.get(keys[i]))
    results: list[Any | BaseException] = []
    for start in range(0, len(keys), BATCH):
        batch = list(keys[start : start + BATCH])
        try:
            results.extend(await client.mget(batch))
        except REDIS_ERRORS as exc:
            results.extend([exc] * len(batch))
    return results


async def claim(
    client: Redis | RedisCluster, groups: Sequence[Sequence[tuple[str, str]]], seconds: int
) -> list[list[bool] | BaseException]:
    """Claim every (key, token) for `seconds` unless another token holds its key; for each group, whether
    each of its keys is now the caller's, or the exception the group met.

    A group's keys must share one hash tag (one slot): it is one script, run atomically where the slot
    lives, and it succeeds or fails as a whole. Groups are pipelined per master like `per_key`'s keys, so
    a failing master holds back only its own groups."""

    def add(pipe: Pipeline | ClusterPipeline, i: int) -> object:
        group = groups[i]
        keys = [key for key, _ in group]
        command: tuple[Any, ...] = ("EVAL", CLAIM_SCRIPT, len(group), *keys, seconds, *(t for _, t in group))
        if isinstance(client, RedisCluster):
            # Name the master of the group's slot: else redis-py hashes every key of the script twice to find
            # it (4 of the 9 µs per view the claim cost on a cluster, bench/claim_ab.py). Redis still refuses
            # keys of several slots (CROSSSLOT), and a MOVED reply is still followed: redis-py resends the
            # command routed by its keys.
            return pipe.execute_command(*command, target_nodes=client.get_node_from_key(keys[0]))
        return pipe.execute_command(*command)

    replies = await per_key(client, [group[0][0] for group in groups], add)
    results: list[list[bool] | BaseException] = []
    for group, reply in zip(groups, replies, strict=True):
        if isinstance(reply, BaseException):
            results.append(reply)
        elif isinstance(reply, (str, bytes)) and len(reply) == len(group):
            text = reply.decode() if isinstance(reply, bytes) else reply
            results.append([char == "1" for char in text])
        else:
            results.append(RedisError(f"claim script answered {reply!r:.80} for {len(group)} keys"))
    return results
