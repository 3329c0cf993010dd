"""What durable embedded SecantusDB costs: the same writes with and without `--sync-on-commit`.

    bench/run --only durability [--quick]

`serve` runs its embedded SecantusDB with `--sync-on-commit` (runtime/embedded.py), so a `kill -9` loses
no acknowledged credit, view or play. Two SecantusDB processes, one each way, on the same core (CPU 0),
get the writes our server makes, in alternating rounds so the machine's load falls on both alike:
- a credit debit: one `update_one` with `$inc`, acknowledged before the contact form's delivery
  (contact/service.py), one at a time as each send makes it;
- a stats flush: one `insert_many` of 100 view events plus one `bulk_write` of their counter updates,
  as the stats writer sends once per `--view-flush-interval` (store/stats.py).
"""

from __future__ import annotations

import statistics
import time

from pymongo import MongoClient, UpdateOne

from bench.harness import PYTHON, SERVER_CPU, Stack, free_port, wait_port
from bench.results import BenchResult, Figure
from runtime.embedded import SECANTUS_DURABLE


def start(stack: Stack, name: str, flags: tuple[str, ...]) -> MongoClient:
    port = free_port()
    directory = stack.tmp / name
    directory.mkdir()
    argv = [PYTHON, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--storage-path", str(directory / "wt"), "--log-level", "WARNING", *flags]
    proc = stack.spawn(name, argv, cpu=SERVER_CPU)
    wait_port(port, proc, 60, name)
    return MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")


def debits(client: MongoClient, count: int) -> float:
    users = client.bench.users
    users.replace_one({"_id": "u1"}, {"_id": "u1", "sms_credits": 10**9}, upsert=True)
    started = time.perf_counter()
    for _ in range(count):
        users.update_one({"_id": "u1", "sms_credits": {"$gt": 0}}, {"$inc": {"sms_credits": -1}})
    return count / (time.perf_counter() - started)


def flushes(client: MongoClient, count: int, round_: int) -> float:
    events, counters = client.bench.events, client.bench.counters
    started = time.perf_counter()
    for batch in range(count):
        base = (round_ * count + batch) * 100
        events.insert_many([{"_id": base + i, "kind": "view", "profile": f"p{i % 10}"} for i in range(100)])
        counters.bulk_write(
            [UpdateOne({"_id": f"p{i}"}, {"$inc": {"views": 10}}, upsert=True) for i in range(10)], ordered=False
        )
    return count / (time.perf_counter() - started)


def run(stack: Stack, quick: bool) -> BenchResult:
    result = BenchResult("durability")
    durable = start(stack, "secantus-sync", SECANTUS_DURABLE)
    plain = start(stack, "secantus-nosync", ())
    rounds, n_debits, n_flushes = (3, 200, 20) if quick else (5, 1000, 100)
    measured: dict[str, dict[str, list[float]]] = {
        "debit": {"sync": [], "nosync": []},
        "flush": {"sync": [], "nosync": []},
    }
    for round_ in range(rounds):
        for name, client in (
            (("sync", durable), ("nosync", plain)) if round_ % 2 == 0 else (("nosync", plain), ("sync", durable))
        ):
            measured["debit"][name].append(debits(client, n_debits))
            measured["flush"][name].append(flushes(client, n_flushes, round_))
    for kind, label, unit in (
        ("debit", "credit debits, one at a time", "writes/s"),
        ("flush", "stats flushes (100 views)", "flushes/s"),
    ):
        result.figures.append(
            Figure(
                "durability",
                label,
                f"median of {rounds} rounds",
                unit,
                statistics.median(measured[kind]["sync"]),
                statistics.median(measured[kind]["nosync"]),
                "without --sync-on-commit",
            )
        )
    durable.close()
    plain.close()
    return result


if __name__ == "__main__":  # runnable alone: python -m bench.durability_bench [--quick]
    import sys

    from bench.suite import main

    sys.exit(main(["--only", "durability", *sys.argv[1:]]))
