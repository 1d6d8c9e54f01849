"""Issuing: serials, validity, key identifiers, path length and CSR signing."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.errors import PkiError, ValidationError
from certd.pki.csr import create_csr
from certd.pki.models import CertExtensions, Subject
from certd.pki.sign import (
    build_certificate,
    create_intermediate_ca,
    random_serial,
    sign_csr,
)
from tests.pki.conftest import (
    CA_EXTENSIONS,
    LEAF_EXTENSIONS,
    NOW,
    MakeCa,
    MakeCert,
    MakeKey,
    OpenSSL,
    cn,
)


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest


def aki(cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value


def test_random_serial_has_64_plus_random_bits_and_fits_20_octets() -> None:
    serials = {random_serial() for _ in range(200)}

    assert len(serials) == 200
    assert all(s.bit_length() == 158 for s in serials)
    assert all(0 < s < 2**159 for s in serials)


def test_root_is_self_signed_without_aki(make_ca: MakeCa) -> None:
    root = make_ca("Root")

    assert root.cert.issuer == root.cert.subject
    assert (
        ski(root.cert)
        == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key()).digest
    )
    with pytest.raises(x509.ExtensionNotFound):
        aki(root.cert)
    root.cert.verify_directly_issued_by(root.cert)


def test_root_with_aki_requested_names_itself(make_ca: MakeCa) -> None:
    extensions = CA_EXTENSIONS.model_copy(
        update={
            "AuthorityKeyIdentifier": CA_EXTENSIONS.AuthorityKeyIdentifier.model_copy(
                update={"enabled": True, "authority_cert_issuer": True}
            )
        }
    )
    root = make_ca("Root", extensions=extensions)

    value = aki(root.cert)
    assert value.key_identifier == ski(root.cert)
    assert value.authority_cert_issuer == [x509.DirectoryName(cn("Root"))]
    assert value.authority_cert_serial_number == root.cert.serial_number


def test_leaf_validity_key_ids_and_san(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca("Root")
    key = make_key("RSA")

    cert = build_certificate(
        subject_key_public=key.public_key(),
        subject=cn("a.example"),
        san=["a.example", "IP:192.0.2.1"],
        extensions=LEAF_EXTENSIONS,
        issuer_cert=root.cert,
        issuer_key=root.key,
        digest="SHA384",
        lifetime_days=397,
        now=NOW + dt.timedelta(microseconds=123),
    )

    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=397)
    assert cert.issuer == root.cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    assert (
        ski(cert) == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    )
    assert aki(cert) == x509.AuthorityKeyIdentifier(ski(root.cert), None, None)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical is False
    assert [str(n.value) for n in san.value] == ["a.example", "192.0.2.1"]
    assert cert.version == x509.Version.v3
    cert.verify_directly_issued_by(root.cert)


def test_aki_with_issuer_and_serial(make_ca: MakeCa, make_cert: MakeCert) -> None:
    root = make_ca("Root")
    inter = make_ca("Inter", parent=root, lifetime_days=1000)
    extensions = LEAF_EXTENSIONS.model_copy(
        update={
            "AuthorityKeyIdentifier": LEAF_EXTENSIONS.AuthorityKeyIdentifier.model_copy(
                update={"enabled": True, "authority_cert_issuer": True}
            )
        }
    )

    leaf = make_cert(issuer=inter, extensions=extensions)

    assert aki(leaf.cert) == x509.AuthorityKeyIdentifier(
        ski(inter.cert), [x509.DirectoryName(cn("Root"))], inter.cert.serial_number
    )


def test_openssl_verifies_three_level_chain(
    make_ca: MakeCa, make_cert: MakeCert, make_key: MakeKey, openssl: OpenSSL
) -> None:
    root = make_ca("Root", key=make_key("RSA"))
    inter = make_ca(
        "Inter", parent=root, key=make_key("ED25519"), digest=None, lifetime_days=1000
    )
    leaf = make_cert(issuer=inter, key=make_key("EC"), lifetime_days=30)
    root_path = openssl.write("root.pem", root.pem)
    inter_path = openssl.write("inter.pem", inter.pem)
    leaf_path = openssl.write("leaf.pem", leaf.pem)
    at = str(int((NOW + dt.timedelta(days=1)).timestamp()))

    out = openssl.run(
        "verify", "-attime", at, "-purpose", "sslserver", "-x509_strict",
        "-CAfile", root_path, "-untrusted", inter_path, leaf_path,
    )  # fmt: skip

    assert out == f"{leaf_path}: OK\n"
    text = openssl.run("x509", "-in", leaf_path, "-noout", "-text")
    assert "Signature Algorithm: ED25519" in text
    assert "X509v3 Subject Key Identifier" in text
    assert "X509v3 Authority Key Identifier" in text


def test_refuses_lifetime_past_issuer(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca("Root", lifetime_days=100, now=NOW)

    with pytest.raises(ValidationError) as info:
        build_certificate(
            subject_key_public=make_key("EC").public_key(),
            subject=cn("a"),
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=root.cert,
            issuer_key=root.key,
            digest="SHA256",
            lifetime_days=101,
            now=NOW,
        )

    [error] = info.value.errors
    assert error.field == "lifetime"
    assert error.message == (
        "the certificate would end on 2026-09-10T12:00:00+00:00, after its issuer "
        "(2026-09-09T12:00:00+00:00); the issuer allows at most 100 days"
    )


@pytest.mark.parametrize(
    ("days", "reason"),
    [
        (0, "must be at least 1 day"),
        (-5, "must be at least 1 day"),
        (3_000_000, "the certificate would end after the year 9999"),
        (10**9, "the certificate would end after the year 9999"),
    ],
)
def test_refuses_bad_lifetime(make_key: MakeKey, days: int, reason: str) -> None:
    key = make_key("EC")

    with pytest.raises(ValidationError) as info:
        build_certificate(
            subject_key_public=key.public_key(),
            subject=cn("a"),
            san=[],
            extensions=CA_EXTENSIONS,
            issuer_cert=None,
            issuer_key=key,
            digest="SHA256",
            lifetime_days=days,
            now=NOW,
        )

    assert [(e.field, e.message) for e in info.value.errors] == [("lifetime", reason)]


def test_refuses_naive_now(make_key: MakeKey) -> None:
    key = make_key("EC")

    with pytest.raises(PkiError, match="now must be an aware datetime"):
        build_certificate(
            subject_key_public=key.public_key(),
            subject=cn("a"),
            san=[],
            extensions=CA_EXTENSIONS,
            issuer_cert=None,
            issuer_key=key,
            digest="SHA256",
            lifetime_days=1,
            now=NOW.replace(tzinfo=None),
        )


def test_refuses_self_signed_with_other_key(make_key: MakeKey) -> None:
    with pytest.raises(
        PkiError, match="a self-signed certificate must be signed by its own key"
    ):
        build_certificate(
            subject_key_public=make_key("EC").public_key(),
            subject=cn("a"),
            san=[],
            extensions=CA_EXTENSIONS,
            issuer_cert=None,
            issuer_key=make_key("ED25519"),
            digest=None,
            lifetime_days=1,
            now=NOW,
        )


def test_refuses_empty_subject_without_san(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca()

    with pytest.raises(ValidationError) as info:
        build_certificate(
            subject_key_public=make_key("EC").public_key(),
            subject=x509.Name([]),
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=root.cert,
            issuer_key=root.key,
            digest="SHA256",
            lifetime_days=1,
            now=NOW,
        )

    assert [e.field for e in info.value.errors] == ["san"]


def test_refuses_issuer_that_is_not_a_ca(
    make_cert: MakeCert, make_key: MakeKey
) -> None:
    leaf = make_cert()

    with pytest.raises(PkiError, match=r"the issuer is not a CA \(BasicConstraints ca"):
        build_certificate(
            subject_key_public=make_key("ED25519").public_key(),
            subject=cn("b"),
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=leaf.cert,
            issuer_key=leaf.key,
            digest="SHA256",
            lifetime_days=1,
            now=NOW,
        )


def test_refuses_issuer_without_key_cert_sign(make_key: MakeKey) -> None:
    key = make_key("EC", fresh=True)
    odd_ca = (
        x509.CertificateBuilder()
        .subject_name(cn("odd"))
        .issuer_name(cn("odd"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )

    with pytest.raises(
        PkiError, match="the issuer's KeyUsage does not allow keyCertSign"
    ):
        build_certificate(
            subject_key_public=make_key("ED25519").public_key(),
            subject=cn("b"),
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=odd_ca,
            issuer_key=key,
            digest="SHA256",
            lifetime_days=1,
            now=NOW,
        )


def test_refuses_issuer_key_that_does_not_match(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    root = make_ca()

    with pytest.raises(
        PkiError, match="the issuer's private key does not match its certificate"
    ):
        build_certificate(
            subject_key_public=make_key("ED25519").public_key(),
            subject=cn("b"),
            san=[],
            extensions=LEAF_EXTENSIONS,
            issuer_cert=root.cert,
            issuer_key=make_key("EC", fresh=True),
            digest="SHA256",
            lifetime_days=1,
            now=NOW,
        )


def test_path_length_zero_issuer_refuses_ca(make_ca: MakeCa) -> None:
    root = make_ca("Root", path_length=0)

    with pytest.raises(PkiError) as info:
        make_ca("Inter", parent=root, lifetime_days=100)

    assert info.value.message == (
        "the issuer's path length is 0: it may not issue CA certificates"
    )


def test_child_path_length_must_be_shorter(make_ca: MakeCa) -> None:
    root = make_ca("Root", path_length=1)

    with pytest.raises(PkiError) as info:
        make_ca("Inter", parent=root, path_length=1, lifetime_days=100)

    assert info.value.message == (
        "path_length 1 is too long under an issuer with path length 1; at most 0"
    )
    assert make_ca("Inter", parent=root, path_length=0, lifetime_days=100).cert


def test_create_intermediate_ca_inherits_parent_limit(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    root = make_ca("Root", path_length=2)
    key = make_key("EC", fresh=True)

    inter = create_intermediate_ca(
        key=key,
        subject=cn("Inter"),
        extensions=CA_EXTENSIONS,
        parent_cert=root.cert,
        parent_key=root.key,
        digest="SHA384",
        lifetime_days=365,
        now=NOW,
    )

    bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, True, 1)
    assert aki(inter).key_identifier == ski(root.cert)
    inter.verify_directly_issued_by(root.cert)


def test_create_intermediate_ca_without_parent_limit_stays_unlimited(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    root = make_ca("Root")

    inter = create_intermediate_ca(
        key=make_key("EC", fresh=True),
        subject=cn("Inter"),
        extensions=CA_EXTENSIONS,
        parent_cert=root.cert,
        parent_key=root.key,
        digest=None,
        lifetime_days=365,
        now=NOW,
    )

    assert (
        inter.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
        is None
    )


def test_create_intermediate_ca_needs_ca_extensions(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    root = make_ca("Root")

    with pytest.raises(PkiError, match="an intermediate CA needs BasicConstraints"):
        create_intermediate_ca(
            key=make_key("EC"),
            subject=cn("Inter"),
            extensions=LEAF_EXTENSIONS,
            parent_cert=root.cert,
            parent_key=root.key,
            digest=None,
            lifetime_days=365,
            now=NOW,
        )


def test_sign_csr_takes_subject_and_san_but_not_ca_rights(
    make_ca: MakeCa, make_key: MakeKey, openssl: OpenSSL
) -> None:
    root = make_ca("Root")
    key = make_key("RSA")
    greedy = CertExtensions.model_validate(
        {
            "BasicConstraints": {
                "enabled": True,
                "ca": True,
                "extension_critical": True,
            },
            "KeyUsage": {"enabled": True, "key_cert_sign": True},
        }
    )
    csr = create_csr(
        key,
        Subject(common="svc.example", organization="Org"),
        ["svc.example"],
        greedy,
        "SHA256",
    )

    cert = sign_csr(csr, root.cert, root.key, LEAF_EXTENSIONS, 90, "SHA256", NOW)

    assert cert.subject == csr.subject
    assert cert.public_key() == key.public_key()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in names] == ["svc.example"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign is False
    out = openssl.run(
        "verify", "-attime", str(int(NOW.timestamp()) + 60), "-CAfile",
        openssl.write("root.pem", root.pem),
        openssl.write("leaf.pem", cert.public_bytes(serialization.Encoding.PEM)),
    )  # fmt: skip
    assert out.endswith(": OK\n")


def test_sign_csr_refuses_a_bad_signature(make_ca: MakeCa, make_key: MakeKey) -> None:
    root = make_ca("Root")
    csr = create_csr(make_key("EC"), Subject(common="aaaa"), [], CertExtensions(), None)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    index = der.index(b"aaaa")
    der[index : index + 4] = b"bbbb"

    with pytest.raises(PkiError, match="the CSR's signature does not verify"):
        sign_csr(
            x509.load_der_x509_csr(bytes(der)),
            root.cert,
            root.key,
            LEAF_EXTENSIONS,
            9,
            None,
            NOW,
        )
