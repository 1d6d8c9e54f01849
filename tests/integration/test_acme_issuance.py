"""End to end: the daemon's API gets certificates from pebble through BIND."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certd.client import Client, RpcError
from tests.daemon import RunningDaemon
from tests.integration.orders import make_csr, order_certificate
from tests.testbed import NamedServer, PebbleServer


async def issue(
    client: Client,
    pebble: PebbleServer,
    authenticator_id: int,
    name: str,
    san: list[str],
) -> dict[str, Any]:
    csr_id = await make_csr(client, name, san)
    return await order_certificate(
        client, pebble.directory_url, authenticator_id, name, csr_id, san, renew_days=20
    )


def _openssl_verify(tmp_path: Path, pebble: PebbleServer, fullchain: str) -> str:
    root = tmp_path / "root.pem"
    root.write_text(pebble.issuer_root_pem())
    chain = x509.load_pem_x509_certificates(fullchain.encode())
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(chain[0].public_bytes(Encoding.PEM))
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:]))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(untrusted),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() + result.stderr.strip()


async def test_issue_one_name_and_wildcard_with_apex(
    certd: RunningDaemon,
    named: NamedServer,
    pebble: PebbleServer,
    rfc2136_attributes: dict[str, object],
    tmp_path: Path,
) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        assert "tsig_secret" not in authenticator["attributes"]
        assert authenticator["secrets_set"] == ["tsig_secret"]

        single = await issue(
            client, pebble, authenticator["id"], "one", ["one.example.test"]
        )
        assert single["cert_type"] == "CERTIFICATE"
        assert single["san"] == ["DNS:one.example.test"]
        assert single["parsed"] is True
        assert len(single["chain_list"]) >= 2
        assert single["acme"]["directory"] == pebble.directory_url
        assert single["issuer_dn"].startswith("CN=Pebble Intermediate CA")
        assert re.fullmatch(r"[0-9A-F]+", single["serial"])
        assert single["not_valid_after"].endswith("+00:00")
        assert single["days_left"] > 300
        assert re.fullmatch(
            r"([0-9A-F]{2}:){31}[0-9A-F]{2}", single["fingerprint_sha256"]
        )
        assert single["key_type"] == "EC" and single["ec_curve"] == "SECP256R1"
        assert single["has_privatekey"] is True
        assert "privatekey" not in single
        assert _openssl_verify(tmp_path, pebble, single["certificate"]).endswith(": OK")
        assert named.query("_acme-challenge.one.example.test") == []

        both = await issue(
            client,
            pebble,
            authenticator["id"],
            "wild",
            ["example.test", "*.example.test"],
        )
        assert sorted(both["san"]) == ["DNS:*.example.test", "DNS:example.test"]
        assert _openssl_verify(tmp_path, pebble, both["certificate"]).endswith(": OK")
        assert named.query("_acme-challenge.example.test") == []

        listed = await client.call(
            "certificate.query", [["cert_type", "=", "CERTIFICATE"]]
        )
        assert sorted(entry["name"] for entry in listed) == ["one", "wild"]
        jobs = await client.call(
            "core.get_jobs", [["method", "=", "certificate.create"]]
        )
        assert [job["state"] for job in jobs] == ["SUCCESS"] * 4
        # Job records say what was asked for, and nothing secret.
        names = sorted(job["arguments"]["data"]["name"] for job in jobs)
        assert names == ["one", "one-csr", "wild", "wild-csr"]
        assert all(
            job["arguments"]["data"].get("privatekey") in (None, "********")
            for job in jobs
        )


async def test_force_deleting_a_used_authenticator_unmaps_it(
    certd: RunningDaemon,
    pebble: PebbleServer,
    rfc2136_attributes: dict[str, object],
) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        cert = await issue(
            client, pebble, authenticator["id"], "mapped", ["mapped.example.test"]
        )
        with pytest.raises(RpcError) as caught:
            await client.call("acme.dns.authenticator.delete", authenticator["id"])
        assert "mapped" in caught.value.message
        assert await client.call(
            "acme.dns.authenticator.delete", authenticator["id"], True
        )
        after = await client.call("certificate.get_instance", cert["id"])
        assert after["dns_mapping"] == {}
        assert "was deleted" in after["renewal"]["last_error"]
        # A new authenticator never inherits the old one's certificates.
        fresh = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind2", "attributes": rfc2136_attributes},
        )
        assert fresh["id"] not in after["dns_mapping"].values()
