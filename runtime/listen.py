"""The server's sockets: bound at start, listening only once a worker is ready, closed everywhere on stop.

A socket that listens is accepted into by the kernel whether or not any process will ever serve it. In
front of the replicas, nginx (no active health checks) sends a request to any replica whose connect
succeeds and waits for it (`proxy_read_timeout`), so:

- `serve` binds (the address is taken, the port known) but does not listen; each worker calls
  `listen` once its services are built, and only then does a connect succeed. Before that it is
  refused and nginx tries the next replica at once. (The rehearsal, deploy/rehearse, measured what
  listening at bind time cost: a replica accepted connections 10-33 s before it was ready on a
  loaded 2-core machine; nginx queued requests in its backlog for that long, 45 contact sends got
  504 after 30 s, queued renders were replayed after the proxy had given up, page p99 reached 37 s.)
- on SIGTERM the supervisor closes its own copy as the workers close theirs, so a stopping replica
  refuses connects at once instead of queueing them until its drain ends.
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 4096  # with net.core.somaxconn ≥ this (the README's kernel settings)


def bind(port: int, address: str | None) -> list[socket.socket]:
    """Non-blocking sockets bound to `address` (all interfaces if empty) and `port`, not yet listening.

    As tornado.netutil.bind_sockets, less the listen: one socket per address family the name resolves
    to (IPv6 ones IPv6-only), SO_REUSEADDR and SO_REUSEPORT set, port 0 picking one port for all.
    """
    sockets: list[socket.socket] = []
    bound_port: int | None = None
    flags = socket.AI_PASSIVE
    seen = set()
    for info in sorted(socket.getaddrinfo(address or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)):
        family, kind, proto, _name, sockaddr = info
        if info in seen:
            continue
        seen.add(info)
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                continue
            raise
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockaddr[1] == 0 and bound_port is not None:
                sockaddr = (sockaddr[0], bound_port, *sockaddr[2:])
            sock.setblocking(False)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                continue  # IPv6 partly disabled (containers): serve IPv4
            for other in sockets:
                other.close()
            raise
        bound_port = sock.getsockname()[1]
        sockets.append(sock)
    if not sockets:
        raise OSError(errno.EADDRNOTAVAIL, f"nothing to bind for {address!r}:{port}")
    return sockets


def start_listening(sockets: list[socket.socket]) -> None:
    """Let the kernel accept connections (again, after a worker restart: listen on a listening socket is fine)."""
    for sock in sockets:
        sock.listen(BACKLOG)
