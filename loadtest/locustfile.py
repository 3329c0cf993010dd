"""Locust load test for a hepgg_server deployment (operators; see docs/loadtest.md).

    locust -f loadtest/locustfile.py --headless -u 2000 -r 200 -t 5m \
        --host https://hepgg.example --base-domain hep.gg --slug-prefix lt- --slug-count 50 \
        --redis-url redis://redis.internal:6379/0 --csv out

User classes (weights are options):
  PageVisitor       host-routed page views; sometimes the OG card and the presence JSON
  SseListener       holds a presence stream; reports fan-out latency (publish -> receipt)
  MusicListener     streams a track, paced at an audio bitrate; reports time to first byte and bytes
  ContactSender     posts the three contact forms with a Turnstile token (deploy the test secret)
  PresencePublisher one per run, only with --redis-url: writes stamped snapshots the way the bot does

Everything a user needs beyond the host names (OG URL, presence paths, music URLs,
form actions) is read from each host's page, once per locust process.
Expected refusals (429 rate limits, 402 out of credits, an SSE shed with `retry:`)
are successes under their own names; other 4xx, 5xx and connection errors fail.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's presence/ and loadtest/

import gevent
import gevent.event
import requests
from locust import HttpUser, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtest.sse import SseParser, sent_time, stamped_snapshot, updated_at
from loadtest.targets import SiteTargets, host_list, parse_page, with_isrc

CLOUDFLARE_DUMMY_TOKEN = "XXXX.DUMMY.TOKEN.XXXX"  # what Cloudflare's test sitekeys hand the browser


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    add = parser.add_argument
    add("--slugs", default="demo", help="comma-separated profile slugs on --base-domain")
    add("--slug-prefix", default="lt-", help="with --slug-count: slugs PREFIX0..PREFIX(N-1) (loadtest/seed.py's)")
    add("--slug-count", type=int, default=0, help="how many numbered slugs to add")
    add("--base-domain", default="localhost", help="profile slots are <slug>.<base-domain> (Host header)")
    add("--custom-domains", default="", help="comma-separated custom-domain hosts to visit as well")
    add("--isrc", default="", help="stream this ISRC on every profile instead of the page's tracks")
    add("--redis-url", default="", help="the deployment's Redis: enables the presence publisher")
    add("--publish-interval", type=float, default=2.0, help="seconds between stamped snapshots per owner")
    add("--presence-ttl", type=float, default=60.0, help="TTL of the publisher's snapshots (s)")
    add("--music-kbps", type=float, default=320.0, help="read audio at this bitrate (0 = as fast as served)")
    add("--music-listen-seconds", type=float, default=30.0, help="stop a track after this long (0 = whole track)")
    add("--sse-hold-seconds", type=float, default=0.0, help="reconnect after this long (0 = hold until the end)")
    add("--sse-read-timeout", type=float, default=75.0, help="fail a stream silent this long (pings are 30 s)")
    add("--og-share", type=float, default=0.2, help="fraction of page views that also fetch the OG card")
    add("--snapshot-share", type=float, default=0.3, help="fraction of page views that also fetch presence JSON")
    add("--turnstile-token", default=CLOUDFLARE_DUMMY_TOKEN, help="token sent with contact forms")
    add(
        "--forwarded-for",
        action="store_true",
        help="give each user a random X-Forwarded-For (only if the target trusts this machine as a proxy)",
    )
    add("--wait-scale", type=float, default=1.0, help="multiply every think time (0.1 = ten times busier users)")
    add("--page-weight", type=int, default=10)
    add("--sse-weight", type=int, default=10)
    add("--music-weight", type=int, default=2)
    add("--contact-weight", type=int, default=1)


@events.init.add_listener
def apply_options(environment, **_kwargs) -> None:
    opts = environment.parsed_options
    if opts is None:  # used as a library
        return
    PageVisitor.weight = opts.page_weight
    SseListener.weight = opts.sse_weight
    MusicListener.weight = opts.music_weight
    ContactSender.weight = opts.contact_weight
    # Exactly one publisher in the whole run (locust dispatches fixed_count across workers), none without Redis.
    PresencePublisher.fixed_count = 1 if opts.redis_url else 0
    PresencePublisher.wait_time = constant(opts.publish_interval)


# Host -> what its page links to; filled on first sight, per locust process.
_sites: dict[str, SiteTargets] = {}
_discovering: dict[str, gevent.event.Event] = {}


def _scaled(low: float, high: float):
    def wait(user) -> float:
        return random.uniform(low, high) * user.environment.parsed_options.wait_scale

    return wait


class HepggUser:
    """Mixed into the user classes: options, hosts, per-user headers and page discovery."""

    @property
    def opts(self):
        return self.environment.parsed_options

    def setup_visitor(self) -> None:
        self.hosts = host_list(
            self.opts.slugs,
            self.opts.base_domain,
            self.opts.custom_domains,
            self.opts.slug_prefix,
            self.opts.slug_count,
        )
        self.base_headers = {"User-Agent": "Mozilla/5.0 (hepgg-loadtest)"}
        if self.opts.forwarded_for:
            self.base_headers["X-Forwarded-For"] = "10.%d.%d.%d" % tuple(random.randint(1, 254) for _ in range(3))

    def headers(self, host: str, **extra: str) -> dict:
        return {**self.base_headers, "Host": host, **extra}

    def page_name(self, host: str) -> str:
        return "page" if host.endswith("." + self.opts.base_domain.strip(".").lower()) else "page (custom domain)"

    def site(self, host: str) -> SiteTargets | None:
        """The host's targets, fetching its page once per process (others spawned meanwhile wait for it)."""
        if host in _sites:
            return _sites[host]
        if (pending := _discovering.get(host)) is not None:
            pending.wait(30)
            return _sites.get(host)
        _discovering[host] = pending = gevent.event.Event()
        try:
            with self.client.get("/", headers=self.headers(host), name="page (discovery)", catch_response=True) as resp:
                if resp.status_code != 200:
                    resp.failure(f"{host}: HTTP {resp.status_code}")
                    return None
                _sites[host] = parse_page(host, resp.text)
                return _sites[host]
        finally:
            del _discovering[host]
            pending.set()

    def pick(self, has) -> SiteTargets | None:
        """A random host whose page offers what this user needs (`has(site)`)."""
        for host in random.sample(self.hosts, len(self.hosts)):
            site = self.site(host)
            if site is not None and has(site):
                return site
        return None

    def record(self, kind: str, name: str, millis: float, length: int = 0, exception=None) -> None:
        """A custom row in locust's statistics (not an HTTP request)."""
        self.environment.events.request.fire(
            request_type=kind, name=name, response_time=millis, response_length=length, exception=exception, context={}
        )

    def missing(self, what: str) -> None:
        self.record("SETUP", f"no {what} on any host", 0, exception=RuntimeError(f"no host offers {what}"))
        gevent.sleep(10)


