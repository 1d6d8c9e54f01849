"""Imports through the API: every accepted shape stored right, every refusal clean."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import SecretStr

from certd.api.pki_import import read_checked_key
from certd.client import Client
from certd.errors import ValidationError
from certd.pki.export import to_pkcs12
from certd.pki.keycheck import INCONSISTENT
from certd.pki.keys import (
    PrivateKey,
    load_private_key,
    private_key_to_pem,
    public_key_der,
)
from certd.store.models import CertificateAuthority
from tests.daemon import RunningDaemon, call_job
from tests.pki.conftest import (
    Issued,
    MakeCa,
    MakeCert,
    MakeKey,
    OpenSSL,
    broken_crt,
    oversized_rsa_pem,
)
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_root,
    snapshot,
)


@dataclass
class Corpus:
    """A root, an intermediate and a leaf from the PKI tests' factories."""

    root: Issued
    inter: Issued
    leaf: Issued
    make_cert: MakeCert
    make_key: MakeKey
    openssl: OpenSSL

    def leaf_with(self, key: PrivateKey) -> Issued:
        return self.make_cert(issuer=self.inter, key=key)


@pytest.fixture
def corpus(
    make_ca: MakeCa, make_cert: MakeCert, make_key: MakeKey, openssl: OpenSSL
) -> Corpus:
    root = make_ca("Root")
    inter = make_ca("Inter", parent=root, lifetime_days=1000)
    leaf = make_cert(issuer=inter)
    return Corpus(root, inter, leaf, make_cert, make_key, openssl)


def traditional(key: PrivateKey, password: bytes | None = None) -> str:
    """PKCS#1 for RSA, SEC1 for EC, optionally with OpenSSL's legacy encryption."""
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    ).decode()


Shape = tuple[str, str, str | None, Issued]
"""certificate text, key text, passphrase, the leaf it holds."""


def leaf_first(c: Corpus) -> Shape:
    return (
        c.leaf.pem + c.inter.pem + c.root.pem,
        private_key_to_pem(c.leaf.key),
        None,
        c.leaf,
    )


def root_first(c: Corpus) -> Shape:
    return (
        c.root.pem + c.inter.pem + c.leaf.pem,
        private_key_to_pem(c.leaf.key),
        None,
        c.leaf,
    )


def middle_first(c: Corpus) -> Shape:
    return (
        c.inter.pem + c.leaf.pem + c.root.pem,
        private_key_to_pem(c.leaf.key),
        None,
        c.leaf,
    )


def leaf_alone(c: Corpus) -> Shape:
    return c.leaf.pem, private_key_to_pem(c.leaf.key), None, c.leaf


def crlf_and_text(c: Corpus) -> Shape:
    text = (
        "subject=CN=Inter\nissuer=CN=Root\n"
        + c.inter.pem
        + "\n# the leaf\n"
        + c.leaf.pem.replace("\n", "\n    ")
        + "trailing words\n"
    ).replace("\n", "\r\n")
    key = ("Key Attributes: <No Attributes>\n" + traditional(c.leaf.key)).replace(
        "\n", "\r\n"
    )
    return text, key, None, c.leaf


def pkcs12_dump(c: Corpus) -> Shape:
    p12 = c.openssl.write(
        "in.p12", to_pkcs12(c.leaf.cert, c.leaf.key, [c.inter.cert, c.root.cert], "pw")
    )
    dump = c.openssl.run("pkcs12", "-in", p12, "-passin", "pass:pw", "-nodes")
    assert "Bag Attributes" in dump
    return dump, dump, None, c.leaf


def x509_text(c: Corpus) -> Shape:
    text = c.openssl.run("x509", "-text", "-in", c.openssl.write("l.pem", c.leaf.pem))
    return text, private_key_to_pem(c.leaf.key), None, c.leaf


def pkcs1_rsa(c: Corpus) -> Shape:
    leaf = c.leaf_with(c.make_key("RSA"))
    key = traditional(leaf.key)
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    return leaf.pem, key, None, leaf


