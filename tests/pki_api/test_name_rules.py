"""Through the API: bad CSR names, name constraints, a CA not valid yet, path lengths."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certd.client import Client
from certd.pki.keys import PrivateKey, private_key_to_pem
from certd.store.models import Certificate
from tests.daemon import RunningDaemon, call_job
from tests.pki.conftest import OpenSSL, cn
from tests.pki_api.conftest import expect_error, fields, issue, leaf_of, snapshot

BAD_SANS: list[x509.GeneralName] = [
    x509.DNSName("*"),
    x509.DNSName("*.*.example.com"),
    x509.DNSName("a..b"),
    x509.DNSName("has space.example.com"),
    x509.DNSName("a" * 300),
    x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
    x509.UniformResourceIdentifier("file:///etc/passwd"),
    x509.DirectoryName(cn("dir")),
    x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x0c\x01a"),
    x509.RegisteredID(x509.ObjectIdentifier("1.2.3.5")),
]


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(key: PrivateKey, names: list[x509.GeneralName]) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(cn("req"))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr.public_bytes(Encoding.PEM).decode()


def ca_pem(
    key: PrivateKey,
    name: str,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    path_length: int | None = None,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
    starts_in: dt.timedelta = -dt.timedelta(days=1),
) -> x509.Certificate:
    """A CA certificate built with cryptography, with what certd cannot make."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn(name))
        .issuer_name(issuer[0].subject if issuer else cn(name))
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + starts_in)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(True, path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if permitted is not None or excluded is not None:
        builder = builder.add_extension(
            x509.NameConstraints(permitted, excluded), critical=True
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


async def import_ca(
    client: Client, name: str, cert: str, key: PrivateKey | None = None
) -> Any:
    data: dict[str, Any] = {
        "name": name,
        "create_type": "CA_CREATE_IMPORTED",
        "certificate": cert,
    }
    if key is not None:
        data["privatekey"] = private_key_to_pem(key)
    return await client.call("certificateauthority.create", data)


async def store_csr(certd: RunningDaemon, name: str, pem_text: str, key: Any) -> int:
    """A CSR row as one imported before its names were checked would be."""
    async with certd.daemon.db.session() as session:
        row = Certificate(
            name=name,
            cert_type="CSR",
            create_type="CERTIFICATE_CREATE_IMPORTED_CSR",
            csr=pem_text,
            privatekey=private_key_to_pem(key),
        )
        session.add(row)
        await session.flush()
        return int(row.id)


async def test_importing_a_csr_with_bad_names_is_refused(client: Client) -> None:
    key = new_key()
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificate.create",
        {
            "name": "bad",
            "create_type": "CERTIFICATE_CREATE_IMPORTED_CSR",
            "CSR": csr_pem(key, [x509.DNSName("ok.example"), *BAD_SANS]),
            "privatekey": private_key_to_pem(key),
        },
    )

    messages = [e["message"] for e in error.data["errors"]]
    assert fields(error) == ["data.CSR"] * len(BAD_SANS)
    assert messages[0].startswith("subjectAltName entry 1: DNS: '*': a wildcard")
    assert "IP:10.0.0.0/8 is a network" in messages[5]
    assert "a file: URI" in messages[6]
    assert "OtherName entry is not accepted" in messages[8]
    # The 300-character label is shown cut, not in full.
    assert "(300 characters)" in messages[4] and len(messages[4]) < 400
    assert await snapshot(client) == before


async def test_a_stored_csr_with_bad_names_is_not_signed(
    certd: RunningDaemon, client: Client
) -> None:
    root = await client.call(
        "certificateauthority.create",
        {"name": "root", "create_type": "CA_CREATE_INTERNAL", "common": "root"},
    )
    key = new_key()
    csr_id = await store_csr(
        certd, "old", csr_pem(key, [x509.DNSName("ok.example"), *BAD_SANS]), key
    )
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": csr_id, "name": "signed"},
    )

    assert fields(error) == ["data.csr_cert_id"] * len(BAD_SANS)
    assert "'*.*.example.com'" in error.data["errors"][1]["message"]
    assert await snapshot(client) == before


