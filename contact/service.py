"""Process-wide contact service: built once per worker by runtime/services.py."""

from __future__ import annotations


async def start(services) -> None:
    """Build this feature's long-lived objects, attach them to `services`, register on_close/on_drain."""