def sec1_ec(c: Corpus) -> Shape:
    key = traditional(c.leaf.key)
    assert key.startswith("-----BEGIN EC PRIVATE KEY-----")
    return c.leaf.pem, key, None, c.leaf


def ec_parameters(c: Corpus) -> Shape:
    pem = c.openssl.run("ecparam", "-name", "prime256v1", "-genkey")
    assert pem.startswith("-----BEGIN EC PARAMETERS-----")
    leaf = c.leaf_with(load_private_key(pem))
    return leaf.pem, pem, None, leaf


def encrypted_pkcs8(c: Corpus) -> Shape:
    key = private_key_to_pem(c.leaf.key, passphrase="correct horse")
    assert key.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    return c.leaf.pem, key, "correct horse", c.leaf


def encrypted_legacy(c: Corpus) -> Shape:
    key = traditional(c.leaf.key, b"s3cret")
    assert "Proc-Type: 4,ENCRYPTED" in key
    return c.leaf.pem, key, "s3cret", c.leaf


def ed25519_key(c: Corpus) -> Shape:
    leaf = c.leaf_with(c.make_key("ED25519"))
    return leaf.pem, private_key_to_pem(leaf.key), None, leaf


ACCEPTED: list[Callable[[Corpus], Shape]] = [
    leaf_first,
    root_first,
    middle_first,
    leaf_alone,
    crlf_and_text,
    pkcs12_dump,
    x509_text,
    pkcs1_rsa,
    sec1_ec,
    ec_parameters,
    encrypted_pkcs8,
    encrypted_legacy,
    ed25519_key,
]


@pytest.mark.parametrize("shape", ACCEPTED, ids=lambda f: f.__name__)
async def test_accepted_import_shapes(
    client: Client, corpus: Corpus, shape: Callable[[Corpus], Shape]
) -> None:
    certificate, key, passphrase, leaf = shape(corpus)

    entry = await call_job(
        client,
        "certificate.create",
        {
            "name": "imported",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": certificate,
            "privatekey": key,
            "passphrase": passphrase,
        },
    )
    exported = await client.call("certificate.export", entry["id"])

    given = certificate.count("BEGIN CERTIFICATE")
    expected = [leaf.cert, corpus.inter.cert, corpus.root.cert][:given]
    assert entry["chain_list"] == [
        c.public_bytes(Encoding.PEM).decode() for c in expected
    ]
    assert entry["create_type"] == "CERTIFICATE_CREATE_IMPORTED"
    assert entry["parsed"] is True and entry["has_privatekey"] is True
    assert (entry["signedby"], entry["issuer"]) == (None, "external")
    assert entry["issuer_dn"] == "CN=Inter"
    # The factories' clock is in the past; an expired import is still taken.
    assert entry["expired"] is True
    stored_key = exported["privatekey"]
    assert stored_key.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert public_key_der(load_private_key(stored_key)) == public_key_der(leaf.key)