async def test_name_constraints_bind_signing_and_internal_certificates(
    certd: RunningDaemon, client: Client
) -> None:
    root_key = new_key()
    root_cert = ca_pem(root_key, "Good Root", permitted=[x509.DNSName("good.test")])
    root = await import_ca(client, "good-root", pem(root_cert), root_key)
    inter = await client.call(
        "certificateauthority.create",
        {
            "name": "inter",
            "create_type": "CA_CREATE_INTERMEDIATE",
            "signedby": root["id"],
            "common": "Inter",
        },
    )
    key = new_key()
    evil = await store_csr(
        certd, "evil", csr_pem(key, [x509.DNSName("evil.example.com")]), key
    )
    good = await store_csr(
        certd, "good", csr_pem(key, [x509.DNSName("www.good.test")]), key
    )

    signed = await client.call(
        "certificateauthority.ca_sign_csr",
        {"ca_id": inter["id"], "csr_cert_id": good, "name": "good-leaf"},
    )
    refused = await expect_error(
        client,
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": evil, "name": "evil-leaf"},
    )
    # The intermediate carries no constraints; its root's bind it.
    below = await expect_error(
        client,
        "certificateauthority.ca_sign_csr",
        {"ca_id": inter["id"], "csr_cert_id": evil, "name": "evil-leaf"},
    )
    internal = await expect_error(
        client,
        "certificate.create",
        {
            "name": "evil-internal",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["evil.example.com"],
        },
    )
    by_cn = await expect_error(
        client,
        "certificate.create",
        {
            "name": "evil-cn",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "HTTPS ECC Certificate",
            "common": "evil.example.com",
        },
    )
    fine = await issue(client, inter["id"], san=["api.good.test"], common="API")

    assert signed["san"] == ["DNS:www.good.test"]
    assert fields(refused) == ["data.csr_cert_id"]
    assert refused.data["errors"][0]["message"] == (
        "'DNS:evil.example.com' is outside the permitted subtrees (DNS:good.test) "
        "of certificate authority 'CN=Good Root' (RFC 5280 4.2.1.10)"
    )
    assert fields(below) == ["data.csr_cert_id"]
    assert "'CN=Good Root'" in below.data["errors"][0]["message"]
    assert fields(internal) == ["data.san"]
    assert "'CN=Good Root'" in internal.data["errors"][0]["message"]
    assert fields(by_cn) == ["data.common"]
    assert leaf_of(fine).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["api.good.test"]


EXAMPLE_ORG = x509.DirectoryName(
    x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")])
)


async def test_a_directory_subtree_matches_an_organization_in_another_case(
    client: Client, openssl: OpenSSL
) -> None:
    root_key = new_key()
    root_cert = ca_pem(root_key, "Org Root", permitted=[EXAMPLE_ORG])
    root = await import_ca(client, "org-root", pem(root_cert), root_key)
    intermediate = {
        "create_type": "CA_CREATE_INTERMEDIATE",
        "signedby": root["id"],
        "common": "Inter",
    }

    inter = await client.call(
        "certificateauthority.create",
        {**intermediate, "name": "inter", "organization": "example  org"},
    )
    leaf = await issue(client, inter["id"], organization="EXAMPLE ORG", common="Leaf")
    before = await snapshot(client)
    refused_ca = await expect_error(
        client,
        "certificateauthority.create",
        {**intermediate, "name": "other", "organization": "Other"},
    )
    refused_leaf = await expect_error(
        client,
        "certificate.create",
        {
            "name": "other-leaf",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["a.example"],
            "organization": "Other",
            "common": "Leaf",
        },
    )

    assert (inter["organization"], leaf["organization"]) == (
        "example  org",
        "EXAMPLE ORG",
    )
    for error in (refused_ca, refused_leaf):
        assert fields(error) == ["data.common"]
        assert error.data["errors"][0]["message"].endswith(
            "O=Other' is outside the permitted subtrees (DirName:O=Example Org) "
            "of certificate authority 'CN=Org Root' (RFC 5280 4.2.1.10)"
        )
    assert await snapshot(client) == before
    ok = openssl.run(
        "verify",
        "-CAfile", openssl.write("root.pem", root["certificate"]),
        "-untrusted", openssl.write("inter.pem", inter["chain_list"][0]),
        openssl.write("leaf.pem", leaf["chain_list"][0]),
    )  # fmt: skip
    assert ok.endswith(": OK\n")


