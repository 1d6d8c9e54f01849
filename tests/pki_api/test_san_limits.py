"""Through the API: at most 100 SANs, and no unspecified address as a host."""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certd.client import Client
from certd.pki.keys import PrivateKey, private_key_to_pem
from tests.daemon import RunningDaemon, call_job
from tests.pki.conftest import cn
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_root,
    snapshot,
)
from tests.pki_api.test_name_rules import new_key, store_csr

UNSPECIFIED = "names no host"


def names(count: int) -> list[str]:
    return [f"host{i}.example.com" for i in range(count)]


def csr_pem(key: PrivateKey, san: list[x509.GeneralName], common: str = "req") -> str:
    """A CSR for ``common``, with a SAN extension only when ``san`` has entries."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(cn(common))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(san), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(Encoding.PEM).decode()


def internal(ca: int, **fields: Any) -> dict[str, Any]:
    """certificate.create's data for an internal certificate without a profile."""
    data = {
        "name": "leaf",
        "create_type": "CERTIFICATE_CREATE_INTERNAL",
        "signedby": ca,
        "lifetime": 30,
    }
    return {**data, **fields}


def imported_csr(key: PrivateKey, pem_text: str) -> dict[str, Any]:
    return {
        "name": "imported",
        "create_type": "CERTIFICATE_CREATE_IMPORTED_CSR",
        "CSR": pem_text,
        "privatekey": private_key_to_pem(key),
    }


def dns_names(count: int) -> list[x509.GeneralName]:
    return [x509.DNSName(name) for name in names(count)]


async def test_more_than_100_sans_are_refused_wherever_names_are_asked_for(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    key = new_key()
    stored = await store_csr(certd, "old", csr_pem(key, dns_names(101)), key)
    before = await snapshot(client)

    cases: list[tuple[str, dict[str, Any], str, int]] = [
        ("certificate.create", internal(root["id"], san=names(3000)), "data.san", 3000),
        ("certificate.create", internal(root["id"], san=names(101)), "data.san", 101),
        (
            "certificate.create",
            {"name": "req", "create_type": "CERTIFICATE_CREATE_CSR", "san": names(101)},
            "data.san",
            101,
        ),
        (
            "certificateauthority.create",
            {
                "name": "ca",
                "create_type": "CA_CREATE_INTERNAL",
                "common": "ca",
                "san": names(101),
            },
            "data.san",
            101,
        ),
        (
            "certificate.create",
            imported_csr(key, csr_pem(key, dns_names(101))),
            "data.CSR",
            101,
        ),
        (
            "certificateauthority.ca_sign_csr",
            {"ca_id": root["id"], "csr_cert_id": stored, "name": "signed"},
            "data.csr_cert_id",
            101,
        ),
    ]
    for method, data, field, count in cases:
        error = await expect_error(client, method, data)
        assert error.code == -32602, (method, field)
        # One error for the list, not one per entry.
        assert fields(error) == [field], (method, field)
        message = error.data["errors"][0]["message"]
        assert f"{count} subject alternative names given" in message
        assert "at most 100" in message

    assert await snapshot(client) == before


async def test_100_sans_are_issued(client: Client) -> None:
    root = await make_root(client)

    entry = await call_job(
        client, "certificate.create", internal(root["id"], san=names(100))
    )

    san = leaf_of(entry).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == names(100)


async def test_unspecified_addresses_are_refused_as_hosts(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    key = new_key()
    unspecified = [
        x509.IPAddress(ipaddress.ip_address("0.0.0.0")),
        x509.IPAddress(ipaddress.ip_address("::")),
    ]
    stored = await store_csr(
        certd, "old", csr_pem(key, [x509.DNSName("ok.example"), *unspecified]), key
    )
    common_only = await store_csr(certd, "cn", csr_pem(key, [], "0.0.0.0"), key)
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificate.create",
        internal(
            root["id"],
            san=[
                "ok.example",
                "IP:0.0.0.0",
                "IP:::",
                "0.0.0.0",
                "::",
                "IP:[::]",
                "::ffff:0.0.0.0",
            ],
        ),
    )
    assert error.code == -32602
    assert fields(error) == [f"data.san.{i}" for i in range(1, 7)]
    messages = [e["message"] for e in error.data["errors"]]
    assert messages[0].startswith("'0.0.0.0' is the unspecified address, which")
    assert messages[1].startswith("'::' is the unspecified address, which")
    assert messages[5].startswith("'::ffff:0:0' is 0.0.0.0 mapped to IPv6")
    assert all(UNSPECIFIED in m for m in messages)
    # A URI's host is checked by the trial signature, after the syntax.
    error = await expect_error(
        client,
        "certificate.create",
        internal(root["id"], san=["URI:https://0.0.0.0:8443/", "https://[::]/status"]),
    )
    assert fields(error) == ["data.san.0", "data.san.1"]
    messages = [e["message"] for e in error.data["errors"]]
    assert messages[0].startswith("'https://0.0.0.0:8443/': '0.0.0.0' is the")
    assert messages[1].startswith("'https://[::]/status': '::' is the")

    # A CSR made here, a CA, and a CN that would become the SAN.
    error = await expect_error(
        client,
        "certificate.create",
        {"name": "req", "create_type": "CERTIFICATE_CREATE_CSR", "san": ["IP:::"]},
    )
    assert fields(error) == ["data.san.0"]
    error = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "ca",
            "create_type": "CA_CREATE_INTERNAL",
            "common": "ca",
            "san": ["0.0.0.0"],
        },
    )
    assert fields(error) == ["data.san.0"]
    error = await expect_error(
        client, "certificate.create", internal(root["id"], common="0.0.0.0")
    )
    assert fields(error) == ["data.common"]
    assert UNSPECIFIED in error.data["errors"][0]["message"]

    # A CSR's own names: imported, or signed from a row stored before the rule.
    error = await expect_error(
        client,
        "certificate.create",
        imported_csr(key, csr_pem(key, [x509.DNSName("ok.example"), *unspecified])),
    )
    assert fields(error) == ["data.CSR", "data.CSR"]
    messages = [e["message"] for e in error.data["errors"]]
    assert messages[0].startswith("subjectAltName entry 1: '0.0.0.0' is the")
    assert messages[1].startswith("subjectAltName entry 2: '::' is the")
    for csr_id in (stored, common_only):
        error = await expect_error(
            client,
            "certificateauthority.ca_sign_csr",
            {"ca_id": root["id"], "csr_cert_id": csr_id, "name": "signed"},
        )
        assert fields(error)[0] == "data.csr_cert_id"
        assert UNSPECIFIED in error.data["errors"][0]["message"]

    assert await snapshot(client) == before