@pytest.fixture
async def refusals(corpus: Corpus) -> list[tuple[str, dict[str, Any], str, str]]:
    c = corpus
    plain_key = private_key_to_pem(c.leaf.key)
    der = c.leaf.cert.public_bytes(Encoding.DER)
    other = c.make_key("EC", fresh=True)
    short_rsa = c.openssl.run(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"
    )
    return [
        (
            "key of another certificate",
            {"certificate": c.leaf.pem, "privatekey": private_key_to_pem(other)},
            "data.privatekey",
            "the private key does not match the certificate (CN=a.example)",
        ),
        (
            "the intermediate's key",
            {
                "certificate": c.leaf.pem + c.inter.pem,
                "privatekey": private_key_to_pem(c.inter.key),
            },
            "data.privatekey",
            "the private key does not match the certificate",
        ),
        (
            "wrong passphrase",
            {
                "certificate": c.leaf.pem,
                "privatekey": private_key_to_pem(c.leaf.key, "right"),
                "passphrase": "wrong",
            },
            "data.passphrase",
            "the passphrase does not decrypt the private key",
        ),
        (
            "missing passphrase",
            {"certificate": c.leaf.pem, "privatekey": traditional(c.leaf.key, b"pw")},
            "data.passphrase",
            "the private key is encrypted; a passphrase is required",
        ),
        (
            "DER certificate",
            {"certificate": der.decode("latin-1"), "privatekey": plain_key},
            "data.certificate",
            "looks like binary DER; give it in PEM form",
        ),
        (
            "DER key",
            {
                "certificate": c.leaf.pem,
                "privatekey": c.leaf.key.private_bytes(
                    Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode("latin-1"),
            },
            "data.privatekey",
            "looks like binary DER",
        ),
        (
            "garbage",
            {"certificate": "hello world", "privatekey": plain_key},
            "data.certificate",
            "no PEM certificate found in the input",
        ),
        (
            "broken base64",
            {
                "certificate": "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n"
                "-----END CERTIFICATE-----\n",
                "privatekey": plain_key,
            },
            "data.certificate",
            "certificate 0 cannot be read",
        ),
        (
            "a key where the certificate goes",
            {"certificate": plain_key, "privatekey": plain_key},
            "data.certificate",
            "no certificate found; the input holds a PRIVATE KEY block instead",
        ),
        (
            "gap",
            {"certificate": c.leaf.pem + c.root.pem, "privatekey": plain_key},
            "data.certificate",
            "the certificates form 2 separate chains instead of one",
        ),
        (
            "duplicate",
            {
                "certificate": c.leaf.pem + c.inter.pem + c.leaf.pem,
                "privatekey": plain_key,
            },
            "data.certificate",
            "certificate 2 (CN=a.example) repeats certificate 0",
        ),
        (
            "a CA certificate",
            {"certificate": c.inter.pem, "privatekey": private_key_to_pem(c.inter.key)},
            "data.certificate",
            "this is a CA certificate; import it with certificateauthority.create",
        ),
        (
            "short RSA key",
            {"certificate": c.leaf.pem, "privatekey": short_rsa},
            "data.privatekey",
            "the RSA key has 1024 bits; at least 2048 are required",
        ),
        (
            "two keys",
            {
                "certificate": c.leaf.pem,
                "privatekey": plain_key + private_key_to_pem(other),
            },
            "data.privatekey",
            "found 2 private keys; give exactly one",
        ),
        (
            "no key",
            {"certificate": c.leaf.pem},
            "data.privatekey",
            "required: the certificate's private key, or csr_id",
        ),
        ("no certificate", {"privatekey": plain_key}, "data.certificate", "required"),
    ]


async def test_refused_imports_name_the_field_and_store_nothing(
    client: Client, refusals: list[tuple[str, dict[str, Any], str, str]]
) -> None:
    await make_root(client)
    before = await snapshot(client)

    for label, data, field, message in refusals:
        error = await expect_error(
            client,
            "certificate.create",
            {"name": "imp", "create_type": "CERTIFICATE_CREATE_IMPORTED", **data},
        )
        assert error.code == -32602, label
        assert fields(error) == [field], label
        assert message in error.message, (label, error.message)
        # Refusals quote no PEM back, key material least of all.
        assert "-----BEGIN" not in str(error.data).replace("(-----BEGIN ...-----)", "")

    assert await snapshot(client) == before


async def test_import_of_a_certificate_for_a_stored_csr(
    client: Client, openssl: OpenSSL
) -> None:
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": "request",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "common": "svc.example",
            "san": ["svc.example"],
        },
    )
    ca_key = openssl.workdir / "ca.key"
    ca_pem = openssl.workdir / "ca.pem"
    openssl.run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-subj", "/CN=Outside CA", "-days", "30", "-noenc",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-keyout", ca_key, "-out", ca_pem,
    )  # fmt: skip
    signed = openssl.run(
        "x509", "-req", "-in", openssl.write("r.csr", csr["CSR"]), "-days", "20",
        "-CA", ca_pem, "-CAkey", ca_key, "-copy_extensions", "copy",
    )  # fmt: skip
    before = await snapshot(client)
    other = await expect_error(
        client,
        "certificate.create",
        {
            "name": "wrong",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": ca_pem.read_text(),
            "csr_id": csr["id"],
        },
    )
    assert await snapshot(client) == before

    entry = await call_job(
        client,
        "certificate.create",
        {
            "name": "svc",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": signed + ca_pem.read_text(),
            "csr_id": csr["id"],
        },
    )

    assert fields(other) == ["data.certificate"]
    assert (entry["csr_id"], entry["CSR"]) == (csr["id"], csr["CSR"])
    assert (entry["issuer"], entry["issuer_dn"]) == ("external", "CN=Outside CA")
    assert entry["san"] == ["DNS:svc.example"]
    assert len(entry["chain_list"]) == 2


