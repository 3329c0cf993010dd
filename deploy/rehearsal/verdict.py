"""What the rehearsal asserts, computed from what each side counted.

Inputs are plain data: the load processes' records (deploy/rehearsal/load_*.py), the publisher's
acknowledged writes, nginx's access log (which replica answered each request, joined to the load's records by
the visitor's address and port), `hepgg_server.py stats`, the owners' balances in MongoDB and the fakes'
delivery counts. Every check returns its numbers, whether it passed or not.

A `kill -9` loses what the killed replica held in memory and had not written yet: views and plays are
batched for `--view-flush-interval` (1 s) before they are written. Those checks therefore allow, and report,
a loss bounded by what that replica answered in the last `flush window` before the kill (joined from
nginx's log), and nothing else; everything answered by the other replicas, and everything around the
rolling restart and the Redis failover, must be exact.
"""

from __future__ import annotations

import collections
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.rehearsal.netns import visitor_address
from music.plays import PLAY_BYTES
from store.stats import DEDUP_SECONDS  # one view per profile and visitor, one play per visitor and track, per 30 s

_LOG = re.compile(  # used with .match: anchored at the line's start
    r"(?P<msec>[\d.]+) (?P<addr>\S+) (?P<port>\d+) (?P<method>\S+) (?P<status>\d+) "
    r"\[(?P<upstreams>[^\]]*)\] \[(?P<upstream_status>[^\]]*)\] (?P<time>[\d.]+) (?P<bytes>\d+) (?P<uri>\S+)"
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Check:
    name: str
    ok: bool
    numbers: dict[str, Any]


@dataclass
class Nginx:
    """nginx's access log, by client address and port: which upstream(s) a request went to."""

    entries: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, wall_offset: float) -> Nginx:
        """`wall_offset`: time.time() - time.monotonic(), to put nginx's wall-clock stamps on the load's clock."""
        log = cls()
        if not path.exists():
            return log
        for line in path.read_text(errors="replace").splitlines():
            match = _LOG.match(line)
            if match is None:
                continue
            upstreams = [u.strip() for u in match["upstreams"].split(",") if u.strip() and u.strip() != "-"]
            entry = {
                "t_end": float(match["msec"]) - wall_offset,
                "status": int(match["status"]),
                "upstreams": upstreams,
                "upstream_status": match["upstream_status"],
                "method": match["method"],
                "uri": match["uri"],
            }
            log.entries.setdefault((match["addr"], int(match["port"])), []).append(entry)
        return log

    def find(self, address: str, port: int, t_start: float) -> dict[str, Any] | None:
        """The entry of the request started at `t_start` from address:port (the first that ended after it)."""
        candidates = [e for e in self.entries.get((address, port), []) if e["t_end"] >= t_start - 1.0]
        return min(candidates, key=lambda e: e["t_end"]) if candidates else None

    def answered_by(self, address: str, port: int, t_start: float) -> str | None:
        entry = self.find(address, port, t_start)
        return entry["upstreams"][-1].split(":")[0] if entry and entry["upstreams"] else None

    def upstream_statuses(self) -> dict[str, collections.Counter[str]]:
        """Per upstream attempt: its status ("502" for a failed connect shows as `502` or `-`)."""
        result: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for entries in self.entries.values():
            for entry in entries:
                statuses = [s.strip() for s in entry["upstream_status"].split(",")]
                for upstream, status in zip(entry["upstreams"], statuses, strict=False):
                    result[upstream][status] += 1
        return result


