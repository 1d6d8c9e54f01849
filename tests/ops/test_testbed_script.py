"""scripts/testbed: the bed a new user tries certd's ACME path on."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sys
from pathlib import Path

from certd.client import Client
from certd.config import load_config
from certd.service import Daemon
from tests.daemon import call_job

ROOT = Path(__file__).resolve().parents[2]


async def test_the_printed_walkthrough_gets_a_certificate(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "testbed.py"),
        str(tmp_path / "bed"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not lines or lines[-1] != "ready; Ctrl-C stops the bed":
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "the bed stopped before it was ready"
            lines.append(line.decode().rstrip("\n"))
        calls = [
            shlex.split(line)[2:]
            for line in lines
            if line.startswith(".venv/bin/certd call ")
        ]
        children = (
            Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        )
        config = load_config(tmp_path / "bed" / "certd.toml")
        daemon = Daemon(config)
        await daemon.start()
        try:
            assert config.server.unix_socket is not None
            async with Client(socket=config.server.unix_socket) as client:
                authenticator = await client.call(calls[0][0], json.loads(calls[0][1]))
                csr = await call_job(client, calls[1][0], json.loads(calls[1][1]))
                cert = await call_job(client, calls[2][0], json.loads(calls[2][1]))
        finally:
            await daemon.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 30)

    assert [c[0] for c in calls] == [
        "acme.dns.authenticator.create",
        "certificate.create",
        "certificate.create",
    ]
    assert (authenticator["id"], csr["id"]) == (1, 1)
    assert cert["cert_type"] == "CERTIFICATE"
    assert cert["san"] == ["DNS:www.example.test"]
    assert cert["acme"]["directory"].startswith("https://127.0.0.1:")
    assert returncode == 0
    # BIND and pebble ran as its children, and stopped with it
    assert len(children) == 2
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
