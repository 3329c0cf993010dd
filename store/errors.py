"""How a store error is named in logs and CLI messages."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """`ClassName: text`: the class alone hides what matters (MOVED 7295 …, CROSSSLOT, NOAUTH, which host)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
