"""Schemathesis fuzzes the running server against openapi.yaml: zero 5xx, zero contract violations.

The real server runs on this test's event loop with its stores, the contact
fakes (Turnstile, SMS, SMTP, Discord) and a music worker, all on 127.0.0.1, and
data loaded so generated paths can resolve (profile p1 at alice.hep.gg, owner
u1 with presence). Schemathesis runs as the `st` CLI in a subprocess, so its
blocking client never stalls the server's loop.

Bounded: 25 examples per operation, deterministic generation with a fixed seed,
no example database, a time budget. Loopback only: the base URL is 127.0.0.1,
redirects are never followed (the page redirects to hep.gg), and any proxy
variable points at a closed loopback port with only 127.0.0.1 exempt, so a
request to anywhere else fails instead of leaving the machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from test_openapi import SNAPSHOT, contract_document

from contact.limiter import DAY, MINUTE, ContactLimiter, Rule, Rules
from presence.writer import write_presence

from conftest import free_port
from contact_fakes import contact_settings

ROOT = Path(__file__).resolve().parent.parent
ST = Path(sys.executable).with_name("st")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection"
)
MAX_EXAMPLES = 25

pytestmark = pytest.mark.slow  # a bounded schemathesis run over every endpoint: a minute or more
TIME_BUDGET = 90  # seconds the st run may take; the test fails past it


@pytest.fixture
async def fuzz_server(make_server, fakes, upstream):
    server = await make_server(
        **contact_settings(fakes, trusted_proxies=()),
        music_upstream_url=upstream.url,
        music_connect_timeout=1.0,
        music_stall_timeout=1.0,
    )
    await server.load(contract_document())
    await write_presence(server.services.redis.client, "u1", SNAPSHOT)
    # Every generated request comes from 127.0.0.1: a roomier burst bucket lets the fuzzer reach
    # validation, Turnstile and delivery (test_openapi.py meets the spec's 429).
    server.services.contact.limiter = ContactLimiter(
        server.services.redis, Rules(burst=Rule("burst", 300, MINUTE), daily=Rule("daily", 3000, DAY))
    )
    return server


@pytest.mark.timeout(150)
async def test_schemathesis_finds_no_server_error_and_no_contract_violation(fuzz_server, tmp_path):
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(
        HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, ALL_PROXY=dead_proxy, NO_PROXY="127.0.0.1", PYTHONHASHSEED="0"
    )
    command = [
        str(ST),
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        str(ROOT / "openapi.yaml"),
        "--url",
        fuzz_server.url,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20260101",
        "--generation-deterministic",
        "--max-redirects",
        "0",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--no-color",
        "--warnings",
        "off",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), TIME_BUDGET + 45)
    text = output.decode(errors="replace")
    print(text[text.find("SUMMARY") :])  # shown with -s: operations, phases, cases generated
    assert process.returncode == 0, text[-20_000:]
    assert "No issues found" in text, text[-5_000:]
