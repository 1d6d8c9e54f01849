"""Run a real certd daemon inside the test process, on 127.0.0.1 and a unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
        _, key = await daemon.api_keys.create("tests")
        yield RunningDaemon(daemon, config, key)
    finally:
        await daemon.stop()


async def call_job(client: Client, method: str, *params: Any) -> Any:
    """Call a job method and return the job's result (raises RpcError on failure)."""
    job_id = await client.call(method, *params)
    assert isinstance(job_id, int)
    return await client.wait_job(job_id)