async def test_an_excluded_directory_subtree_refuses_it_in_any_case(
    client: Client,
) -> None:
    root_key = new_key()
    root_cert = ca_pem(root_key, "Org Root", excluded=[EXAMPLE_ORG])
    root = await import_ca(client, "org-root", pem(root_cert), root_key)

    allowed = await issue(client, root["id"], organization="Other", common="Leaf")
    before = await snapshot(client)
    refused = await expect_error(
        client,
        "certificate.create",
        {
            "name": "refused",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["a.example"],
            "organization": " example   ORG",
            "common": "Leaf",
        },
    )

    assert allowed["organization"] == "Other"
    assert fields(refused) == ["data.common"]
    assert (
        "falls within the excluded subtree DirName:O=Example Org"
        in (refused.data["errors"][0]["message"])
    )
    assert await snapshot(client) == before


async def test_a_ca_not_valid_yet_signs_nothing(
    certd: RunningDaemon, client: Client
) -> None:
    key = new_key()
    future = ca_pem(key, "Future CA", starts_in=dt.timedelta(days=100))
    ca = await import_ca(client, "future", pem(future), key)
    csr_key = new_key()
    csr_id = await store_csr(
        certd, "req", csr_pem(csr_key, [x509.DNSName("a.example")]), csr_key
    )
    before = await snapshot(client)

    signing = await expect_error(
        client,
        "certificateauthority.ca_sign_csr",
        {"ca_id": ca["id"], "csr_cert_id": csr_id, "name": "leaf"},
    )
    internal = await expect_error(
        client,
        "certificate.create",
        {
            "name": "leaf",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": ca["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["a.example"],
        },
    )

    start = future.not_valid_before_utc.isoformat()
    message = (
        f"certificate authority 'CN=Future CA' is not valid before {start}; "
        "it cannot sign until then"
    )
    assert [(e["field"], e["message"]) for e in signing.data["errors"]] == [
        ("data.ca_id", message)
    ]
    assert [(e["field"], e["message"]) for e in internal.data["errors"]] == [
        ("data.signedby", message)
    ]
    assert await snapshot(client) == before


async def test_an_intermediate_below_path_length_zero_is_not_imported(
    client: Client,
) -> None:
    root_key, inter_key = new_key(), new_key()
    root = ca_pem(root_key, "Root Zero", path_length=0)
    inter = ca_pem(inter_key, "Inter", issuer=(root, root_key))
    message = (
        "'CN=Root Zero' has path length 0: at most 0 CA certificate(s) may follow "
        "it, but 1 would (RFC 5280 4.2.1.9)"
    )

    # Pasted with its root, certd holding neither.
    pasted = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "inter",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": pem(inter, root),
        },
    )
    # Alone, below the root certd holds.
    held = await import_ca(client, "root-zero", pem(root))
    before = await snapshot(client)
    alone = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "inter",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": pem(inter),
            "privatekey": private_key_to_pem(inter_key),
        },
    )

    assert held["create_type"] == "CA_CREATE_IMPORTED"
    for error in (pasted, alone):
        assert [(e["field"], e["message"]) for e in error.data["errors"]] == [
            ("data.certificate", message)
        ]
    assert await snapshot(client) == before


async def test_an_intermediate_within_its_roots_path_length_is_imported(
    client: Client,
) -> None:
    root_key, inter_key = new_key(), new_key()
    root = ca_pem(root_key, "Root One", path_length=1)
    inter = ca_pem(inter_key, "Inter", issuer=(root, root_key), path_length=0)
    held = await import_ca(client, "root-one", pem(root), root_key)

    entry = await import_ca(client, "inter", pem(inter), inter_key)
    leaf = await call_job(
        client,
        "certificate.create",
        {
            "name": "leaf",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": entry["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["a.example"],
        },
    )

    assert entry["signedby"] == held["id"]
    assert leaf["san"] == ["DNS:a.example"]
