"""Certificates issued through the API carry a host-name CN as their SAN."""

from __future__ import annotations

from typing import Any

from cryptography import x509

from certd.client import Client
from tests.daemon import call_job
from tests.pki.conftest import OpenSSL
from tests.pki_api.conftest import leaf_of, make_intermediate, make_root


async def internal(client: Client, ca: int, name: str, **fields: Any) -> Any:
    """An internal certificate without a profile: no SAN unless ``fields`` give one."""
    data = {
        "name": name,
        "create_type": "CERTIFICATE_CREATE_INTERNAL",
        "signedby": ca,
        "lifetime": 30,
    }
    return await call_job(client, "certificate.create", {**data, **fields})


async def queried(client: Client, entry_id: int) -> dict[str, Any]:
    """The entry as ``certificate.query`` returns it."""
    (entry,) = await client.call("certificate.query", [["id", "=", entry_id]])
    return entry  # type: ignore[no-any-return]


def openssl_san(openssl: OpenSSL, entry: dict[str, Any]) -> str:
    """The leaf's SAN as ``openssl x509 -ext subjectAltName`` prints it, or ''."""
    path = openssl.write(f"{entry['name']}.pem", entry["certificate"])
    out = openssl.run("x509", "-noout", "-ext", "subjectAltName", "-in", path)
    # Nothing is printed without a SAN, a note without any extension at all.
    if not out.strip() or out.startswith("No extensions"):
        return ""
    header, _, value = out.partition("\n")
    assert header.strip() == "X509v3 Subject Alternative Name:"
    return value.strip()


async def test_internal_certificate_gets_its_common_name_as_san(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)

    dns = await internal(client, root["id"], "nas", common="nas.example.lan")
    wildcard = await internal(client, root["id"], "wild", common="*.example.lan")
    ip = await internal(client, root["id"], "ip", common="192.0.2.10")
    ipv6 = await internal(client, root["id"], "ip6", common="2001:db8::a")

    assert openssl_san(openssl, dns) == "DNS:nas.example.lan"
    assert openssl_san(openssl, wildcard) == "DNS:*.example.lan"
    assert openssl_san(openssl, ip) == "IP Address:192.0.2.10"
    assert openssl_san(openssl, ipv6) == "IP Address:2001:DB8:0:0:0:0:0:A"
    # The entry's san is read from the certificate, in the job's result and
    # in certificate.query alike.
    expected = {
        dns["id"]: ["DNS:nas.example.lan"],
        wildcard["id"]: ["DNS:*.example.lan"],
        ip["id"]: ["IP:192.0.2.10"],
        ipv6["id"]: ["IP:2001:db8::a"],
    }
    for entry in (dns, wildcard, ip, ipv6):
        assert entry["san"] == expected[entry["id"]]
        assert (await queried(client, entry["id"]))["san"] == expected[entry["id"]]
    assert (dns["common"], dns["DN"]) == ("nas.example.lan", "CN=nas.example.lan")
    ext = leaf_of(dns).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ext.critical is False


async def test_common_name_that_names_no_host_still_issues_without_san(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)

    entry = await internal(client, root["id"], "plain", common="My Server")

    assert entry["common"] == "My Server"
    assert entry["san"] == []
    assert (await queried(client, entry["id"]))["san"] == []
    assert "SubjectAlternativeName" not in entry["extensions"]
    assert openssl_san(openssl, entry) == ""


async def test_explicit_san_is_kept_exactly(client: Client, openssl: OpenSSL) -> None:
    root = await make_root(client)

    entry = await internal(
        client,
        root["id"],
        "given",
        common="nas.example.lan",
        san=["files.example.lan", "IP:192.0.2.11"],
    )

    assert entry["san"] == ["DNS:files.example.lan", "IP:192.0.2.11"]
    assert openssl_san(openssl, entry) == (
        "DNS:files.example.lan, IP Address:192.0.2.11"
    )


async def test_certificate_authorities_get_no_san(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client, common="ca.example.lan")
    inter = await make_intermediate(client, root["id"], common="issuing.example.lan")

    for ca in (root, inter):
        assert ca["san"] == []
        assert "SubjectAlternativeName" not in ca["extensions"]
        assert openssl_san(openssl, ca) == ""


async def test_signed_csr_without_san_gets_its_common_name(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    key = openssl.workdir / "req.key"
    csr = openssl.run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-subj", "/O=Example/CN=app.example.lan",
    )  # fmt: skip
    stored = await call_job(
        client,
        "certificate.create",
        {
            "name": "req",
            "create_type": "CERTIFICATE_CREATE_IMPORTED_CSR",
            "CSR": csr,
            "privatekey": key.read_text(),
        },
    )

    signed = await client.call(
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": stored["id"], "name": "app"},
    )

    assert stored["san"] == []
    assert signed["san"] == ["DNS:app.example.lan"]
    assert (await queried(client, signed["id"]))["san"] == ["DNS:app.example.lan"]
    assert openssl_san(openssl, signed) == "DNS:app.example.lan"
    out = openssl.run(
        "verify", "-x509_strict", "-purpose", "sslserver",
        "-verify_hostname", "app.example.lan",
        "-CAfile", openssl.write("root.pem", root["certificate"]),
        openssl.write("app-leaf.pem", signed["chain_list"][0]),
    )  # fmt: skip
    assert out.endswith("app-leaf.pem: OK\n")


async def test_renewal_keeps_the_san_taken_from_the_common_name(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    entry = await internal(client, root["id"], "nas", common="nas.example.lan")

    await call_job(client, "certificate.renew", entry["id"])
    renewed = await client.call("certificate.get_instance", entry["id"])

    assert renewed["serial"] != entry["serial"]
    old, new = leaf_of(entry), leaf_of(renewed)
    assert new.public_key() != old.public_key()  # a new key, signed again
    assert renewed["san"] == ["DNS:nas.example.lan"]
    assert openssl_san(openssl, {**renewed, "name": "renewed"}) == (
        "DNS:nas.example.lan"
    )