def csr_pem(openssl: OpenSSL, passphrase: str | None) -> tuple[str, str]:
    key = openssl.workdir / "csr.key"
    args = ["-passout", f"pass:{passphrase}"] if passphrase else ["-noenc"]
    csr = openssl.run(
        "req", "-new", "-newkey", "rsa:2048", "-subj", "/CN=imported.example/O=Ext",
        "-addext", "subjectAltName=DNS:imported.example,IP:192.0.2.9",
        "-keyout", key, *args,
    )  # fmt: skip
    return csr, key.read_text()


async def test_imported_csr_with_an_encrypted_key(
    client: Client, openssl: OpenSSL
) -> None:
    csr, key = csr_pem(openssl, "pw")

    entry = await call_job(
        client,
        "certificate.create",
        {
            "name": "ext-csr",
            "create_type": "CERTIFICATE_CREATE_IMPORTED_CSR",
            "CSR": csr.replace("\n", "\r\n"),
            "privatekey": key,
            "passphrase": "pw",
        },
    )

    assert entry["cert_type"] == "CSR" and entry["cert_type_CSR"] is True
    assert entry["create_type"] == "CERTIFICATE_CREATE_IMPORTED_CSR"
    assert entry["CSR"] == csr
    assert entry["certificate"] is None and entry["has_privatekey"] is True
    assert (entry["common"], entry["organization"]) == ("imported.example", "Ext")
    assert entry["san"] == ["DNS:imported.example", "IP:192.0.2.9"]
    assert (entry["key_type"], entry["key_length"], entry["digest_algorithm"]) == (
        "RSA",
        2048,
        "SHA256",
    )
    for absent in ("serial", "not_valid_after", "fingerprint_sha256", "issuer"):
        assert entry[absent] is None, absent


async def test_refused_csr_imports(client: Client, openssl: OpenSSL) -> None:
    csr, key = csr_pem(openssl, None)
    other_csr, other_key = csr_pem(openssl, None)
    der = x509.load_pem_x509_csr(csr.encode()).public_bytes(Encoding.DER)
    base = {"name": "c", "create_type": "CERTIFICATE_CREATE_IMPORTED_CSR"}
    before = await snapshot(client)
    cases = [
        (
            {"CSR": csr, "privatekey": other_key},
            "data.privatekey",
            "does not match the CSR",
        ),
        ({"CSR": csr + other_csr, "privatekey": key}, "data.CSR", "found 2 CSRs"),
        ({"CSR": der.decode("latin-1"), "privatekey": key}, "data.CSR", "binary DER"),
        (
            {"CSR": "nonsense", "privatekey": key},
            "data.CSR",
            "no PEM certificate signing request",
        ),
        ({"privatekey": key}, "data.CSR", "required"),
        ({"CSR": csr}, "data.privatekey", "required: the CSR's private key"),
    ]
    for data, field, message in cases:
        error = await expect_error(client, "certificate.create", {**base, **data})
        assert fields(error) == [field], data.keys()
        assert message in error.message, error.message
    assert await snapshot(client) == before


