"""Network namespaces for the rehearsal: a private network that exists only while the rehearsal runs.

Layout (every name starts with PREFIX, so a crashed run's leftovers are found and removed at the next start):

    hgr-net    the "infrastructure host": bridge hgr-br (10.213.0.1/24) with the stores, the third-party
               fakes, nginx, and the rehearsal itself (it enters this namespace, see `enter`)
    hgr-app1…  one namespace per app replica, a veth on the bridge: 10.213.0.11, .12, .13
    hgr-load   the load clients: a point-to-point veth (10.213.1.2 ↔ 10.213.1.1 in hgr-net) and the
               visitors' addresses 10.213.128.0/17 routed to it (a local route on lo: every address
               in the range can be bound, so each visitor has its own source address)

The root namespace is never touched: no address, route or interface is added there, so no rehearsal
traffic can leave the machine. Veths are created directly inside their namespaces (`ip link add …
netns`), and deleting a namespace deletes its interfaces; the processes inside are killed first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "hgr-"
NET = PREFIX + "net"
LOAD = PREFIX + "load"
BRIDGE = PREFIX + "br"
SUBNET = "10.213.0.0/24"
HUB_ADDRESS = "10.213.0.1"  # stores, fakes and nginx listen here
LOAD_LINK = ("10.213.1.1", "10.213.1.2")  # hgr-net side, hgr-load side
VISITORS = "10.213.128.0/17"  # one source address per visitor
CLONE_NEWNET = 0x40000000


def app_namespace(index: int) -> str:
    return f"{PREFIX}app{index}"


def app_address(index: int) -> str:
    return f"10.213.0.{10 + index}"


def visitor_address(n: int) -> str:
    """The n-th visitor address (wraps around the /17: 32,766 usable)."""
    n = n % 32766 + 1
    return f"10.213.{128 + (n >> 8)}.{n & 255}"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def exec_prefix(namespace: str) -> list[str]:
    """Run a command inside `namespace` (as `ip netns exec` does: the network only, same filesystem)."""
    return ["ip", "netns", "exec", namespace]


def namespaces() -> list[str]:
    listed = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def pids_in(namespace: str) -> list[int]:
    result = ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split()]


def kill_namespace_processes(namespace: str, sig: int = signal.SIGKILL, *, spare: Sequence[int] = ()) -> int:
    """Send `sig` to every process in `namespace` except `spare`; returns how many were signalled."""
    count = 0
    for pid in pids_in(namespace):
        if pid in spare or pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            count += 1
    return count


def remove_leftovers(spare: Sequence[int] = ()) -> list[str]:
    """Kill what a previous (crashed) run left in our namespaces and delete them; returns their names."""
    found = namespaces()
    for namespace in found:
        kill_namespace_processes(namespace, spare=spare)
    deadline = time.monotonic() + 10
    for namespace in found:
        while any(pid not in spare and pid != os.getpid() for pid in pids_in(namespace)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ip("netns", "delete", namespace, check=False)
    return found


def enter(namespace: str) -> None:
    """Move this process (its only thread, and so every child it starts later) into `namespace`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({namespace}): {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Network:
    """The rehearsal's namespaces and links; `create()` builds them, `destroy()` removes them."""

    replicas: int

    @property
    def names(self) -> list[str]:
        return [NET, LOAD, *(app_namespace(i) for i in range(1, self.replicas + 1))]

    def create(self) -> None:
        for namespace in self.names:
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", NET, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", NET, "addr", "add", f"{HUB_ADDRESS}/24", "dev", BRIDGE)
        ip("-n", NET, "link", "set", BRIDGE, "up")
        for index in range(1, self.replicas + 1):
            namespace, hub_end = app_namespace(index), f"{PREFIX}v{index}"
            ip("link", "add", hub_end, "netns", NET, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("-n", NET, "link", "set", hub_end, "master", BRIDGE, "up")
            ip("-n", namespace, "addr", "add", f"{app_address(index)}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
        hub_end = f"{PREFIX}vload"
        ip("link", "add", hub_end, "netns", NET, "type", "veth", "peer", "name", "eth0", "netns", LOAD)
        ip("-n", NET, "addr", "add", f"{LOAD_LINK[0]}/30", "dev", hub_end)
        ip("-n", NET, "link", "set", hub_end, "up")
        ip("-n", LOAD, "addr", "add", f"{LOAD_LINK[1]}/30", "dev", "eth0")
        ip("-n", LOAD, "link", "set", "eth0", "up")
        ip("-n", LOAD, "route", "add", SUBNET, "via", LOAD_LINK[0])
        ip("-n", LOAD, "route", "add", "local", VISITORS, "dev", "lo")
        ip("-n", NET, "route", "add", VISITORS, "via", LOAD_LINK[1])

    def destroy(self, spare: Sequence[int] = ()) -> None:
        remove_leftovers(spare)
