"""The NAS middleware's own CLI, ``midclt``, driving certd unchanged.

The client is not on PyPI, so these tests run only where it is installed:
set ``CERTD_MIDCLT`` to its ``midclt`` or put it on PATH (see the README,
"Driving certd with midclt"). ``scripts/midclt-check`` runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import RunningDaemon, running_daemon
from tests.websocket.conftest import Key, make_key
from tests.websocket.tls import https_config

MIDCLT = os.environ.get("CERTD_MIDCLT") or shutil.which("midclt")

pytestmark = pytest.mark.skipif(
    MIDCLT is None, reason="midclt is not installed (set CERTD_MIDCLT)"
)

CSR = {
    "name": "web",
    "create_type": "CERTIFICATE_CREATE_CSR",
    "key_type": "EC",
    "san": ["www.example.test"],
}


@dataclass
class Run:
    code: int
    out: str
    err: str


async def midclt(*args: str) -> Run:
    assert MIDCLT is not None
    process = await asyncio.create_subprocess_exec(
        MIDCLT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@dataclass
class Target:
    running: RunningDaemon
    key: Key

    @property
    def ws(self) -> list[str]:
        return ["-u", f"wss://127.0.0.1:{self.running.daemon.http_port}/api/current"]

    @property
    def unix(self) -> list[str]:
        return ["-u", f"ws+unix://{self.running.config.server.unix_socket}"]

    def login(self, *how: str) -> list[str]:
        return [*self.ws, "--insecure", "-U", self.key.name, "-K", self.key.raw, *how]


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    """certd serving HTTPS (for channel binding) and its unix socket."""
    config, _ = await https_config(tmp_path / "state")
    async with running_daemon(config) as running:
        yield Target(running, await make_key(running, "ci"))


async def test_ping_needs_no_login(target: Target) -> None:
    run = await midclt(*target.ws, "--insecure", "ping")
    assert (run.code, run.out) == (0, "pong\n")


@pytest.mark.parametrize(
    "how",
    [
        ["--plain"],  # API_KEY_PLAIN
        [],  # SCRAM-SHA-512 bound to the TLS certificate, the client's default
        ["--no-channel-binding"],  # SCRAM without binding
    ],
    ids=["plain", "scram-bound", "scram-unbound"],
)
async def test_login_with_a_key_then_query(target: Target, how: list[str]) -> None:
    run = await midclt(*target.login(*how), "call", "certificate.query")
    assert (run.code, run.err) == (0, "")
    # The only certificate yet is the one the HTTPS listener serves.
    assert [entry["name"] for entry in json.loads(run.out)] == ["api"]


async def test_key_from_a_file(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"raw_key": target.key.raw}))
    run = await midclt(
        *target.ws, "--insecure", "-U", "ci", "-K", str(path), "call", "core.ping"
    )
    assert (run.code, run.out) == (0, "pong\n")


async def test_wrong_key_fails_the_login(target: Target) -> None:
    wrong = f"{target.key.id}-{'x' * 43}"
    for how in (["--plain"], []):
        run = await midclt(
            *target.ws, "--insecure", "-U", "ci", "-K", wrong, *how, "call", "core.ping"
        )
        # midclt reports a failed login on stdout and exits 0.
        assert run.out.startswith("Failed to login:"), how
        assert "Invalid API key" in run.out or "Failed to authenticate" in run.out


async def test_csr_job_with_progress(target: Target) -> None:
    run = await midclt(
        *target.login(),
        "call",
        "-j",
        "-jp",
        "description",
        "certificate.create",
        json.dumps(CSR),
    )
    assert run.code == 0, run.err
    entry = json.loads(run.out)
    assert entry["name"] == "web"
    assert entry["san"] == ["DNS:www.example.test"]
    # Job callbacks run in threads of the client, so lines may come out of order.
    assert set(run.err.splitlines()) >= {
        "checked the request",
        "generating a EC key",
        "signing the CSR",
    }

    bar = await midclt(
        *target.login(),
        "call",
        "-j",
        "certificate.create",
        json.dumps({**CSR, "name": "web2"}),
    )
    assert bar.code == 0, bar.err
    assert "Total Progress: [" in bar.err
    assert "100.00%" in bar.err

    # Without -j the call returns the job's id while the job goes on.
    started = await midclt(
        *target.login(),
        "call",
        "certificate.create",
        json.dumps({**CSR, "name": "web3"}),
    )
    assert started.code == 0
    job = await midclt(*target.login(), "call", "core.job_wait", started.out, "30")
    assert json.loads(job.out)["state"] == "SUCCESS"


async def test_validation_error(target: Target) -> None:
    await midclt(*target.login(), "call", "-j", "certificate.create", json.dumps(CSR))
    run = await midclt(
        *target.login(), "call", "-j", "certificate.create", json.dumps(CSR)
    )
    assert run.code == 1
    assert run.out == ""
    assert (
        run.err.strip()
        == "[EINVAL] data.name: a certificate named 'web' already exists"
    )


async def test_call_error_and_unknown_method(target: Target) -> None:
    run = await midclt(*target.login(), "call", "certificate.get_instance", "12345")
    assert (run.code, run.err.strip()) == (1, "certificate 12345 does not exist")
    run = await midclt(*target.login(), "call", "certificate.frobnicate")
    assert (run.code, run.err.strip()) == (1, "Method does not exist")


async def test_unix_socket_needs_no_credentials(target: Target) -> None:
    await midclt(*target.login(), "call", "-j", "certificate.create", json.dumps(CSR))
    run = await midclt(
        *target.unix,
        "call",
        "certificate.query",
        json.dumps([["name", "=", "web"]]),
        json.dumps({"select": ["name"]}),
    )
    assert (run.code, run.out) == (0, '[{"name": "web"}]\n')


async def test_subscribe_prints_certificate_events(target: Target) -> None:
    process = asyncio.create_task(
        midclt(*target.unix, "subscribe", "-n", "1", "-t", "30", "certificate.renewed")
    )
    # Publish until the subscriber, once connected, has seen one and exits.
    while not process.done():
        await target.running.daemon.events.publish(
            "certificate.renewed", "renewed web", subject="web"
        )
        await asyncio.wait([process], timeout=0.2)
    run = process.result()
    assert run.code == 0, run.err
    event = json.loads(run.out.splitlines()[0])
    assert event["msg"] == "added"
    assert event["collection"] == "certificate.renewed"
    assert event["fields"]["subject"] == "web"
