"""Chains and CRLs built by the API, checked by OpenSSL and pkilint."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certd.client import Client
from tests.daemon import RunningDaemon
from tests.pki.conftest import OpenSSL
from tests.pki.pkilint_helpers import crl_errors
from tests.pki_api.conftest import issue, make_intermediate, make_root


def extension_lines(text: str) -> dict[str, str]:
    """``openssl x509 -text`` extensions as {header line: value lines joined}."""
    block = text.split("X509v3 extensions:\n", 1)[1].split("Signature Algorithm")[0]
    result: dict[str, str] = {}
    header = ""
    for line in block.splitlines():
        if line.startswith(" " * 12) and not line.startswith(" " * 16):
            header = line.strip()
            result[header] = ""
        elif header:
            result[header] = (result[header] + " " + line.strip()).strip()
    return result


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` without raising on a refusal."""
    return subprocess.run(
        ["openssl", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


async def test_openssl_verifies_root_intermediate_leaf(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(client, inter["id"])
    root_pem = openssl.write("root.pem", root["certificate"])
    inter_pem = openssl.write("inter.pem", inter["chain_list"][0])
    leaf_pem = openssl.write("leaf.pem", leaf["chain_list"][0])
    stored_chain = openssl.write("chain.pem", "".join(leaf["chain_list"][1:]))

    ok = openssl.run(
        "verify", "-x509_strict", "-purpose", "sslserver",
        "-CAfile", root_pem, "-untrusted", inter_pem, leaf_pem,
    )  # fmt: skip
    from_stored_chain = openssl.run(
        "verify", "-x509_strict", "-CAfile", root_pem, "-untrusted", stored_chain,
        leaf_pem,
    )  # fmt: skip
    without_intermediate = verify("-CAfile", root_pem, leaf_pem)

    assert ok.endswith("leaf.pem: OK\n")
    assert from_stored_chain.endswith("leaf.pem: OK\n")
    assert without_intermediate.returncode != 0
    assert "unable to get local issuer certificate" in without_intermediate.stdout + (
        without_intermediate.stderr
    )


async def test_openssl_shows_the_expected_extensions(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(
        client,
        inter["id"],
        profile="OpenVPN Server Certificate",
        san=["vpn.example.com", "IP:192.0.2.7"],
        common="vpn.example.com",
    )

    inter_text = openssl.run(
        "x509", "-noout", "-text", "-in", openssl.write("i.pem", inter["certificate"])
    )
    leaf_text = openssl.run(
        "x509", "-noout", "-text", "-in", openssl.write("l.pem", leaf["certificate"])
    )

    inter_ext = extension_lines(inter_text)
    assert inter_ext["X509v3 Basic Constraints: critical"] == "CA:TRUE, pathlen:0"
    assert inter_ext["X509v3 Key Usage: critical"] == (
        "Digital Signature, Certificate Sign, CRL Sign"
    )
    assert inter_ext["X509v3 Extended Key Usage:"] == (
        "TLS Web Server Authentication, TLS Web Client Authentication"
    )
    leaf_ext = extension_lines(leaf_text)
    assert leaf_ext == {
        "X509v3 Basic Constraints: critical": "CA:FALSE",
        "X509v3 Key Usage: critical": "Digital Signature, Key Encipherment",
        "X509v3 Extended Key Usage:": "TLS Web Server Authentication",
        "X509v3 Subject Alternative Name:": (
            "DNS:vpn.example.com, IP Address:192.0.2.7"
        ),
        "X509v3 Subject Key Identifier:": leaf["extensions"]["SubjectKeyIdentifier"][
            "key_identifier"
        ],
        "X509v3 Authority Key Identifier:": inter["extensions"]["SubjectKeyIdentifier"][
            "key_identifier"
        ],
    }
    assert "Public Key Algorithm: rsaEncryption" in leaf_text
    assert "Public-Key: (2048 bit)" in leaf_text
    assert "Signature Algorithm: ecdsa-with-SHA256" in leaf_text
    assert f"Serial Number:\n            {leaf['serial'][:2].lower()}" in leaf_text
    hashed = openssl.run("x509", "-noout", "-hash", "-in", openssl.workdir / "l.pem")
    assert hashed.strip() == leaf["subject_name_hash"]


async def fetch(certd: RunningDaemon, path: str) -> tuple[int, str, bytes]:
    """GET a path without any credentials."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(certd.url + path) as response,
    ):
        return response.status, response.content_type, await response.read()


async def test_crl_is_published_over_http_and_verified_by_openssl(
    certd: RunningDaemon, client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    revoked = await issue(client, inter["id"], "revoked")
    good = await issue(client, inter["id"], "good")
    assert revoked["can_be_revoked"] is True

    updated = await client.call(
        "certificate.update",
        revoked["id"],
        {"revoked": True, "revoked_reason": "keyCompromise"},
    )
    ca = await client.call("certificateauthority.get_instance", inter["id"])
    der_status, der_type, der = await fetch(certd, ca["crl_url"])
    pem_status, pem_type, pem = await fetch(certd, ca["crl_pem_url"])
    root_status, _, root_der = await fetch(certd, "/crl/root.crl")

    assert (updated["revoked"], updated["revoked_reason"]) == (True, "keyCompromise")
    assert updated["can_be_revoked"] is False
    assert (der_status, der_type) == (200, "application/pkix-crl")
    assert (pem_status, pem_type) == (200, "application/x-pem-file")
    assert root_status == 200
    assert pem.decode() == ca["crl"]
    crl = x509.load_der_x509_crl(der)
    assert crl == x509.load_pem_x509_crl(pem)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert ca["crl_number"] == 2
    assert [r.serial_number for r in crl] == [int(revoked["serial"], 16)]
    assert crl_errors(crl) == []
    assert ca["revoked_certificates"] == [
        {
            "serial": revoked["serial"],
            "name": "revoked",
            "kind": "certificate",
            "revoked_at": updated["revoked_at"],
            "reason": "keyCompromise",
        }
    ]

    root_pem = openssl.write("root.pem", root["certificate"])
    inter_pem = openssl.write("inter.pem", inter["chain_list"][0])
    crl_der = openssl.write("inter.crl", der)
    checked = openssl.run(
        "crl", "-inform", "DER", "-in", crl_der, "-CAfile", inter_pem, "-verify",
        "-noout", "-text", with_stderr=True,
    )  # fmt: skip
    assert "verify OK" in checked
    assert re.search(r"X509v3 CRL Number:\s+2\b", checked)
    assert "Key Compromise" in checked
    crl_pem = openssl.write("inter.crl.pem", pem)
    root_crl = x509.load_der_x509_crl(root_der).public_bytes(Encoding.PEM)
    both_crls = openssl.write("all.crl.pem", pem + root_crl)
    refused = verify(
        "-crl_check", "-CAfile", root_pem, "-untrusted", inter_pem,
        "-CRLfile", crl_pem, openssl.write("revoked.pem", revoked["chain_list"][0]),
    )  # fmt: skip
    accepted = openssl.run(
        "verify", "-crl_check_all", "-CAfile", root_pem, "-untrusted", inter_pem,
        "-CRLfile", both_crls, openssl.write("good.pem", good["chain_list"][0]),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    assert accepted.endswith("good.pem: OK\n")


async def test_crl_paths_that_do_not_exist(
    certd: RunningDaemon, client: Client
) -> None:
    await make_root(client)
    imported = await client.call("certificateauthority.get_instance", 1)
    await client.call(
        "certificateauthority.create",
        {
            "name": "nokey",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": imported["certificate"],
        },
    )

    for path in ("/crl/nobody.crl", "/crl/nokey.crl", "/crl/root.der", "/crl/..crl"):
        status, _, _ = await fetch(certd, path)
        assert status == 404, path
    async with (
        aiohttp.ClientSession() as session,
        session.head(certd.url + "/crl/root.crl") as response,
    ):
        assert (response.status, response.content_type) == (200, "application/pkix-crl")
        assert int(response.headers["Content-Length"]) > 100