@dataclass
class Inputs:
    results: dict[str, dict[str, Any]]  # load process name -> its results
    nginx: Nginx
    stats: dict[str, dict[str, Any]]  # profile id -> `hepgg_server.py stats` line
    credits_left: dict[int, int]  # owner index -> SMS + email credits left
    credits_start: int  # per owner, SMS + email
    deliveries: dict[str, dict[int, int]]  # channel -> owner index -> delivered
    events: list[dict[str, Any]]
    windows: dict[str, tuple[float, float]]  # steady, restart, kill, failover, ...
    killed: tuple[str, float] | None  # (address, time) of the kill -9
    flush_window: float  # seconds of views/plays a replica may hold in memory
    sse_reconnect_limit: float = 10.0
    p99_ratio_limit: float | None = 3.0  # None: reported, not asserted
    stopped_publishing: float = 0.0  # when the publisher stopped (convergence is judged after it)
    profile_prefix: str = "rh-"
    play_window: float = DEDUP_SECONDS  # seconds within which one visitor's plays of one track count once
    holds_pending: dict[int, int] = field(default_factory=dict)  # owner index -> credit holds not yet settled


SAVED = "verdict-inputs.json"


def save_inputs(inputs: Inputs, workdir: Path, wall_offset: float) -> None:
    """What `load_inputs` needs besides the load's files and nginx's log, so a kept run can be re-judged."""
    data = {k: v for k, v in inputs.__dict__.items() if k not in ("results", "nginx")}
    data["deliveries"] = {ch: {str(o): n for o, n in d.items()} for ch, d in inputs.deliveries.items()}
    data["credits_left"] = {str(o): n for o, n in inputs.credits_left.items()}
    data["holds_pending"] = {str(o): n for o, n in inputs.holds_pending.items()}
    data["wall_offset"] = wall_offset
    (workdir / SAVED).write_text(json.dumps(data))


def load_inputs(workdir: Path) -> Inputs:
    data = json.loads((workdir / SAVED).read_text())
    wall_offset = data.pop("wall_offset")
    results = {p.stem: json.loads(p.read_text()) for p in (workdir / "load").glob("*.json")}
    data["deliveries"] = {ch: {int(o): n for o, n in d.items()} for ch, d in data["deliveries"].items()}
    data["credits_left"] = {int(o): n for o, n in data["credits_left"].items()}
    data["holds_pending"] = {int(o): n for o, n in data.get("holds_pending", {}).items()}
    data["windows"] = {k: tuple(v) for k, v in data["windows"].items()}
    data["killed"] = tuple(data["killed"]) if data["killed"] else None
    return Inputs(results=results, nginx=Nginx.read(workdir / "nginx" / "access.log", wall_offset), **data)


