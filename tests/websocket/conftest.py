"""A daemon for WebSocket tests, with the parts of its first API key at hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certd.api.auth import client_form
from certd.api.jobs import Job
from certd.api.registry import Service, api_method
from certd.api.websocket import WEBSOCKET, WebSocketServer
from certd.errors import NotFoundError, ValidationError
from tests.daemon import RunningDaemon, make_config, running_daemon


@dataclass
class Key:
    """An API key as the NAS client uses it."""

    name: str
    id: int
    key: str

    @property
    def raw(self) -> str:
        return client_form(self.id, self.key)

    @property
    def secret(self) -> str:
        return self.key.split("_", 2)[2]


async def make_key(running: RunningDaemon, name: str, readonly: bool = False) -> Key:
    entry, key = await running.daemon.api_keys.create(name, readonly=readonly)
    return Key(entry["name"], entry["id"], key)


def ws_url(running: RunningDaemon) -> str:
    return f"ws://127.0.0.1:{running.daemon.http_port}/api/current"


def ws_server(running: RunningDaemon) -> WebSocketServer:
    runner = running.daemon._runner
    assert runner is not None
    return runner.app[WEBSOCKET]


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon


@pytest.fixture
async def key(certd: RunningDaemon) -> Key:
    return await make_key(certd, "ci")


class Probe(Service):
    """A job method whose course a test decides: progress, a gate, an outcome."""

    namespace = "probe"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.gate = asyncio.Event()
        self.gate.set()

    @api_method(job=True)
    async def work(self, job: Job, outcome: str = "ok") -> dict[str, str]:
        """Report progress twice, wait at the gate, then end as ``outcome`` says."""
        await job.set_progress(25, "first quarter")
        await self.gate.wait()
        await job.set_progress(75, "three quarters")
        if outcome == "invalid":
            raise ValidationError.single("data.name", "must be lower case")
        if outcome == "missing":
            raise NotFoundError("certificate", 42)
        return {"outcome": outcome}


@pytest.fixture
def probe(certd: RunningDaemon) -> Probe:
    """The probe namespace, added to the running daemon's registry."""
    service = Probe(certd.daemon)
    certd.daemon.registry.add_service(service)
    return service
