"""A leaf without SANs gets its common name as one, when the CN names a host."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certd.pki.models import CertExtensions
from certd.pki.names import common_name_san
from certd.pki.sign import build_certificate, sign_csr
from tests.pki.conftest import (
    LEAF_EXTENSIONS,
    NOW,
    MakeCa,
    MakeCert,
    MakeKey,
    OpenSSL,
    cn,
)


def openssl_san(openssl: OpenSSL, cert: x509.Certificate) -> str:
    """What ``openssl x509 -ext subjectAltName`` prints, without the header."""
    path = openssl.write("cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    out = openssl.run("x509", "-noout", "-ext", "subjectAltName", "-in", path)
    # Nothing is printed without a SAN, a note without any extension at all.
    if not out.strip() or out.startswith("No extensions"):
        return ""
    header, _, value = out.partition("\n")
    assert header.strip() == "X509v3 Subject Alternative Name:"
    return value.strip()


def san_of(cert: x509.Certificate) -> x509.Extension[x509.SubjectAlternativeName]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    ("common", "shown"),
    [
        ("nas.example.lan", "DNS:nas.example.lan"),
        ("*.example.lan", "DNS:*.example.lan"),
        ("192.0.2.10", "IP Address:192.0.2.10"),
        ("2001:db8::1", "IP Address:2001:DB8:0:0:0:0:0:1"),
        ("localhost", "DNS:localhost"),
        # SANs hold A-labels in lower case (RFC 5280 4.2.1.6, RFC 8399).
        ("NAS.Example.LAN", "DNS:nas.example.lan"),
        ("bücher.example", "DNS:xn--bcher-kva.example"),
    ],
)
def test_leaf_without_san_gets_its_common_name(
    make_cert: MakeCert, openssl: OpenSSL, common: str, shown: str
) -> None:
    leaf = make_cert(common=common, san=())

    assert openssl_san(openssl, leaf.cert) == shown
    assert san_of(leaf.cert).critical is False
    # The subject keeps the CN exactly as given.
    assert leaf.cert.subject == cn(common)


@pytest.mark.parametrize(
    "common",
    ["My Server", "DNS:nas.example.lan", "nas_1.example.lan", "10.0.0.256", "a@b.lan"],
)
def test_common_name_that_names_no_host_gives_no_san(
    make_cert: MakeCert, openssl: OpenSSL, common: str
) -> None:
    leaf = make_cert(common=common, san=())

    assert openssl_san(openssl, leaf.cert) == ""
    assert leaf.cert.subject == cn(common)


def test_explicit_san_is_kept_as_given(make_cert: MakeCert, openssl: OpenSSL) -> None:
    leaf = make_cert(common="nas.example.lan", san=("DNS:other.example.lan",))

    assert openssl_san(openssl, leaf.cert) == "DNS:other.example.lan"


def test_ca_gets_no_san_from_its_common_name(make_ca: MakeCa, openssl: OpenSSL) -> None:
    root = make_ca("ca.example.lan")
    inter = make_ca("issuing.example.lan", parent=root)

    assert openssl_san(openssl, root.cert) == ""
    assert openssl_san(openssl, inter.cert) == ""


def test_leaf_without_basic_constraints_is_no_ca(
    make_cert: MakeCert, openssl: OpenSSL
) -> None:
    extensions = CertExtensions.model_validate({})

    leaf = make_cert(common="nas.example.lan", san=(), extensions=extensions)

    assert openssl_san(openssl, leaf.cert) == "DNS:nas.example.lan"


@pytest.mark.parametrize(
    ("usages", "shown"),
    [
        (["CLIENT_AUTH"], ""),
        (["EMAIL_PROTECTION", "CODE_SIGNING"], ""),
        (["CLIENT_AUTH", "SERVER_AUTH"], "DNS:alice"),
        (["ANY_EXTENDED_KEY_USAGE"], "DNS:alice"),
    ],
)
def test_only_a_certificate_that_may_serve_tls_gets_its_common_name(
    make_cert: MakeCert, openssl: OpenSSL, usages: list[str], shown: str
) -> None:
    extensions = CertExtensions.model_validate(
        {"ExtendedKeyUsage": {"enabled": True, "usages": usages}}
    )

    leaf = make_cert(common="alice", san=(), extensions=extensions)

    assert openssl_san(openssl, leaf.cert) == shown


def test_self_signed_leaf_gets_its_common_name(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    key = make_key("EC")

    cert = build_certificate(
        subject_key_public=key.public_key(),
        subject=cn("nas.example.lan"),
        san=[],
        extensions=LEAF_EXTENSIONS,
        issuer_cert=None,
        issuer_key=key,
        digest="SHA256",
        lifetime_days=30,
        now=NOW,
    )

    assert openssl_san(openssl, cert) == "DNS:nas.example.lan"


def openssl_csr(
    openssl: OpenSSL, subject: str, *extra: str
) -> x509.CertificateSigningRequest:
    """A CSR made by ``openssl req``, with an EC key of its own."""
    pem = openssl.run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", openssl.workdir / "req.key", "-subj", subject, *extra,
    )  # fmt: skip
    return x509.load_pem_x509_csr(pem.encode())


def test_signed_csr_without_san_gets_its_common_name(
    make_ca: MakeCa, openssl: OpenSSL
) -> None:
    ca = make_ca()
    csr = openssl_csr(openssl, "/O=Example/CN=nas.example.lan")

    cert = sign_csr(csr, ca.cert, ca.key, LEAF_EXTENSIONS, 30, "SHA256", NOW)

    assert openssl_san(openssl, cert) == "DNS:nas.example.lan"
    verified = openssl.run(
        "verify", "-x509_strict", "-purpose", "sslserver",
        "-CAfile", openssl.write("ca.pem", ca.pem),
        "-verify_hostname", "nas.example.lan", "-attime", str(int(NOW.timestamp())),
        openssl.write("leaf.pem", cert.public_bytes(serialization.Encoding.PEM)),
    )  # fmt: skip
    assert verified.endswith("leaf.pem: OK\n")


def test_signed_csr_keeps_the_san_it_asks_for(
    make_ca: MakeCa, openssl: OpenSSL
) -> None:
    ca = make_ca()
    csr = openssl_csr(
        openssl,
        "/CN=nas.example.lan",
        "-addext",
        "subjectAltName=DNS:files.example.lan",
    )

    cert = sign_csr(csr, ca.cert, ca.key, LEAF_EXTENSIONS, 30, "SHA256", NOW)

    assert openssl_san(openssl, cert) == "DNS:files.example.lan"


def test_common_name_san_takes_each_host_common_name_once() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nas.example.lan"),
            x509.NameAttribute(NameOID.COMMON_NAME, "nas.example.lan"),
            x509.NameAttribute(NameOID.COMMON_NAME, "My Server"),
            x509.NameAttribute(NameOID.COMMON_NAME, "NAS.example.lan"),
            x509.NameAttribute(NameOID.COMMON_NAME, "[2001:db8::1]"),
        ]
    )

    assert common_name_san(subject) == [
        x509.DNSName("nas.example.lan"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    assert common_name_san(x509.Name([])) == []
