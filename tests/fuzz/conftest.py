"""A ``certd serve`` in a sandbox for fuzzing, and a plain client for it.

Fuzzed input reaches code with side effects: ACME directory URLs, DNS
servers, deploy directories, hook commands. The daemon therefore runs in its
own network namespace (loopback only, down) and mount namespace in which every
file system is read-only except its state directory, so no generated value
can reach another host or change a file outside the test. Without root (and
``unshare``) the fuzz tests that need the sandbox are skipped.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import make_config, write_config

SANDBOX = r"""
set -e
state="$1"; shift
mount --make-rprivate /
mount --bind "$state" "$state"
for target in $(awk '{print $5}' /proc/self/mountinfo | sort -ru); do
  [ "$target" = "$state" ] && continue
  mount -o remount,bind,ro "$target" 2>/dev/null || true
done
exec "$@"
"""


def sandbox_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FuzzDaemon:
    """The sandboxed daemon: post bodies to it, look at its store."""

    process: subprocess.Popen[bytes]
    socket_path: Path
    state_dir: Path
    log_path: Path

    def post(
        self,
        body: bytes,
        content_type: str = "application/json",
        path: str = "/rpc",
        method: str = "POST",
    ) -> Reply:
        connection = UnixConnection(self.socket_path, timeout=300)
        try:
            connection.request(
                method, path, body=body, headers={"Content-Type": content_type}
            )
            response = connection.getresponse()
            return Reply(response.status, response.read())
        finally:
            connection.close()

    def call(self, method: str, *params: Any) -> Any:
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        reply = self.post(json.dumps(payload).encode()).json()
        assert "result" in reply, reply
        return reply["result"]

    def wait_job(self, job_id: int) -> dict[str, Any]:
        return self.call("core.job_wait", job_id, 300)  # type: ignore[no-any-return]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, as stored."""
        uri = f"file:{self.state_dir / 'certd.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {
                table: conn.execute(
                    f'SELECT * FROM "{table}" ORDER BY rowid'
                ).fetchall()
                for table in tables
            }

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _ready(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        connection = UnixConnection(path, timeout=2)
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzDaemon]:
    if not sandbox_available():
        pytest.skip("fuzzing needs root and unshare to sandbox the daemon")
    directory = tmp_path_factory.mktemp("fuzz")
    state = directory / "state"
    state.mkdir(mode=0o700)
    socket_path = state / "certd.sock"
    config = make_config(
        state,
        server={"http_enabled": False, "unix_socket": str(socket_path)},
        log={"level": "info", "format": "json"},
        acme={"request_timeout": 5, "order_timeout": 10},
        dns={"propagation_timeout": 2, "request_timeout": 5},
    )
    config_path = write_config(directory / "certd.toml", config)
    script = directory / "sandbox.sh"
    script.write_text(SANDBOX)
    log_path = directory / "certd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--",
                "sh",
                str(script),
                str(state),
                sys.executable,
                "-m",
                "certd",
                "serve",
                "--config",
                str(config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    daemon = FuzzDaemon(process, socket_path, state, log_path)
    try:
        deadline = time.monotonic() + 30
        while not _ready(socket_path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "sandboxed certd did not start:\n" + daemon.log_tail()
                )
            time.sleep(0.05)
        seed(daemon)
        yield daemon
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def seed(daemon: FuzzDaemon) -> None:
    """A few objects, so that ids 1 and 2 lead somewhere in most namespaces."""
    daemon.call(
        "acme.dns.authenticator.create",
        {
            "name": "seed",
            "attributes": {
                "authenticator": "rfc2136",
                "server": "127.0.0.1",
                "tsig_key_name": "k",
                "tsig_secret": "c2VlZC1zZWNyZXQtZm9yLWZ1enppbmc=",
            },
        },
    )
    for name in ("seed-csr", "seed-csr-2"):
        job = daemon.call(
            "certificate.create",
            {
                "name": name,
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": [f"{name}.example.test"],
            },
        )
        assert daemon.wait_job(job)["state"] == "SUCCESS"
