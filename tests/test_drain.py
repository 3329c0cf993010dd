"""SIGTERM answers the requests in progress before closing connections, within --shutdown-grace.

The worker's own shutdown (runtime/shutdown.shutdown_worker, what SIGTERM runs) against a server built as
`serve` builds one, through real sockets. Behind nginx a contact POST cut by the shutdown is a 502 the
visitor sees (nginx retries no POST): the rehearsal (deploy/rehearse) had 1 in its short run, 29 in the full
one, when a worker closed every connection as soon as its streams were drained.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pymongo import AsyncMongoClient

from runtime.shutdown import ShutdownClock, shutdown_worker

from conftest import base_document, wait_until
from contact_fakes import contact_settings

SMS = json.dumps({"message": "Sent just before a rolling restart", "turnstileToken": "good-token"})


class Connection:
    """One keep-alive HTTP/1.1 connection, read by hand: what the server says and when it closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, method: str, path: str, *, body: str = "", ip: str = "198.51.100.7") -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: alice.hep.gg\r\nX-Forwarded-For: {ip}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(f"{head}\r\n{body}".encode())

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(head[0].split()[1]), headers, body

    async def closed_by_server(self) -> float:
        """Waits for the server's FIN; returns when it came (monotonic)."""
        assert await self.reader.read() == b""
        return time.monotonic()

    async def exchange(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send(method, path)
        return await self.response()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server(make_server, fakes):
    server = await make_server(**contact_settings(fakes, delivery_timeout=10.0))
    await server.load(base_document())
    return server


def shutdown(server, grace: float) -> asyncio.Task[None]:
    """What SIGTERM starts in a worker (runtime/serve.Worker.run), with `grace` seconds."""
    clock = ShutdownClock(grace)
    clock.start()
    budget = clock.budget
    return asyncio.create_task(shutdown_worker(clock, server.http_server, server.services.lifecycle, budget.worker))


async def sms_credits(server) -> int:
    """Read with a client of its own: the shutdown closed the server's."""
    client = AsyncMongoClient(server.config.mongo_uri)
    try:
        return (await client[server.config.mongo_db].users.find_one({"_id": "u1"}))["sms_credits"]
    finally:
        await client.close()


async def test_a_contact_send_in_progress_at_sigterm_is_answered_and_keep_alive_clients_are_sent_away(server, fakes):
    fakes.sms.delay = 1.5  # the SMS API is slow: the send is in delivery when SIGTERM comes
    sender, kept, idle = [await Connection.open(server.port) for _ in range(3)]
    for connection in (kept, idle):  # kept alive, as nginx's upstream pool keeps them
        status, headers, _ = await connection.exchange("GET", "/healthz")
        assert (status, headers.get("connection")) == (200, None)
    sender.send("POST", "/api/v1/profiles/p1/contact/sms", body=SMS, ip="198.51.100.8")
    await wait_until(lambda: fakes.sms.requests)
    started = time.monotonic()
    stopping = shutdown(server, grace=10.0)
    idle_closed = asyncio.create_task(idle.closed_by_server())

    await wait_until(lambda: server.services.lifecycle.draining)
    with pytest.raises(ConnectionRefusedError):  # not accepting any more
        await Connection.open(server.port)
    # A request on a kept-alive connection during the drain is answered, and tells the client to go.
    status, headers, _ = await kept.exchange("GET", "/")
    assert (status, headers["connection"]) == (200, "close")
    await kept.closed_by_server()
    assert not idle_closed.done()  # an idle connection stays while a request is in progress

    status, headers, body = await sender.response()
    answered = time.monotonic()
    assert (status, headers["connection"]) == (200, "close"), body
    assert json.loads(body) == {"ok": True, "data": {"queued": True}}
    await sender.closed_by_server()
    assert await idle_closed >= answered  # closed once nothing was in progress any more
    await stopping
    assert time.monotonic() - started < 10.0
    assert len(fakes.sms.requests) == 1 and await sms_credits(server) == 4  # delivered once, paid once
    for connection in (sender, kept, idle):
        connection.close()


async def test_a_request_still_running_at_its_deadline_is_cut_within_the_grace(server, fakes):
    fakes.sms.delay = 8.0  # longer than the whole grace
    sender = await Connection.open(server.port)
    sender.send("POST", "/api/v1/profiles/p1/contact/sms", body=SMS, ip="198.51.100.9")
    await wait_until(lambda: fakes.sms.requests)
    started = time.monotonic()
    grace = 2.0
    await asyncio.wait_for(shutdown(server, grace), grace + 1)
    assert time.monotonic() - started <= grace
    with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
        await sender.response()  # cut: the grace bounds SIGTERM whatever hangs
    sender.close()