async def test_loopback_and_private_addresses_are_still_hosts(client: Client) -> None:
    root = await make_root(client)
    addresses = [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.1.1",
        "fd00::1",
    ]

    entry = await issue(client, root["id"], san=[f"IP:{a}" for a in addresses])
    from_cn = await call_job(
        client, "certificate.create", internal(root["id"], name="lo", common="::1")
    )

    san = leaf_of(entry).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == (
        addresses
    )
    san = leaf_of(from_cn).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("::1")
    ]


def common_names_csr(key: PrivateKey, count: int) -> str:
    """A CSR whose subject repeats commonName ``count`` times, without SANs."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"h{i}.example.com")
            for i in range(count)
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    signed = csr.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return signed.public_bytes(Encoding.PEM).decode()


async def test_common_names_that_would_be_more_than_100_sans_are_refused(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    key = new_key()
    pem_text = common_names_csr(key, 150)
    stored = await store_csr(certd, "old", pem_text, key)
    before = await snapshot(client)

    imported = await expect_error(
        client, "certificate.create", imported_csr(key, pem_text)
    )
    signed = await expect_error(
        client,
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": stored, "name": "signed"},
    )

    limit = (
        "the common names would be the SAN, but 150 subject alternative names "
        "given; a certificate may carry at most 100, as at public CAs such as "
        "Let's Encrypt"
    )
    assert (imported.code, imported.data["errors"]) == (
        -32602,
        [{"field": "data.CSR", "message": limit, "errno": 22}],
    )
    assert (signed.code, signed.data["errors"]) == (
        -32602,
        [{"field": "data.csr_cert_id", "message": limit, "errno": 22}],
    )
    assert await snapshot(client) == before


async def test_100_common_names_are_signed_as_100_sans(client: Client) -> None:
    root = await make_root(client)
    key = new_key()
    csr = await call_job(
        client, "certificate.create", imported_csr(key, common_names_csr(key, 100))
    )

    entry = await client.call(
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": csr["id"], "name": "signed"},
    )

    san = leaf_of(entry).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        f"h{i}.example.com" for i in range(100)
    ]
