"""systemd's notify protocol and SIGHUP, with a renewal in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from certd.client import Client
from certd.renewal.checkpoints import HOLD_ENV, RELEASE_ENV
from certd.systemd import _address, notify, watchdog_interval
from tests.ops.conftest import DaemonProcess, config_text, copy_prepared
from tests.renewal.factory import wait_until
from tests.testbed import NamedServer, PebbleServer


class NotifySocket:
    """The socket systemd would listen on; keeps every message received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def until(self, key: str, value: str | None = None, count: int = 1) -> None:
        loop = asyncio.get_running_loop()

        def seen() -> int:
            return sum(
                1
                for m in self.messages
                if key in m and (value is None or m[key] == value)
            )

        async def receive() -> None:
            while seen() < count:
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(
                    dict(line.split("=", 1) for line in data.decode().splitlines())
                )

        await asyncio.wait_for(receive(), 30)

    def close(self) -> None:
        self.sock.close()


async def test_notify_watchdog_and_reload_keep_the_job_running(
    prepared: tuple[Path, int],
    daemons: list[DaemonProcess],
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
) -> None:
    daemon = copy_prepared(prepared, tmp_path, named, pebble)
    daemons.append(daemon)
    cid = prepared[1]
    release = tmp_path / "release"
    systemd = NotifySocket(daemon.socket.parent / "notify")
    try:
        daemon.start(
            {
                "NOTIFY_SOCKET": str(systemd.path),
                "WATCHDOG_USEC": "200000",
                HOLD_ENV: "order_created",
                RELEASE_ENV: str(release),
            }
        )
        await systemd.until("READY", "1")
        await daemon.wait_ready()
        await systemd.until("WATCHDOG", "1", count=3)

        async with daemon.client() as client:
            job_id = await client.call("certificate.renew", cid)
            await wait_until(
                lambda: _description(client, job_id, "held at order_created")
            )
            before = await _window(client, cid)

            daemon.config_path.write_text(
                config_text(
                    daemon.state_dir,
                    daemon.socket,
                    named,
                    pebble,
                    tick_interval=0.1,
                    jitter=0,
                )
            )
            os.kill(daemon.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
            await systemd.until("RELOADING", "1")
            await systemd.until("READY", "1", count=2)
            reloaded = await _window(client, cid)
            still = await client.call("core.job_wait", job_id, 0)

            daemon.config_path.write_text("[renewal\n")
            os.kill(daemon.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
            await systemd.until("READY", "1", count=3)
            kept = await _window(client, cid)

            release.touch()
            finished = await client.call("core.job_wait", job_id, 30)
        assert daemon.terminate() == 0
        await systemd.until("STOPPING", "1")
    finally:
        systemd.close()

    ready = next(m for m in systemd.messages if m.get("READY") == "1")
    assert ready["MAINPID"] == str(daemon.pids[-1])
    assert ready["STATUS"].startswith("serving; renewal on;")
    assert systemd.messages[0]["STATUS"] == "starting: opening the store"
    reload = next(m for m in systemd.messages if "RELOADING" in m)
    assert int(reload["MONOTONIC_USEC"]) > 0
    # jitter 3600 s before the reload, none after it
    assert before["start"] != before["end"]
    assert reloaded["start"] == reloaded["end"] == before["end"]
    assert kept == reloaded  # a broken file changes nothing
    assert still["state"] == "RUNNING"
    assert finished["state"] == "SUCCESS"
    assert len(daemon.pids) == 1
    log = daemon.log_tail(400)
    assert '"event": "config_reloaded"' in log
    assert '"event": "config_reload_failed"' in log


async def _description(client: Client, job_id: int, text: str) -> bool:
    job = await client.call("core.job_wait", job_id, 0)
    return bool(job["progress"]["description"] == text)


async def _window(client: Client, cid: int) -> dict[str, str]:
    plan = await client.call("certificate.renewal_plan")
    return next(p["window"] for p in plan if p["id"] == cid)


def test_notify_outside_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.delenv("NOTIFY_SOCKET", raising=False)
    mp.delenv("WATCHDOG_USEC", raising=False)

    assert notify("READY=1") is False
    assert watchdog_interval() is None


def test_notify_abstract_socket_and_watchdog_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mp = monkeypatch
    name = f"certd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        mp.setenv("NOTIFY_SOCKET", "@" + name)

        assert notify("STATUS=hello", "READY=1") is True
        assert listener.recv(100) == b"STATUS=hello\nREADY=1"

    assert _address("@x") == "\0x"
    assert _address("vsock:2:3") is None
    mp.setenv("WATCHDOG_USEC", "3000000")
    mp.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 1.5
    mp.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
