"""Fixtures over tests/redis_topologies.py: a shared Redis Cluster, and private ones a test may break.

- `redis_cluster` (session): 3 masters + 3 replicas started once; tests must not fault it. Use
  `empty_redis_cluster` to get it flushed.
- `make_redis_cluster` (function): a factory for a private cluster a test may kill masters of; each is
  stopped at teardown, whatever state it is in.
- `redis_sentinel` (function): a private primary + replica + 3 sentinels.
- `redis_tls` (function): one redis-server speaking TLS only, with a throw-away CA (`.tls_ca`).

Each lives under pytest's tmp dir (logs stay there for a failing run) and needs Debian's redis-server,
redis-tools and redis-sentinel (`scripts/install.sh --test`).
"""

from __future__ import annotations

import pytest
from redis_topologies import RedisClusterTopology, SentinelTopology, tls_server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    cluster = RedisClusterTopology(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def empty_redis_cluster(redis_cluster):
    redis_cluster.flushall()
    return redis_cluster


@pytest.fixture
def make_redis_cluster(tmp_path):
    clusters: list[RedisClusterTopology] = []

    def factory(**kwargs) -> RedisClusterTopology:
        cluster = RedisClusterTopology(tmp_path / f"redis-cluster-{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield factory
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path):
    topology = SentinelTopology(tmp_path / "redis-sentinel")
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
def redis_tls(tmp_path):
    server = tls_server(tmp_path / "redis-tls")
    try:
        server.start()
        yield server
    finally:
        server.stop()
