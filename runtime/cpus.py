"""How many CPUs this process may use: its affinity mask, capped by the cgroup CPU quota.

`os.cpu_count()` counts the host's cores. A container started with `--cpus 2` on a 32-core host still sees
32 there, and `--processes 0` forked 32 workers (each with its OG render processes) to share two CPUs of
time. The affinity mask (`--cpuset-cpus`, taskset) and the CFS quota (`--cpus`, Kubernetes' CPU limit)
are what the scheduler actually grants:

- cgroup v2: `cpu.max` is `"<quota> <period>"` or `"max <period>"`;
- cgroup v1 (and the hybrid layout of some hosts): `cpu.cfs_quota_us` (-1 for none) and `cpu.cfs_period_us`
  in the `cpu` controller's hierarchy.

The tightest quota on the way from this process's cgroup up to the mount's root counts (a pod's limit sits
on a parent). Inside a container the cgroup named in /proc/self/cgroup may not exist under the mount (the
mount *is* the container's cgroup); then the mount's root is read.

A quota of 1.5 CPUs gives one worker, not two: a second worker would be throttled mid-request, which shows
as latency, while the spare half CPU still serves the OG render processes and the kernel's network work.
Never fewer than one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def usable_cpus(cgroup_root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> int:
    """Whole CPUs this process may keep busy (at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def render_processes_per_worker(configured: int, workers: int, cpus: int) -> int:
    """OG render processes per worker: at most `--og-render-processes`, and all workers' together no more than
    the usable CPUs, though every worker keeps one (renders are rare: a card is drawn once, then cached)."""
    return max(1, min(configured, cpus // max(1, workers)))


def cgroup_cpu_quota(cgroup_root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs (e.g. 1.5) of this process's cgroup and its parents, or None when unlimited."""
    root = Path(cgroup_root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy, at the root (pure v2) or under unified/ (hybrid)
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            quotas += [_v2_quota(directory) for directory in _lineage(mount, path)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            mount = root / controllers
            if not mount.is_dir():
                mount = root / "cpu"
            quotas += [_v1_quota(directory) for directory in _lineage(mount, path)]
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def _lineage(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory under `mount` and its parents up to the mount, or just the mount when the path
    is not there (a container whose cgroup is mounted as the root)."""
    if not mount.is_dir():
        return []
    directory = mount / path.lstrip("/")
    if not directory.is_dir() or mount.resolve() not in (directory.resolve(), *directory.resolve().parents):
        return [mount]
    chain = [directory]
    while chain[-1].resolve() != mount.resolve():
        chain.append(chain[-1].parent)
    return chain


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
