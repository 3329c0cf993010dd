"""py-spy helpers for the profile scripts: attach to a running server, fold the samples into top-frame tables.

Record with py-spy itself (ptrace by pid; this machine allows it as root), stopping it with Ctrl-C:
`py-spy record --pid PID --rate 250 --format raw --output prof.folded`. `--format raw` writes folded stacks ("frame;frame;frame count"), which `top_frames` turns
into the short self/inclusive tables quoted in docs/perf.md (py-spy's own `--format flamegraph` draws SVGs).
"""

from __future__ import annotations

import collections
import gzip
import re
import sys
from pathlib import Path

FRAME = re.compile(r"\A(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>[0-9]+))?\)\Z")


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: tables group by function, not by line."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{match['func']} ({short})"


def top_frames(folded: Path, limit: int = 15) -> dict:
    """Self and inclusive sample shares per function of the main thread, from a py-spy raw (folded) file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    text = gzip.decompress(folded.read_bytes()).decode() if folded.suffix == ".gz" else folded.read_text()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        # skip py-spy's leading "process/thread" frames
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or frames[0].startswith("Thread._bootstrap"):
            continue  # helper threads (executor managers, queue feeders) idle in waits py-spy counts as busy
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self": [(f, pct(c)) for f, c in own.most_common(limit)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(limit)],
    }


def print_table(title: str, table: dict) -> None:
    print(f"\n## {title} ({table['samples']} samples)")
    print(f"{'self %':>7}  function")
    for name, share in table["self"]:
        print(f"{share:>7}  {name}")
    print(f"{'incl %':>7}  function")
    for name, share in table["inclusive"]:
        print(f"{share:>7}  {name}")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print_table(path, top_frames(Path(path), 25))
