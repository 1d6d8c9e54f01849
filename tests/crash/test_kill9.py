"""Kill -9 the daemon in the middle of ACME issuances; every restart finds order.

``certd serve`` runs against the session's pebble and BIND. Each round starts
it, checks what the previous kill left, starts several issuances (a CSR, then
an ACME certificate through DNS-01) and kills the daemon with SIGKILL at a
random moment, sometimes while it is still starting. After every restart:

- ``PRAGMA integrity_check`` is ok and no foreign key dangles;
- every stored certificate and CSR parses and its private key matches it;
- no job is left RUNNING or WAITING;
- no TXT value certd wrote is left in BIND, and no challenge record remains;
- nothing was issued twice: one certificate per name and per CSR, no serial
  twice.

``CERTD_CRASH_KILLS`` sets the number of kills (default 3; 100 for the full
run) and ``CERTD_CRASH_SEED`` the random seed, printed for reproduction.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from certd.client import Client
from certd.config import Config
from certd.pki.csr import csr_matches_key, load_csr
from certd.pki.importing import import_chain, key_matches
from certd.pki.keys import load_private_key
from certd.store.crypto import Keyring
from tests.daemon import make_config, write_config
from tests.testbed import NamedServer, PebbleServer

KILLS = int(os.environ.get("CERTD_CRASH_KILLS", "3"))
SEED = int(
    os.environ.get("CERTD_CRASH_SEED", str(random.SystemRandom().randrange(2**32)))
)
PIPELINES = 3


class Daemon:
    """One ``certd serve`` process after another on the same state."""

    def __init__(self, config: Config, directory: Path) -> None:
        self.config = config
        self.config_path = write_config(directory / "certd.toml", config)
        self.log_path = directory / "certd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
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
            )

    async def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(self._ready):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("certd did not start:\n" + self.log_tail())
            await asyncio.sleep(0.05)

    def _ready(self) -> bool:
        path = self.config.server.unix_socket
        assert path is not None
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(2)
        try:
            sock.connect(str(path))
            sock.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
        except OSError:
            return False
        finally:
            sock.close()

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def client(self) -> Client:
        assert self.config.server.unix_socket is not None
        return Client(socket=self.config.server.unix_socket)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


async def call_job(client: Client, method: str, params: dict[str, Any]) -> Any:
    job_id = await client.call(method, params)
    return await client.wait_job(job_id)


async def pipeline(
    daemon: Daemon, authenticator: int, pebble: PebbleServer, name: str
) -> None:
    """A CSR and then its ACME certificate; cut short wherever the kill lands."""
    async with daemon.client() as client:
        csr = await call_job(
            client,
            "certificate.create",
            {
                "name": f"{name}-csr",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "ec_curve": "SECP256R1",
                "san": [f"{name}.example.test"],
            },
        )
        await call_job(
            client,
            "certificate.create",
            {
                "name": name,
                "create_type": "CERTIFICATE_CREATE_ACME",
                "csr_id": csr["id"],
                "acme_directory_uri": pebble.directory_url,
                "tos": True,
                "dns_mapping": {f"{name}.example.test": authenticator},
            },
        )


def check_store(state_dir: Path) -> dict[str, int]:
    """The invariants that must hold after any kill; returns row counts."""
    ring = Keyring(base64.b64decode((state_dir / "master.key").read_text()))
    uri = f"file:{state_dir / 'certd.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        stuck = conn.execute(
            "SELECT id, method, state FROM job WHERE state IN ('RUNNING', 'WAITING')"
        ).fetchall()
        assert stuck == [], stuck
        assert conn.execute("SELECT fqdn, value FROM challenge_record").fetchall() == []
        rows = conn.execute(
            "SELECT name, cert_type, certificate, csr, privatekey, csr_id FROM certificate"
        ).fetchall()
    serials: set[int] = set()
    sources: set[int] = set()
    counts = {"CERTIFICATE": 0, "CSR": 0}
    for name, cert_type, certificate, csr, sealed, csr_id in rows:
        key = load_private_key(ring.open(sealed, "certificate", "privatekey"))
        if cert_type == "CSR":
            assert csr_matches_key(load_csr(csr), key), name
        else:
            chain = import_chain(certificate)
            assert key_matches(chain[0], key), name
            assert chain[0].serial_number not in serials, f"{name} issued twice"
            serials.add(chain[0].serial_number)
            assert csr_id not in sources, f"a second certificate from CSR {csr_id}"
            sources.add(csr_id)
            chain[0].fingerprint(hashes.SHA256())
        counts[cert_type] += 1
    return counts


def check_dns(named: NamedServer, names: list[str]) -> None:
    for name in names:
        assert named.query(f"_acme-challenge.{name}.example.test") == [], name


async def test_sigkill_during_issuance_leaves_a_consistent_store(
    tmp_path: Path, named: NamedServer, pebble: PebbleServer
) -> None:
    rng = random.Random(SEED)
    print(f"CERTD_CRASH_SEED={SEED} CERTD_CRASH_KILLS={KILLS}")
    state = tmp_path / "state"
    config = make_config(
        state, named=named, pebble=pebble, log={"level": "info", "format": "json"}
    )
    daemon = Daemon(config, tmp_path)
    daemon.spawn()
    await daemon.wait_ready()
    async with daemon.client() as client:
        authenticator = (
            await client.call(
                "acme.dns.authenticator.create",
                {"name": "bind", "attributes": named.rfc2136_attributes()},
            )
        )["id"]

    names: list[str] = []
    kills = 0
    for round_ in range(KILLS):
        if round_ and rng.random() < 0.2:
            # A kill while the daemon starts: migrations, key loading, clean-up.
            daemon.spawn()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            daemon.kill()
            daemon.spawn()
            await daemon.wait_ready()
        elif round_:
            daemon.spawn()
            await daemon.wait_ready()
        check_store(state)
        check_dns(named, names)

        batch = [f"r{round_}-{i}" for i in range(PIPELINES)]
        names.extend(batch)
        tasks = [
            asyncio.create_task(pipeline(daemon, authenticator, pebble, name))
            for name in batch
        ]
        await asyncio.sleep(rng.uniform(0.05, 3.0))
        daemon.kill()
        kills += 1
        await asyncio.gather(*tasks, return_exceptions=True)

    daemon.spawn()
    await daemon.wait_ready()
    check_store(state)
    check_dns(named, names)
    # After all the kills the daemon still issues.
    await pipeline(daemon, authenticator, pebble, "final")
    counts = check_store(state)
    daemon.stop()
    assert kills == KILLS
    assert counts["CERTIFICATE"] >= 1
    log = daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in log, daemon.log_tail()
