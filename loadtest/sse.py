"""Server-Sent Events parsing and the load test's publish stamp. Pure: no locust, no gevent.

Fan-out latency is publish -> receipt. The snapshot's own `updatedAt` is the
writer's clock but only to the millisecond, so the load test's publisher also
writes its send time, to the microsecond, into `activity.details` of a
snapshot whose activity is named LOADTEST_ACTIVITY (a field the writer
contract allows, so the published snapshot is one the bot could have sent).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

LOADTEST_ACTIVITY = "hepgg-loadtest"
_STAMP = re.compile(r"\Asent=([0-9]+\.[0-9]+) seq=([0-9]+)\Z")


def stamped_snapshot(sent: float, seq: int) -> dict:
    return {
        "status": "online",
        "activity": {
            "name": LOADTEST_ACTIVITY,
            "type": 0,
            "details": f"sent={sent:.6f} seq={seq}",
            "startedAt": int(sent * 1000),
        },
    }


def sent_time(snapshot: object) -> float | None:
    """The publisher's send time (epoch seconds) if this snapshot came from the load test."""
    if not isinstance(snapshot, dict):
        return None
    activity = snapshot.get("activity")
    if not isinstance(activity, dict) or activity.get("name") != LOADTEST_ACTIVITY:
        return None
    match = _STAMP.match(str(activity.get("details", "")))
    return float(match.group(1)) if match else None


def updated_at(snapshot: object) -> float | None:
    """`updatedAt` as epoch seconds (millisecond resolution), for snapshots someone else wrote."""
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("updatedAt"), str):
        return None
    try:
        return datetime.fromisoformat(snapshot["updatedAt"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Message:
    event: str
    data: str
    retry: int | None = None

    def json(self):
        return json.loads(self.data)


class SseParser:
    """Incremental parser: feed bytes as they arrive, get complete messages back.

    Comments (`: ping`) produce nothing; a block with only `retry:` (the
    server's shedding answer) is returned with event "retry".
    """

    def __init__(self):
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Message]:
        self._buffer += chunk
        messages = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return messages
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            message = self._parse_block(block.decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)

    @staticmethod
    def _parse_block(block: str) -> Message | None:
        event, data, retry = "message", [], None
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "retry" and value.isdigit():
                retry = int(value)
        if data:
            return Message(event, "\n".join(data), retry)
        if retry is not None:
            return Message("retry", "", retry)
        return None
