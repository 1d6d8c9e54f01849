"""Canary secrets go in through the API and come out of no sink.

A real ``certd serve`` runs at debug level, once with JSON and once with
console logs, against the local pebble and BIND. Every kind of secret is set:
TSIG secrets, Cloudflare token and global key, a Route 53 secret key, an EAB
HMAC key, an import passphrase, API keys and private keys. Calls then succeed,
fail in the provider, fail at the CA, and crash with an unexpected exception
(injected by ``faults/sitecustomize.py``). Afterwards every sink is searched:
the daemon's log, every reply (results, errors, job records, queries), CLI
output, and the database file with its WAL.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from certd.client import Client
from certd.pki.keys import private_key_to_pem
from certd.store.crypto import Keyring, is_sealed
from certd.store.masterkey import encrypted_columns
from tests.daemon import daemon_process, make_config
from tests.fakes.cloudflare import FakeCloudflare
from tests.hardening.conftest import database_path, raw_store_bytes
from tests.hardening.test_access import self_signed
from tests.testbed import NamedServer, PebbleServer, free_port

FAULTS = Path(__file__).parent / "faults"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Canaries:
    """Secret values set through the API, by what they are."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: str) -> str:
        self.values[label] = value
        return value

    def forms(self) -> Iterator[tuple[str, bytes]]:
        """Each canary as text, and base64 secrets also as their decoded bytes."""
        for label, value in self.values.items():
            yield label, value.encode()
            if label.startswith("pem:"):
                for index, line in enumerate(_pem_body_lines(value)):
                    yield f"{label} line {index}", line.encode()
            elif label.startswith(("tsig", "eab")):
                padded = value + "=" * (-len(value) % 4)
                decoded = base64.urlsafe_b64decode(
                    padded.replace("+", "-").replace("/", "_")
                )
                if len(decoded) >= 12:
                    yield f"{label} decoded", decoded


def _pem_body_lines(pem: str) -> list[str]:
    # Long lines only: the last, short line of a body could match by chance.
    return [
        line for line in pem.splitlines() if len(line) >= 40 and "-----" not in line
    ]


@dataclass
class Sinks:
    """Everything a secret could leak into, as text or bytes."""

    replies: list[str] = field(default_factory=list)
    cli: list[str] = field(default_factory=list)
    log: str = ""
    database: bytes = b""

    def find(self, needle: bytes) -> list[str]:
        text = needle.decode("latin-1")
        found = []
        for name, haystack in (
            ("replies", "\n".join(self.replies)),
            ("cli output", "\n".join(self.cli)),
            ("daemon log", self.log),
        ):
            if text in haystack:
                found.append(name)
        if needle in self.database:
            found.append("database file or WAL")
        return found


class Recorder:
    """Calls the API and keeps every reply body."""

    def __init__(self, client: Client, sinks: Sinks) -> None:
        self.client = client
        self.sinks = sinks

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        _, reply = await self.client.raw(request)
        self.sinks.replies.append(json.dumps(reply))
        return reply  # type: ignore[no-any-return]

    async def result(self, method: str, *params: Any) -> Any:
        reply = await self.call(method, *params)
        assert "result" in reply, (method, reply)
        return reply["result"]

    async def job(self, method: str, *params: Any) -> dict[str, Any]:
        """The finished job's record (or the refusal, if it never started)."""
        reply = await self.call(method, *params)
        if "error" in reply:
            return reply
        return await self.result("core.job_wait", reply["result"], 120)  # type: ignore[no-any-return]


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certd", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def http_port(log_lines: list[str]) -> int:
    for line in log_lines:
        if "http_listening" in line:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
            match = re.search(r"port\W+(\d+)", plain)
            if match:
                return int(match.group(1))
    raise AssertionError("no http_listening line in the log")


async def serve_cloudflare_fake(fake: FakeCloudflare) -> web.AppRunner:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}"
    return runner


def encrypted_key_pem(passphrase: str) -> tuple[str, str, str]:
    """(certificate, key encrypted with passphrase, key in the clear)."""
    cert, key_pem, _ = self_signed("imported.example.test", ca=False)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    ).decode()
    return cert, encrypted, private_key_to_pem(key)  # type: ignore[arg-type]


def stored_private_keys(state_dir: Path) -> list[str]:
    """Every sealed value in the store, opened with the master key."""
    ring = Keyring(base64.b64decode((state_dir / "master.key").read_text()))
    found = []
    with sqlite3.connect(database_path(state_dir)) as conn:
        for table, columns in encrypted_columns().items():
            for column in columns:
                for (value,) in conn.execute(f"SELECT {column} FROM {table}"):
                    if value is not None and is_sealed(value):
                        found.append(ring.open(value, table, column))
    return found


