"""``certd serve`` as a real process: started, killed and restarted by the tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from certd.client import Client
from tests.renewal.conftest import issue_acme, rfc2136
from tests.testbed import NamedServer, PebbleServer, _die_with_parent

REPO = Path(__file__).resolve().parents[2]


def config_text(
    state_dir: Path,
    socket: Path,
    named: NamedServer,
    pebble: PebbleServer,
    **renewal: object,
) -> str:
    """A TOML config for a daemon on the unix socket only, using the test bed."""
    settings: dict[str, object] = {
        "enabled": True,
        "tick_interval": 0.1,
        **renewal,
    }
    lines = [
        "[server]",
        "http_enabled = false",
        f'unix_socket = "{socket}"',
        "[store]",
        f'state_dir = "{state_dir}"',
        "[acme]",
        f'ca_bundle = "{pebble.tls_ca_path}"',
        "order_timeout = 30",
        "[dns]",
        f'resolvers = ["{named.address}"]',
        f"nameserver_port = {named.port}",
        "propagation_timeout = 10",
        "[renewal]",
        *(
            f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
            for key, value in settings.items()
        ),
        "[deploy]",
        "retry_base = 0.1",
        "[log]",
        'level = "debug"',
        'format = "json"',
    ]
    return "\n".join(lines) + "\n"


@dataclass
class DaemonProcess:
    """One state directory, and the certd process serving it (when running)."""

    state_dir: Path
    config_path: Path
    socket: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "certd",
                    "serve",
                    "--config",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=REPO,
                preexec_fn=_die_with_parent,
            )
        self.pids.append(self.proc.pid)

    def client(self) -> Client:
        return Client(socket=self.socket)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"certd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.socket.exists():
                try:
                    async with self.client() as client:
                        if await client.call("core.ping") == "pong":
                            return
                except OSError:
                    pass
            if loop.time() > deadline:
                raise AssertionError(f"certd did not start:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the daemon's store directly (only while it does not run)."""
        with sqlite3.connect(self.state_dir / "certd.db") as db:
            return list(db.execute(sql, args))


def new_daemon(
    base: Path, named: NamedServer, pebble: PebbleServer, **renewal: object
) -> DaemonProcess:
    state = base / "state"
    state.mkdir(parents=True, exist_ok=True)
    # unix socket paths are limited to 108 bytes; pytest's tmp paths can be long
    socket = Path(tempfile.mkdtemp(prefix="certd-", dir="/tmp")) / "s.sock"
    config = base / "certd.toml"
    config.write_text(config_text(state, socket, named, pebble, **renewal))
    return DaemonProcess(state, config, socket, base / "certd.log")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Every daemon a test starts; none outlives the test."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        shutil.rmtree(daemon.socket.parent, ignore_errors=True)


DOMAIN = "crash.example.test"


async def _prepare(
    daemon: DaemonProcess, named: NamedServer, pebble: PebbleServer
) -> int:
    daemon.start()
    await daemon.wait_ready()
    async with daemon.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136(named)},
        )
        cert = await issue_acme(client, pebble, authenticator["id"], "crash", [DOMAIN])
    assert daemon.terminate() == 0
    return int(cert["id"])


@pytest.fixture(scope="session")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer, pebble: PebbleServer
) -> tuple[Path, int]:
    """A stopped daemon's state with one ACME certificate, copied by each test."""
    base = tmp_path_factory.mktemp("prepared")
    daemon = new_daemon(base, named, pebble)
    try:
        cid = asyncio.run(_prepare(daemon, named, pebble))
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
        shutil.rmtree(daemon.socket.parent, ignore_errors=True)
    return daemon.state_dir, cid


def copy_prepared(
    prepared: tuple[Path, int], base: Path, named: NamedServer, pebble: PebbleServer
) -> DaemonProcess:
    daemon = new_daemon(base, named, pebble)
    shutil.rmtree(daemon.state_dir)
    shutil.copytree(prepared[0], daemon.state_dir)
    return daemon