async def test_rsa_keys_over_8192_bits_are_refused_at_the_key_field(
    client: Client, corpus: Corpus
) -> None:
    await make_root(client)
    before = await snapshot(client)
    # Random numbers of RSA-16384 size: a check before the size bound would
    # call the key inconsistent (after some seconds) instead of naming its size.
    big = oversized_rsa_pem(16384)
    calls = [
        (
            "certificateauthority.create",
            {"certificate": corpus.root.pem, "create_type": "CA_CREATE_IMPORTED"},
        ),
        (
            "certificate.create",
            {
                "certificate": corpus.leaf.pem,
                "create_type": "CERTIFICATE_CREATE_IMPORTED",
            },
        ),
    ]

    for method, data in calls:
        error = await expect_error(
            client, method, {"name": "big", "privatekey": big, **data}
        )
        assert error.code == -32602, method
        assert fields(error) == ["data.privatekey"], method
        assert error.message.endswith(
            "the RSA key has 16384 bits; at most 8192 are accepted (larger keys "
            "take seconds to check and to sign with)"
        ), (method, error.message)

    assert await snapshot(client) == before


async def test_an_inconsistent_rsa_key_is_refused_on_import(
    client: Client, make_ca: MakeCa, make_key: MakeKey
) -> None:
    key = make_key("RSA")
    assert isinstance(key, rsa.RSAPrivateKey)
    ca = make_ca("RSA CA", key=key)
    before = await snapshot(client)

    error = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "broken",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": ca.pem,
            "privatekey": private_key_to_pem(broken_crt(key)),
        },
    )

    assert fields(error) == ["data.privatekey"]
    assert "the RSA private key is inconsistent" in error.message
    assert await snapshot(client) == before


async def test_an_imported_rsa_4096_ca_signs_with_its_stored_key_unchecked(
    certd: RunningDaemon, client: Client, make_ca: MakeCa, make_key: MakeKey
) -> None:
    key = make_key("RSA", key_length=4096)
    assert isinstance(key, rsa.RSAPrivateKey)
    ca = make_ca("RSA-4096 CA", key=key)
    entry = await client.call(
        "certificateauthority.create",
        {
            "name": "rsa4096",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": ca.pem,
            "privatekey": private_key_to_pem(key),
        },
    )
    assert (entry["has_privatekey"], entry["crl_number"]) == (True, 1)
    first = await issue(client, entry["id"], "first")
    leaf_of(first).verify_directly_issued_by(ca.cert)

    # The same key with a wrong CRT coefficient fails RSA_check_key yet signs
    # correctly. Stored in place of the imported key, it shows that signing
    # takes a stored key as it is instead of checking it on every load.
    async with certd.daemon.db.session() as session:
        row = await session.get(CertificateAuthority, entry["id"])
        assert row is not None
        row.privatekey = private_key_to_pem(broken_crt(key))

    second = await issue(client, entry["id"], "second")
    leaf_of(second).verify_directly_issued_by(ca.cert)
    await client.call("certificate.update", first["id"], {"revoked": True})
    after = await client.call("certificateauthority.get_instance", entry["id"])
    assert after["crl_number"] == 2
    crl = x509.load_pem_x509_crl(after["crl"].encode())
    assert crl.is_signature_valid(key.public_key())
    revoked = crl.get_revoked_certificate_by_serial_number(leaf_of(first).serial_number)
    assert revoked is not None


async def test_read_checked_key_refuses_before_it_checks(make_key: MakeKey) -> None:
    key = make_key("RSA", key_length=3072)
    small = make_key("RSA")
    assert isinstance(key, rsa.RSAPrivateKey) and isinstance(small, rsa.RSAPrivateKey)

    with pytest.raises(ValidationError) as big:
        await read_checked_key(oversized_rsa_pem(16384), None)
    assert big.value.errors[0].field == "data.privatekey"
    assert "at most 8192 are accepted" in big.value.message

    # checked in a child process (3072 bits), and in the daemon (2048)
    for bad in (broken_crt(key), broken_crt(small)):
        with pytest.raises(ValidationError) as broken:
            await read_checked_key(private_key_to_pem(bad), None, "data.csr_id")
        assert [(e.field, e.message) for e in broken.value.errors] == [
            ("data.csr_id", INCONSISTENT)
        ]

    with pytest.raises(ValidationError) as locked:
        await read_checked_key(private_key_to_pem(key, "pw"), None)
    assert locked.value.errors[0].field == "data.passphrase"

    sound = await read_checked_key(private_key_to_pem(key, "pw"), SecretStr("pw"))
    assert public_key_der(sound) == public_key_der(key)