async def drive(
    api: Recorder,
    canaries: Canaries,
    named: NamedServer,
    pebble: PebbleServer,
    cloudflare: FakeCloudflare,
    tag: str,
) -> None:
    """Set every kind of secret and take each path: success, failure, crash."""
    bind = {
        "authenticator": "rfc2136",
        "server": named.host,
        "port": named.port,
        "tsig_key_name": named.tsig_name,
        "tsig_secret": canaries.add("tsig real", named.tsig_secret),
        "tsig_algorithm": named.tsig_algorithm,
    }
    good = await api.result(
        "acme.dns.authenticator.create", {"name": "bind", "attributes": bind}
    )
    bad_tsig = canaries.add("tsig wrong", b64(f"canary wrong tsig {tag} 7f3a9c1e"))
    bad = await api.result(
        "acme.dns.authenticator.create",
        {"name": "badbind", "attributes": {**bind, "tsig_secret": bad_tsig}},
    )
    updated_tsig = canaries.add("tsig updated", b64(f"canary updated tsig {tag} 4be1"))
    await api.result(
        "acme.dns.authenticator.update",
        bad["id"],
        {"attributes": {"tsig_secret": updated_tsig}},
    )
    crash_tsig = canaries.add("tsig crash", b64(f"canary crash tsig {tag} 99d0aa"))
    crashed = await api.call(
        "acme.dns.authenticator.create",
        {
            "name": "crashbind",
            "attributes": {
                **bind,
                "tsig_key_name": "crash-key",
                "tsig_secret": crash_tsig,
            },
        },
    )
    assert crashed["error"]["code"] == -32603, crashed

    cloudflare.add_zone("example.test")
    cloudflare.add_token("a-different-token")
    token = canaries.add("cloudflare token", f"cfcanarytoken{tag}Q8vN2xLm5pR7tY1w")
    global_key = canaries.add("cloudflare global key", f"cfcanaryglobal{tag}0b9a7c")
    cf_token = await api.result(
        "acme.dns.authenticator.create",
        {
            "name": "cftoken",
            "attributes": {
                "authenticator": "cloudflare",
                "api_token": token,
                "api_url": cloudflare.base_url,
            },
        },
    )
    cf_global = await api.result(
        "acme.dns.authenticator.create",
        {
            "name": "cfglobal",
            "attributes": {
                "authenticator": "cloudflare",
                "cloudflare_email": "admin@example.test",
                "api_key": global_key,
                "api_url": cloudflare.base_url,
            },
        },
    )
    both = await api.call(
        "acme.dns.authenticator.create",
        {
            "name": "cfboth",
            "attributes": {
                "authenticator": "cloudflare",
                "api_token": token,
                "cloudflare_email": "admin@example.test",
                "api_key": global_key,
            },
        },
    )
    assert both["error"]["code"] == -32602
    route53_secret = canaries.add("route53 secret", f"r53canary{tag}Wq2Lk9Xz7Vb5Nm3Pd1")
    r53 = await api.result(
        "acme.dns.authenticator.create",
        {
            "name": "r53",
            "attributes": {
                "authenticator": "route53",
                "access_key_id": "AKIACANARYKEYID0001",
                "secret_access_key": route53_secret,
                "endpoint_url": f"http://127.0.0.1:{free_port()}",
                "hosted_zone_id": "Z0000000000000000001",
            },
        },
    )

    probe = await api.job(
        "acme.dns.authenticator.test", good["id"], f"probe-{tag}.example.test"
    )
    assert probe["state"] == "SUCCESS", probe
    for authenticator in (bad, cf_token, cf_global, r53):
        failed = await api.job(
            "acme.dns.authenticator.test",
            authenticator["id"],
            f"fail-{tag}.example.test",
        )
        assert failed["state"] == "FAILED", failed
    crash = await api.job(
        "acme.dns.authenticator.test", good["id"], f"crash.{tag}.example.test"
    )
    assert crash["state"] == "FAILED" and "internal error" in crash["error"], crash

    eab_key = canaries.add("eab hmac", f"ZWFiY2FuYXJ5aG1hY2tleS0{tag}tZm9yLXRlc3Rpbmc")
    registration = await api.job(
        "acme.registration.create",
        {
            "acme_directory_uri": f"https://127.0.0.1:{free_port()}/dir",
            "tos": True,
            "eab_kid": "kid-1",
            "eab_hmac_key": eab_key,
        },
    )
    assert registration.get("state") == "FAILED", registration

    for name in (f"ok-{tag}.example.test", f"crash.{tag}.example.test"):
        csr = await api.job(
            "certificate.create",
            {
                "name": f"csr-{name.split('.')[0]}",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": [name],
            },
        )
        assert csr["state"] == "SUCCESS", csr
        issued = await api.job(
            "certificate.create",
            {
                "name": f"acme-{name.split('.')[0]}",
                "create_type": "CERTIFICATE_CREATE_ACME",
                "csr_id": csr["result"]["id"],
                "acme_directory_uri": pebble.directory_url,
                "tos": True,
                "dns_mapping": {name: good["id"]},
            },
        )
        expected = "FAILED" if name.startswith("crash") else "SUCCESS"
        assert issued["state"] == expected, issued

    passphrase = canaries.add("import passphrase", f"canary-passphrase-{tag}-5c2e91")
    cert, encrypted, clear = encrypted_key_pem(passphrase)
    canaries.add("pem:imported key", clear)
    canaries.add("pem:imported encrypted key", encrypted)
    imported = await api.job(
        "certificate.create",
        {
            "name": "imported",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": cert,
            "privatekey": encrypted,
            "passphrase": passphrase,
        },
    )
    assert imported.get("state") == "SUCCESS", imported
    wrong = await api.job(
        "certificate.create",
        {
            "name": "imported-wrong",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": cert,
            "privatekey": encrypted,
            "passphrase": passphrase + "-wrong",
        },
    )
    assert "error" in wrong or wrong["state"] == "FAILED", wrong

    document = await api.result("rpc.discover")
    for method in sorted(m["name"] for m in document["methods"]):
        if method.endswith(".query") or method == "core.get_jobs":
            for entry in await api.result(method):
                if (
                    isinstance(entry, dict)
                    and "id" in entry
                    and method != "core.get_jobs"
                ):
                    await api.call(
                        method.replace(".query", ".get_instance"), entry["id"]
                    )


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_canaries_reach_no_sink(
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
    monkeypatch: pytest.MonkeyPatch,
    log_format: str,
) -> None:
    canaries = Canaries()
    sinks = Sinks()
    state = tmp_path / "state"
    config = make_config(
        state, named=named, pebble=pebble, log={"level": "debug", "format": log_format}
    )
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    monkeypatch.setenv("CERTD_TEST_FAULTS", "1")
    cloudflare = FakeCloudflare()
    runner = await serve_cloudflare_fake(cloudflare)
    try:
        with daemon_process(config, tmp_path / "run") as process:
            created = cli(process.config_path, "apikey", "create", "canary-user")
            assert created.returncode == 0, created.stderr
            api_key = canaries.add("api key", created.stdout.strip())
            # The one place a key may appear: where it is made. It proves the
            # search finds what is there.
            assert Sinks(cli=[created.stdout]).find(api_key.encode()) == ["cli output"]
            sinks.cli.append(created.stderr)
            url = f"http://127.0.0.1:{http_port(process.log_lines())}"
            wrong_key = canaries.add(
                "wrong api key", "certd_0123456789ab_canaryWrongKey5f1d"
            )
            async with Client(url=url, api_key=wrong_key) as client:
                status, reply = await client.raw(
                    {"jsonrpc": "2.0", "id": 1, "method": "core.ping"}
                )
                assert status == 401
                sinks.replies.append(json.dumps(reply))
            async with Client(url=url, api_key=api_key) as client:
                await drive(
                    Recorder(client, sinks),
                    canaries,
                    named,
                    pebble,
                    cloudflare,
                    log_format,
                )
            for args in (("apikey", "list"), ("call", "core.get_jobs")):
                result = cli(process.config_path, *args)
                assert result.returncode == 0, result.stderr
                sinks.cli.extend([result.stdout, result.stderr])
        sinks.log = process.log_path.read_text(errors="replace")
    finally:
        await runner.cleanup()

    for index, pem in enumerate(stored_private_keys(state)):
        if "PRIVATE KEY" in pem:
            canaries.add(f"pem:stored key {index}", pem)
    sinks.database = raw_store_bytes(state)

    assert "injected fault while publishing" in sinks.log
    assert "injected fault while storing attributes" in sinks.log
    assert sum(label.startswith("pem:stored key") for label in canaries.values) >= 4
    leaks = {
        label: where
        for label, needle in canaries.forms()
        if (where := sinks.find(needle))
    }
    assert leaks == {}