class PageVisitor(HepggUser, FastHttpUser):
    """A visitor opening a profile page; sometimes its share card and presence JSON too."""

    weight = 10
    wait_time = _scaled(1, 5)

    def on_start(self) -> None:
        self.setup_visitor()

    @task
    def visit(self) -> None:
        host = random.choice(self.hosts)
        with self.client.get("/", headers=self.headers(host), name=self.page_name(host), catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{host}: HTTP {resp.status_code}")
                return
            if host not in _sites:
                _sites[host] = parse_page(host, resp.text)
        site = _sites[host]
        if site.og_path and random.random() < self.opts.og_share:
            self.client.get(site.og_path, headers=self.headers(host), name="og.png")
        if site.snapshot_path and random.random() < self.opts.snapshot_share:
            self.client.get(site.snapshot_path, headers=self.headers(host), name="presence snapshot")


def _body_chunks(resp: requests.Response, size: int):
    """Body bytes as they arrive: chunk by chunk (HTTP/1.1), or whatever one read returns (close-delimited)."""
    if resp.raw.chunked:
        return resp.iter_content(chunk_size=None)
    return iter(lambda: resp.raw.read1(size), b"")


class SseListener(HepggUser, HttpUser):
    """A page's presence card: one EventSource held open, every event parsed.

    Rows: GET `presence stream` (time to headers), SSE `first event` (connect to
    the initial snapshot), SSE `fan-out latency` (stamped publish -> receipt),
    SSE `fan-out latency (updatedAt)` (other writers' changes, ms resolution),
    SSE `shed (retry)` (the server asked us back later: expected under overload).
    """

    weight = 10
    wait_time = _scaled(0.5, 2)

    def on_start(self) -> None:
        self.setup_visitor()
        self.response: requests.Response | None = None

    def on_stop(self) -> None:
        if self.response is not None:  # a killed greenlet's finally already ran; this is belt and braces
            self.response.close()

    @task
    def listen(self) -> None:
        site = self.pick(lambda s: s.stream_path)
        if site is None:
            self.missing("presence stream")
            return
        started = time.perf_counter()
        try:
            self.response = self.client.get(
                site.stream_path,
                headers=self.headers(site.host),
                stream=True,
                name="presence stream",
                timeout=(10, self.opts.sse_read_timeout),
            )
        except requests.RequestException:
            return  # already reported by locust's client
        try:
            if self.response.status_code == 200:
                # --sse-hold-seconds: the visitor leaves (silent timeout), then the task opens a new stream.
                with gevent.Timeout(self.opts.sse_hold_seconds or None, False):
                    self.read_events(self.response, started)
        except (requests.RequestException, OSError) as exc:
            self.record("SSE", "stream broken", (time.perf_counter() - started) * 1000, exception=exc)
        finally:
            self.response.close()
            self.response = None

    def read_events(self, resp: requests.Response, started: float) -> None:
        parser = SseParser()
        first = True
        hint: int | None = None  # a `retry:` with nothing after it yet: the stream opens with one, a shed ends with one
        for chunk in _body_chunks(resp, 65536):
            received = time.time()
            for message in parser.feed(chunk):
                if message.event == "retry":
                    hint = message.retry
                    continue
                if message.event != "presence":
                    continue
                hint = None
                if first:
                    self.record("SSE", "first event", (time.perf_counter() - started) * 1000, len(message.data))
                    first = False
                    continue
                self.fan_out(message.data, received)
        if hint is not None:  # the body ended right after a hint: the server shed us (overload or shutdown)
            self.record("SSE", "shed (retry)", (time.perf_counter() - started) * 1000)
            gevent.sleep(hint / 1000)
            return
        self.record(
            "SSE",
            "stream broken",
            (time.perf_counter() - started) * 1000,
            exception=RuntimeError("stream ended without a retry hint"),
        )

    def fan_out(self, data: str, received: float) -> None:
        try:
            snapshot = json.loads(data)
        except ValueError as exc:
            self.record("SSE", "bad event", 0, len(data), exception=exc)
            return
        if (sent := sent_time(snapshot)) is not None:
            self.record("SSE", "fan-out latency", max(0.0, received - sent) * 1000, len(data))
        elif (written := updated_at(snapshot)) is not None:
            self.record("SSE", "fan-out latency (updatedAt)", max(0.0, received - written) * 1000, len(data))
        else:
            self.record("SSE", "presence cleared", 0, len(data))


class MusicListener(HepggUser, HttpUser):
    """A visitor pressing play: the track streamed through the proxy, read at audio speed.

    Rows: GET `music` (time to headers), MUSIC `time to first byte`, MUSIC `stream`
    (response time = listening time, size = bytes received), MUSIC `stream (cut by test end)`
    (the same for tracks still playing when the run stopped).
    """

    weight = 2
    wait_time = _scaled(2, 10)

    def on_start(self) -> None:
        self.setup_visitor()

    @task
    def play(self) -> None:
        site = self.pick(lambda s: s.music_paths)
        if site is None:
            self.missing("music track")
            return
        path = random.choice(site.music_paths)
        if self.opts.isrc:
            path = with_isrc(path, self.opts.isrc)
        started = time.perf_counter()
        try:
            resp = self.client.get(path, headers=self.headers(site.host), stream=True, name="music", timeout=(10, 30))
        except requests.RequestException:
            return
        self.received = 0
        try:
            if resp.status_code not in (200, 206):
                return  # locust's client has counted the failure
            self.listen(resp, started)
            self.record("MUSIC", "stream", (time.perf_counter() - started) * 1000, self.received)
        except (requests.RequestException, OSError) as exc:  # includes a body short of its Content-Length
            self.record("MUSIC", "stream", (time.perf_counter() - started) * 1000, self.received, exception=exc)
        except gevent.GreenletExit:  # the run ended mid-track: still count what was heard
            self.record("MUSIC", "stream (cut by test end)", (time.perf_counter() - started) * 1000, self.received)
            raise
        finally:
            resp.close()

    def listen(self, resp: requests.Response, started: float) -> None:
        bytes_per_s = self.opts.music_kbps * 125
        limit = self.opts.music_listen_seconds
        first_at = None
        for chunk in _body_chunks(resp, 16384):
            now = time.perf_counter()
            if first_at is None:
                first_at = now
                self.record("MUSIC", "time to first byte", (now - started) * 1000)
            self.received += len(chunk)
            if limit and now - started >= limit:
                break  # the visitor moves on before the end of the track
            if bytes_per_s:
                ahead = self.received / bytes_per_s - (now - first_at)
                if ahead > 0:
                    gevent.sleep(ahead)


class ContactSender(HepggUser, FastHttpUser):
    """A visitor sending one of the page's contact forms.

    Rows `contact sms|email|discord` (200), and the expected refusals under their
    own names: `contact <channel> [429 rate-limited]`, `contact <channel> [402 out of credits]`.
    """

    weight = 1
    wait_time = _scaled(5, 20)

    def on_start(self) -> None:
        self.setup_visitor()

    @task
    def send(self) -> None:
        site = self.pick(lambda s: s.contact_paths)
        if site is None:
            self.missing("contact form")
            return
        channel = random.choice(sorted(site.contact_paths))
        body = {"message": f"load test {random.randint(0, 1 << 30)}", "turnstileToken": self.opts.turnstile_token}
        if channel == "email":
            body.update(email="loadtest@example.com", subject="load test")
        elif channel == "discord":
            body["handle"] = "locust"
        name = f"contact {channel}"
        with self.client.post(
            site.contact_paths[channel], json=body, headers=self.headers(site.host), name=name, catch_response=True
        ) as resp:
            if resp.status_code == 200:
                resp.success()
            elif resp.status_code in (402, 429):
                label = "429 rate-limited" if resp.status_code == 429 else "402 out of credits"
                resp.request_meta["name"] = f"{name} [{label}]"
                resp.success()
            else:
                resp.failure(f"HTTP {resp.status_code}: {_error_text(resp)}")


def _error_text(resp) -> str:
    try:
        return str(json.loads(resp.text).get("error"))
    except (ValueError, AttributeError, TypeError):
        return "(no envelope)"


class PresencePublisher(HepggUser, HttpUser):
    """The Discord bot's stand-in: every --publish-interval it writes a stamped snapshot for each
    presence owner the hosts show (only with --redis-url; one per run).

    Row REDIS `publish presence` (the MULTI/SET/PUBLISH round trip). Its snapshots
    overwrite the owners' real presence for --presence-ttl: use load-test profiles.
    """

    weight = 0
    fixed_count = 1
    wait_time = constant(2)

    def on_start(self) -> None:
        from loadtest.publisher import PresencePublisher as Writer  # redis is needed only here

        self.setup_visitor()
        self.writer = Writer(self.opts.redis_url, ttl=self.opts.presence_ttl)  # SPUBLISH on a cluster
        self.seq = 0
        self.owners: list[str] = []

    def on_stop(self) -> None:
        self.writer.close()

    @task
    def publish(self) -> None:
        if not self.owners:
            self.owners = sorted({s.presence_user for h in self.hosts if (s := self.site(h)) and s.presence_user})
            if not self.owners:
                self.missing("presence stream")
                return
        for owner in self.owners:
            self.seq += 1
            started = time.perf_counter()
            try:
                self.writer.write(owner, stamped_snapshot(time.time(), self.seq))
                self.record("REDIS", "publish presence", (time.perf_counter() - started) * 1000)
            except Exception as exc:  # redis errors and refusals alike: report, keep publishing
                self.record("REDIS", "publish presence", (time.perf_counter() - started) * 1000, exception=exc)
