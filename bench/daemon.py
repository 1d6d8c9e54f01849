"""certd as the bench runs it: ``certd serve`` in its own process, on the bed."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certd.client import Client
from tests.daemon import DaemonProcess, daemon_process, make_config
from tests.testbed import NamedServer, PebbleServer


class BenchError(RuntimeError):
    """A benchmark step failed; the figure would be meaningless."""


@dataclass
class Certd:
    """A running daemon and what the bench needs to reach it."""

    process: DaemonProcess
    api_key: str
    http_port: int
    directory_url: str
    authenticator_id: int = 0

    @property
    def pid(self) -> int:
        return self.process.process.pid

    @property
    def socket(self) -> Path:
        path = self.process.config.server.unix_socket
        assert path is not None
        return path

    def client(self) -> Client:
        """A client over the unix socket (no key needed as the same user)."""
        return Client(socket=self.socket, timeout=900)

    def memory(self) -> dict[str, float]:
        """Resident and peak resident memory of the daemon process, in MB."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = round(int(rest.split()[0]) / 1024, 1)
        return {"rss_mb": values["VmRSS"], "peak_rss_mb": values["VmHWM"]}


def _http_port(process: DaemonProcess) -> int:
    for line in process.log_lines():
        if '"http_listening"' in line:
            return int(json.loads(line)["port"])
    raise BenchError("the daemon logged no http_listening line")


def _api_key(config_path: Path) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "certd",
            "apikey",
            "create",
            f"bench-{secrets.token_hex(3)}",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise BenchError(f"certd apikey create failed: {out.stderr[-500:]}")
    return out.stdout.strip().splitlines()[-1]


@asynccontextmanager
async def running_certd(
    directory: Path,
    named: NamedServer,
    pebble: PebbleServer,
    *,
    authenticator: bool = True,
) -> AsyncIterator[Certd]:
    """Start certd on the production defaults (info logs, renewal on) on the bed."""
    config = make_config(
        directory / "state",
        named=named,
        pebble=pebble,
        log={"level": "info", "format": "json"},
        renewal={"enabled": True},
    )
    with ExitStack() as stack:
        process = stack.enter_context(daemon_process(config, directory))
        certd = Certd(
            process,
            _api_key(process.config_path),
            _http_port(process),
            pebble.directory_url,
        )
        if authenticator:
            async with certd.client() as client:
                created = await client.call(
                    "acme.dns.authenticator.create",
                    {"name": "bind", "attributes": named.rfc2136_attributes()},
                )
            certd.authenticator_id = created["id"]
        yield certd


async def wait_job(client: Client, job_id: int) -> Any:
    """The result of a job; BenchError when it did not succeed."""
    job = await client.call("core.job_wait", job_id, 600)
    if job["state"] != "SUCCESS":
        raise BenchError(
            f"job {job_id} ({job['method']}) ended {job['state']}: {job['error']}"
        )
    return job["result"]


async def create_csr(
    client: Client, name: str, san: list[str], key: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new key and CSR in the daemon (EC P-256 unless ``key`` says otherwise)."""
    options = key or {"key_type": "EC", "ec_curve": "SECP256R1"}
    job_id = await client.call(
        "certificate.create",
        {"name": name, "create_type": "CERTIFICATE_CREATE_CSR", "san": san, **options},
    )
    result: dict[str, Any] = await wait_job(client, job_id)
    return result


async def issue(
    client: Client, certd: Certd, name: str, san: list[str]
) -> dict[str, Any]:
    """A key, a CSR and an ACME certificate for ``san``, as a user of the API does."""
    csr = await create_csr(client, f"{name}-csr", san)
    job_id = await client.call(
        "certificate.create",
        {
            "name": name,
            "create_type": "CERTIFICATE_CREATE_ACME",
            "csr_id": csr["id"],
            "acme_directory_uri": certd.directory_url,
            "tos": True,
            "dns_mapping": {domain: certd.authenticator_id for domain in san},
        },
    )
    result: dict[str, Any] = await wait_job(client, job_id)
    if result.get("cert_type") != "CERTIFICATE" or not result.get("certificate"):
        raise BenchError(f"{name}: the job returned no certificate")
    return result
