"""Run a real certd daemon inside the test process, on 127.0.0.1 and a unix socket."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certd.client import Client
from certd.config import Config
from certd.service import Daemon
from tests.testbed import NamedServer, PebbleServer


def make_config(
    state_dir: Path,
    *,
    named: NamedServer | None = None,
    pebble: PebbleServer | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config for tests: free HTTP port, private socket, and the local test bed."""
    data: dict[str, Any] = {
        "server": {"http_port": 0, "unix_socket": str(state_dir / "certd.sock")},
        "store": {"state_dir": str(state_dir)},
        "log": {"level": "debug", "format": "json"},
        "renewal": {"enabled": False},
    }
    if named is not None:
        data["dns"] = {
            "resolvers": [named.address],
            "nameserver_port": named.port,
            "propagation_timeout": 10,
        }
    if pebble is not None:
        data["acme"] = {"ca_bundle": str(pebble.tls_ca_path), "order_timeout": 30}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return Config.model_validate(data)


@dataclass
class RunningDaemon:
    daemon: Daemon
    config: Config
    api_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def client(self, api_key: str | None = None) -> Client:
        return Client(url=self.url, api_key=api_key or self.api_key)

    def unix_client(self) -> Client:
        assert self.config.server.unix_socket is not None
        return Client(socket=self.config.server.unix_socket)


@asynccontextmanager
async def running_daemon(config: Config) -> AsyncIterator[RunningDaemon]:
    daemon = Daemon(config)
    await daemon.start()
    try:
        _, key = await daemon.api_keys.create(f"tests-{secrets.token_hex(4)}")
        yield RunningDaemon(daemon, config, key)
    finally:
        await daemon.stop()


async def call_job(client: Client, method: str, *params: Any) -> Any:
    """Call a job method and return the job's result (raises RpcError on failure)."""
    job_id = await client.call(method, *params)
    assert isinstance(job_id, int)
    return await client.wait_job(job_id)


def write_config(path: Path, config: Config) -> Path:
    """Write a config as TOML (the keys tests use are flat enough for this)."""
    lines: list[str] = []
    for section, values in config.model_dump(mode="json", exclude_none=True).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, int) and key == "socket_mode":
                value = format(value, "o")
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DaemonProcess:
    """``certd serve`` in a child process; its stderr goes to a file."""

    process: subprocess.Popen[bytes]
    config_path: Path
    config: Config
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


@contextmanager
def daemon_process(config: Config, directory: Path) -> Iterator[DaemonProcess]:
    """Start ``certd serve --config`` and wait until its socket answers."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory / "certd.toml", config)
    log_path = directory / "certd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "certd", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = DaemonProcess(process, config_path, config, log_path)
    try:
        deadline = time.monotonic() + 20
        while not _ready(config):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "certd did not start:\n" + log_path.read_text()[-3000:]
                )
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready(config: Config) -> bool:
    path = config.server.unix_socket
    if path is None or not path.exists():
        return False
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(str(path))
        sock.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        return b"200" in sock.recv(64)
    except OSError:
        return False
    finally:
        sock.close()
