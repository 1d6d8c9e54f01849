"""CSR creation, loading and key matching."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certd.errors import PkiError, ValidationError
from certd.pki.csr import create_csr, csr_matches_key, load_csr
from certd.pki.models import CertExtensions, Subject
from tests.pki.conftest import LEAF_EXTENSIONS, MakeKey, OpenSSL


def pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_create_csr_carries_subject_san_and_extensions(make_key: MakeKey) -> None:
    key = make_key("EC")
    subject = Subject(country="DE", organization="Ex GmbH", common="www.example.com")

    csr = create_csr(
        key, subject, ["www.example.com", "IP:192.0.2.7"], LEAF_EXTENSIONS, "SHA384"
    )

    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)
    assert csr.subject.rfc4514_string() == "CN=www.example.com,O=Ex GmbH,C=DE"
    exts = {type(e.value).__name__: e for e in csr.extensions}
    assert sorted(exts) == [
        "BasicConstraints",
        "ExtendedKeyUsage",
        "KeyUsage",
        "SubjectAlternativeName",
    ]
    assert exts["SubjectAlternativeName"].critical is False
    assert [str(n.value) for n in exts["SubjectAlternativeName"].value] == [
        "www.example.com",
        "192.0.2.7",
    ]
    assert exts["BasicConstraints"].critical is True
    assert exts["BasicConstraints"].value.ca is False
    assert exts["KeyUsage"].critical is True
    assert exts["KeyUsage"].value.digital_signature is True
    assert exts["KeyUsage"].value.key_encipherment is False
    assert exts["ExtendedKeyUsage"].critical is False
    assert list(exts["ExtendedKeyUsage"].value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert csr_matches_key(csr, key)


def test_create_csr_without_common_name_marks_san_critical(make_key: MakeKey) -> None:
    csr = create_csr(
        make_key("ED25519"), Subject(), ["a.example"], CertExtensions(), None
    )

    assert len(csr.subject) == 0
    [ext] = list(csr.extensions)
    assert ext.critical is True
    assert csr.signature_hash_algorithm is None


def test_create_csr_with_only_common_name_has_no_extensions(make_key: MakeKey) -> None:
    csr = create_csr(
        make_key("RSA"), Subject(common="a"), [], CertExtensions(), "SHA256"
    )

    assert list(csr.extensions) == []
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a"


def test_create_csr_needs_common_name_or_san(make_key: MakeKey) -> None:
    with pytest.raises(ValidationError) as info:
        create_csr(
            make_key("EC"), Subject(organization="o"), [], CertExtensions(), None
        )

    assert [(e.field, e.message) for e in info.value.errors] == [
        ("san", "give a common name or at least one subject alternative name")
    ]


def test_create_csr_reports_bad_san_index(make_key: MakeKey) -> None:
    with pytest.raises(ValidationError) as info:
        create_csr(
            make_key("EC"), Subject(), ["a.example", "URI:nope"], CertExtensions(), None
        )

    assert [e.field for e in info.value.errors] == ["san.1"]


def test_openssl_verifies_and_reads_csr(make_key: MakeKey, openssl: OpenSSL) -> None:
    csr = create_csr(
        make_key("RSA"),
        Subject(common="a.example", email="ops@example.com"),
        ["a.example", "email:ops@example.com", "URI:https://a.example/"],
        LEAF_EXTENSIONS,
        "SHA512",
    )
    path = openssl.write("a.csr", pem(csr))

    text = openssl.run("req", "-in", path, "-verify", "-noout", "-text")

    assert "Signature Algorithm: sha512WithRSAEncryption" in text
    assert "DNS:a.example, email:ops@example.com, URI:https://a.example/" in text
    assert re.search(r"Basic Constraints: critical\s+CA:FALSE", text)
    assert re.search(r"Key Usage: critical\s+Digital Signature\n", text)
    assert re.search(r"Extended Key Usage: \n\s+TLS Web Server Authentication", text)


def test_load_csr_accepts_crlf_text_and_old_label(make_key: MakeKey) -> None:
    key = make_key("EC")
    text = pem(create_csr(key, Subject(common="a"), [], CertExtensions(), None))
    old = text.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")

    for data in ("Subject: a\r\n" + text.replace("\n", "\r\n") + "bye", old.encode()):
        csr = load_csr(data)
        assert csr_matches_key(csr, key)


def test_load_csr_refuses_bad_input(make_key: MakeKey) -> None:
    text = pem(
        create_csr(make_key("EC"), Subject(common="a"), [], CertExtensions(), None)
    )
    der = load_csr(text).public_bytes(serialization.Encoding.DER)

    cases: dict[str | bytes, str] = {
        "garbage": "no PEM certificate signing request found in the input",
        der: "the certificate signing request looks like binary DER",
        text + text: "found 2 CSRs; give exactly one",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----": (
            "the CSR cannot be read"
        ),
    }
    for data, reason in cases.items():
        with pytest.raises(PkiError) as info:
            load_csr(data)
        assert info.value.message.startswith(reason)


def test_load_csr_refuses_a_bad_signature(make_key: MakeKey) -> None:
    csr = create_csr(make_key("EC"), Subject(common="aaaa"), [], CertExtensions(), None)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    index = der.index(b"aaaa")
    der[index : index + 4] = b"bbbb"
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(
        serialization.Encoding.PEM
    )

    with pytest.raises(PkiError) as info:
        load_csr(tampered)

    assert info.value.message == (
        "the CSR's signature does not verify with its own public key"
    )


def test_csr_matches_key_false_for_other_key(make_key: MakeKey) -> None:
    csr = create_csr(make_key("EC"), Subject(common="a"), [], CertExtensions(), None)

    assert not csr_matches_key(csr, make_key("EC", fresh=True))
    assert not csr_matches_key(csr, make_key("ED25519"))