class Verdict:
    def __init__(self, inputs: Inputs):
        self.i = inputs
        self.checks: list[Check] = []
        self.figures: dict[str, Any] = {}

    def check(self, name: str, ok: bool, **numbers: Any) -> None:
        self.checks.append(Check(name, bool(ok), numbers))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def run(self) -> Verdict:
        self.statuses()
        self.sse()
        self.views()
        self.plays()
        self.credits()
        self.latency()
        return self

    # ------------------------------------------------------------------ helpers

    def _http(self) -> dict[str, Any]:
        return self.i.results.get("http", {"pages": [], "contacts": []})

    def _killed_recently(self, address: str | None, t_answer: float) -> bool:
        if self.i.killed is None or address is None:
            return False
        killed_address, t_kill = self.i.killed
        return address == killed_address and t_kill - self.i.flush_window <= t_answer <= t_kill

    def _post_cut_by_kill(self, t_start: float, t_answer: float, status: int, address: str, port: int) -> bool:
        """A POST in flight on the replica at its kill -9, answered 502 by nginx: no server can answer it, and
        nginx does not send a POST to another replica (it might be delivered twice)."""
        if self.i.killed is None or status != 502 or not t_start <= self.i.killed[1] <= t_answer:
            return False
        entry = self.i.nginx.find(address, port, t_start)
        return (
            entry is not None
            and entry["method"] == "POST"
            and bool(entry["upstreams"])
            and entry["upstreams"][-1].split(":")[0] == self.i.killed[0]
        )

    # ------------------------------------------------------------------ statuses

    def statuses(self) -> None:
        http = self._http()
        by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        bad: list[dict[str, Any]] = []

        cut_by_kill: collections.Counter[str] = collections.Counter()

        def tally(kind: str, status: int, retry_after: bool, t: float, error: str = "") -> None:
            label = str(status) if status else "no answer"
            by_kind[kind][label] += 1
            documented = status == 503 and retry_after
            if status == 0 or (status >= 500 and not documented):
                bad.append({"kind": kind, "status": status, "t": t, "error": error})
            if documented:
                by_kind[kind]["503 with Retry-After"] += 1

        for r in http["pages"]:
            tally("page", r[2], r[3], r[0], r[7])
        for r in http["contacts"]:
            if self._post_cut_by_kill(r[0], r[0] + r[1], r[2], visitor_address(r[5]), r[4]):
                cut_by_kill[f"contact-{r[7]}"] += 1  # nginx retries no POST: a kill -9 cuts its sends in flight
                continue
            tally(f"contact-{r[7]}", r[2], r[3], r[0], r[8])
        for r in self.i.results.get("music", {}).get("plays", []):
            tally("music", r[2], r[3], r[0], r[10] if not r[2] else "")
        for result in self.i.results.values():
            if result.get("kind") != "sse":
                continue
            for listener in result["listeners"]:
                for conn in listener["conns"]:
                    if conn[2] is not None:
                        tally("sse", conn[2], "retry-after" in (conn[8] or ""), conn[0])
        self.figures["statuses"] = {kind: dict(counter) for kind, counter in sorted(by_kind.items())}
        self.figures["nginx_upstream_attempts"] = {
            upstream: dict(counter) for upstream, counter in sorted(self.i.nginx.upstream_statuses().items())
        }
        first = sorted(bad, key=lambda b: b["t"])[:10]
        self.figures["posts_cut_by_kill"] = dict(cut_by_kill)
        self.check(
            "no 5xx except 503 with Retry-After, and every request answered",
            not bad,
            undocumented=len(bad),
            by_kind=dict(collections.Counter(f"{b['kind']} {b['status'] or 'no answer'}" for b in bad)),
            first=first,
            posts_in_flight_at_the_kill=dict(cut_by_kill),
        )
        music = self.i.results.get("music", {}).get("plays", [])
        broken = [r for r in music if r[2] == 200 and not r[6]]
        self.figures["music"] = {
            "tracks_started": sum(1 for r in music if r[2] == 200),
            "tracks_complete": sum(1 for r in music if r[6]),
            "tracks_cut": len(broken),
            "cut_reasons": dict(collections.Counter((r[10] or "?").split(" after")[0] for r in broken)),
        }

    # ------------------------------------------------------------------ SSE

    def sse(self) -> None:
        publisher = self.i.results.get("publisher", {})
        acks: dict[str, list[list[float]]] = publisher.get("acks", {})
        final: dict[str, int] = publisher.get("final", {})
        gaps: list[float] = []
        late: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        regressions = 0
        reconnects = 0
        never = 0
        behind = 0
        not_streaming_at_end = 0
        listeners = 0
        ends: collections.Counter[str] = collections.Counter()
        # A write reaches a hub over pub/sub within the fan-out latency; one acknowledged less than that before
        # a reconnect may arrive as its second event instead of its first (measured: 1-69 ms before, p99 fan-out
        # ~0.9 s on a loaded machine). The tolerance is the run's own fan-out p99.
        fanout_p99 = [r["fanout_ms"]["p99"] for r in self.i.results.values() if r.get("kind") == "sse"]
        lag = max((p for p in fanout_p99 if p is not None), default=0.0) / 1000
        in_flight = 0
        stop_time = min((r["stopped"] for r in self.i.results.values() if r.get("kind") == "sse"), default=math.inf)

        def latest_before(user: str, t: float) -> int:
            best = 0
            for seq, _sent, acked in acks.get(user, []):
                if acked <= t:
                    best = max(best, int(seq))
            return best

        for result in self.i.results.values():
            if result.get("kind") != "sse":
                continue
            for listener in result["listeners"]:
                listeners += 1
                user = listener["path"].split("/")[-2]
                conns = listener["conns"]
                regressions += sum(c[9] for c in conns)
                for k, conn in enumerate(conns):
                    how = conn[8] or "open"
                    ends[how.split(":")[0]] += 1
                    if how == "stopped" or conn[7] is None or conn[2] != 200:
                        continue  # only a stream that was streaming can be lost; failed attempts are in the gap
                    # Lost at conn[7]: the next connection that delivers an event is the reconnect.
                    lost_at = conn[7]
                    following = next((c for c in conns[k + 1 :] if c[3] is not None), None)
                    if following is None:
                        if stop_time - lost_at > self.i.sse_reconnect_limit:
                            never += 1
                            late.append({"user": user, "lost_at": lost_at, "gap": None})
                        continue
                    reconnects += 1
                    gap = following[3] - lost_at
                    gaps.append(gap)
                    if gap > self.i.sse_reconnect_limit:
                        late.append({"user": user, "lost_at": round(lost_at, 2), "gap": round(gap, 2), "how": how})
                    if following[4] < latest_before(user, following[0]):
                        in_flight += 1  # written just before the request: it may not have reached the hub yet
                        wanted = latest_before(user, following[0] - lag)
                        if following[4] < wanted:
                            stale.append({"user": user, "t": following[0], "got": following[4], "latest": wanted})
                last = conns[-1] if conns else None
                if last is None or last[8] != "stopped" or last[3] is None:
                    not_streaming_at_end += 1
                elif listener["seen"] != final.get(user):
                    behind += 1
        first_events = [
            c[3] - c[0]
            for r in self.i.results.values()
            if r.get("kind") == "sse"
            for li in r["listeners"]
            for c in li["conns"]
            if c[3] is not None
        ]
        self.figures["sse"] = {
            "listeners": listeners,
            "reconnects": reconnects,
            "reconnect_gap_s": {
                "p50": _round(percentile(gaps, 0.5)),
                "p99": _round(percentile(gaps, 0.99)),
                "max": _round(max(gaps, default=None)),
            },
            "connect_to_first_event_s": {
                "p50": _round(percentile(first_events, 0.5)),
                "p99": _round(percentile(first_events, 0.99)),
            },
            "stream_ends": dict(ends),
            "fanout_ms": {n: r.get("fanout_ms") for n, r in self.i.results.items() if r.get("kind") == "sse"},
            "publisher": {
                "writes": sum(len(a) for a in acks.values()),
                "failed_attempts": publisher.get("failures"),
                "longest_outage_s": publisher.get("longest_outage"),
            },
        }
        self.check(
            f"every SSE listener reconnects within {self.i.sse_reconnect_limit:.0f} s",
            not late and reconnects > 0,
            reconnects=reconnects,
            late=len(late),
            never_reconnected=never,
            max_gap_s=_round(max(gaps, default=None)),
            first_late=late[:5],
        )
        self.check(
            "the first event after each reconnect is the latest presence",
            not stale and reconnects > 0,
            reconnects=reconnects,
            stale=len(stale),
            newer_write_still_in_flight=in_flight,
            fanout_p99_tolerance_s=round(lag, 3),
            first_stale=stale[:5],
        )
        self.check(
            "no listener ever sees an older presence after a newer one, and all end on the last one",
            regressions == 0 and behind == 0 and not_streaming_at_end == 0,
            regressions=regressions,
            behind_at_end=behind,
            not_streaming_at_end=not_streaming_at_end,
        )

    # ------------------------------------------------------------------ views and plays

    def _expected_by_profile(
        self, records: list[tuple[float, float, int, str, int, int, Any]], window: float
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int], int]:
        """What the server should have counted, from (t_start, t_answer, status, address, port, profile, key)
        records: per profile the lowest and highest count the rules allow, the counts at risk from the kill,
        and how many answers could not be attributed to a replica.

        A key (visitor and profile, or visitor and track) counts once per `window` seconds (0: every answer
        counts). The server de-duplicates when it flushes, up to `flush_window` after the render, so an
        answer between window - flush_window and window + flush_window after the counted one may or may
        not count: it widens the range. A count is at risk when every answer that could carry it came
        from the killed replica within its last flush window."""
        answered: dict[Any, list[tuple[float, str | None]]] = collections.defaultdict(list)
        unattributed = 0
        for t_start, t_answer, status, address, port, profile, key in records:
            if status != 200:
                continue
            upstream = self.i.nginx.answered_by(address, port, t_start)
            unattributed += upstream is None
            answered[(profile, key)].append((t_answer, upstream))
        low: collections.Counter[str] = collections.Counter()
        high: collections.Counter[str] = collections.Counter()
        at_risk: collections.Counter[str] = collections.Counter()
        slack = self.i.flush_window
        for (profile, _key), answers in answered.items():
            name = f"{self.i.profile_prefix}{profile}"
            answers.sort(key=lambda answer: answer[0])
            counted_at: float | None = None
            carriers: list[bool] = []  # per counted window: is each answer in it at risk?
            for t, upstream in answers:
                risky = self._killed_recently(upstream, t)
                since = math.inf if counted_at is None else t - counted_at
                if window <= 0 or since >= window + slack:
                    low[name] += 1
                    high[name] += 1
                    if carriers and all(carriers):
                        at_risk[name] += 1
                    counted_at, carriers = t, [risky]
                elif since <= window - slack:
                    carriers.append(risky)
                else:
                    high[name] += 1
                    carriers.append(risky)
            if carriers and all(carriers):
                at_risk[name] += 1
        return dict(low), dict(high), dict(at_risk), unattributed

    def _counted(
        self,
        name: str,
        field_name: str,
        expected: tuple[dict[str, int], dict[str, int], dict[str, int], int],
    ) -> None:
        low, high, at_risk, unattributed = expected
        stored = {profile: int(s.get(field_name, 0)) for profile, s in self.i.stats.items()}
        total_low, total_high, total_risk = sum(low.values()), sum(high.values()), sum(at_risk.values())
        total_stored = sum(stored.values())
        wrong = {
            profile: {
                "stored": stored.get(profile, 0),
                "expected": [low.get(profile, 0), high.get(profile, 0)],
                "at_risk": at_risk.get(profile, 0),
            }
            for profile in sorted(set(stored) | set(high))
            if not low.get(profile, 0) - at_risk.get(profile, 0) <= stored.get(profile, 0) <= high.get(profile, 0)
        }
        self.figures[field_name] = {
            "expected": total_low if total_low == total_high else [total_low, total_high],
            "stored": total_stored,
            "lost": max(0, total_low - total_stored),
            "at_risk_from_kill": total_risk,
            "unattributed_answers": unattributed,
        }
        self.check(
            name,
            not wrong and total_high > 0,
            expected=total_low if total_low == total_high else [total_low, total_high],
            stored=total_stored,
            allowed_loss_from_kill=total_risk,
            profiles_off=len(wrong),
            first_off=dict(list(wrong.items())[:5]),
        )

    def views(self) -> None:
        pages = self._http()["pages"]
        records = [(r[0], r[0] + r[1], r[2], visitor_address(r[5]), r[4], r[6], r[5]) for r in pages]
        expected = self._expected_by_profile(records, DEDUP_SECONDS)
        self._counted("views equal the distinct-visitor renders answered", "views", expected)

    def plays(self) -> None:
        """A play is a visitor starting a track (music/plays.py): a 200 from byte 0 counts once PLAY_BYTES (or the
        whole track) were handed to the listener's socket, once per visitor and track per `play_window`. A
        listener that received them was counted; one cut before it received them may have been (the server
        had written more than arrived): such answers widen the range, and are never counted as at risk."""
        plays = self.i.results.get("music", {}).get("plays", [])

        def records(answers: list[list[Any]]) -> list[tuple[float, float, int, str, int, int, Any]]:
            return [(r[0], r[1] or r[0], r[2], visitor_address(r[7]), r[9], r[8], r[7]) for r in answers]

        received = [r for r in plays if r[2] == 200 and r[4] >= (min(PLAY_BYTES, r[5]) if r[5] else PLAY_BYTES)]
        low, _, at_risk, unattributed = self._expected_by_profile(records(received), self.i.play_window)
        _, high, _, _ = self._expected_by_profile(records([r for r in plays if r[2] == 200]), self.i.play_window)
        self._counted("plays equal the tracks started", "plays", (low, high, at_risk, unattributed))

    # ------------------------------------------------------------------ credits

    def credits(self) -> None:
        contacts = self._http()["contacts"]
        spent = {owner: self.i.credits_start - left for owner, left in self.i.credits_left.items()}
        delivered: collections.Counter[int] = collections.Counter()
        for channel in ("sms", "email"):
            for owner, n in self.i.deliveries.get(channel, {}).items():
                delivered[owner] += n
        at_risk = 0
        if self.i.killed is not None:
            killed_address, t_kill = self.i.killed
            for r in contacts:
                if r[7] == "discord" or r[2] == 200 or not (t_kill - 30 <= r[0] <= t_kill):
                    continue
                upstream = self.i.nginx.answered_by(visitor_address(r[5]), r[4], r[0])
                at_risk += upstream == killed_address
        ok_answers = collections.Counter(r[7] for r in contacts if r[2] == 200)
        pending = self.i.holds_pending
        total_spent, total_delivered = sum(spent.values()), sum(delivered.values())
        total_pending = sum(pending.values())
        # A debit is a hold until its delivery is known (contact/credits.py): settled ones must each have been
        # delivered, and a hold still pending (its replica killed mid-delivery) may or may not have been.
        off = {
            owner: {
                "spent": spent.get(owner, 0),
                "pending": pending.get(owner, 0),
                "delivered": delivered.get(owner, 0),
            }
            for owner in sorted(set(spent) | set(delivered))
            if not spent.get(owner, 0) - pending.get(owner, 0) <= delivered.get(owner, 0) <= spent.get(owner, 0)
        }
        self.figures["credits"] = {
            "spent": total_spent,
            "holds_pending": total_pending,
            "delivered_sms_email": total_delivered,
            "delivered": {ch: sum(self.i.deliveries.get(ch, {}).values()) for ch in ("sms", "email", "discord")},
            "answered_200": dict(ok_answers),
            "at_risk_from_kill": at_risk,
        }
        self.check(
            "credits spent equal messages delivered",
            not off and total_pending <= at_risk and total_delivered > 0,
            spent=total_spent,
            delivered=total_delivered,
            holds_pending=total_pending,
            allowed_pending_from_kill=at_risk,
            owners_off=len(off),
            first_off=dict(list(off.items())[:5]),
        )
        self.check(
            "every contact answered 200 was delivered",
            all(ok_answers[ch] <= sum(self.i.deliveries.get(ch, {}).values()) for ch in ok_answers),
            answered_200=dict(ok_answers),
            delivered={ch: sum(self.i.deliveries.get(ch, {}).values()) for ch in ("sms", "email", "discord")},
        )

    # ------------------------------------------------------------------ latency

    def latency(self) -> None:
        pages = self._http()["pages"]
        windows = {}
        for name, (start, end) in self.i.windows.items():
            values = [r[1] for r in pages if start <= r[0] < end]
            windows[name] = {
                "seconds": round(end - start, 1),
                "requests": len(values),
                "p50_ms": _ms(percentile(values, 0.5)),
                "p99_ms": _ms(percentile(values, 0.99)),
                "max_ms": _ms(max(values, default=None)),
            }
        self.figures["page_latency"] = windows
        steady, restart = windows.get("steady", {}).get("p99_ms"), windows.get("restart", {}).get("p99_ms")
        ratio = round(restart / steady, 2) if steady and restart else None
        self.figures["page_p99_restart_over_steady"] = ratio
        limit = self.i.p99_ratio_limit
        self.check(
            f"page p99 during the rolling restart within {limit}× the steady state"
            if limit
            else "page p99 during the rolling restart (reported only)",
            ratio is not None and (limit is None or ratio <= limit),
            steady_p99_ms=steady,
            restart_p99_ms=restart,
            ratio=ratio,
            limit=limit,
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)
