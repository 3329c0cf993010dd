"""runtime/cpus.py: the worker count follows the affinity mask and the cgroup CPU quota, not the host's cores."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.cpus import cgroup_cpu_quota, render_processes_per_worker, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_host(tmp_path: Path, own: str, parent: str = "max 100000") -> tuple[Path, Path]:
    """Pure cgroup v2 (cgroup.controllers at the root), this process in /pod/app."""
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory pids\n")
    write(root / "pod" / "cpu.max", parent + "\n")
    write(root / "pod" / "app" / "cpu.max", own + "\n")
    write(tmp_path / "proc-cgroup", "0::/pod/app\n")
    return root, tmp_path / "proc-cgroup"


def test_v2_quota_of_the_own_cgroup(tmp_path):
    root, proc = v2_host(tmp_path, "150000 100000")
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert usable_cpus(root, proc) == 1  # rounded down: a second worker would be throttled


def test_v2_the_tightest_quota_on_the_way_up_counts(tmp_path):
    root, proc = v2_host(tmp_path, "max 100000", parent="50000 100000")
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1  # never fewer than one


def test_no_quota_means_the_affinity_mask(tmp_path):
    root, proc = v2_host(tmp_path, "max 100000")
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == AFFINITY
    # A quota above the affinity mask does not add CPUs.
    root, proc = v2_host(tmp_path / "big", "6400000 100000")
    assert usable_cpus(root, proc) == AFFINITY


def test_container_whose_cgroup_is_the_mount_root(tmp_path):
    # In a container the host's path in /proc/self/cgroup is not under the mount: the mount is its cgroup.
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu\n")
    write(root / "cpu.max", "200000 100000\n")
    write(tmp_path / "proc-cgroup", "0::/machine.slice/libpod-0123.scope\n")
    assert cgroup_cpu_quota(root, tmp_path / "proc-cgroup") == 2.0


def test_v1_and_hybrid_layouts(tmp_path):
    # cgroup v1 cpu controller (as on this CI machine) beside a v2 `unified` hierarchy without the cpu controller.
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "250000\n")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    (root / "unified").mkdir()
    write(tmp_path / "proc-cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    assert cgroup_cpu_quota(root, tmp_path / "proc-cgroup") == 2.5
    assert usable_cpus(root, tmp_path / "proc-cgroup") == min(AFFINITY, 2)
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(root, tmp_path / "proc-cgroup") is None


def test_unreadable_or_odd_files_mean_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "no-proc-file") is None
    root, proc = v2_host(tmp_path, "garbage")
    write(proc, "not a cgroup line\n0::/pod/app\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == AFFINITY


def test_this_machine_answers_something_sane():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_render_processes_do_not_multiply_past_the_cpus():
    assert render_processes_per_worker(2, workers=1, cpus=2) == 2  # one worker keeps the default pool
    assert render_processes_per_worker(2, workers=2, cpus=2) == 1
    assert render_processes_per_worker(2, workers=8, cpus=8) == 1
    assert render_processes_per_worker(2, workers=1, cpus=1) == 1
    assert render_processes_per_worker(4, workers=2, cpus=16) == 4  # the option stays the upper bound
