"""CRLs: contents, reason codes, refusals, and openssl/pkilint checks."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.errors import PkiError, ValidationError
from certd.pki.crl import build_crl, revocation_reason_choices
from certd.pki.models import CertExtensions
from tests.pki.conftest import NOW, MakeCa, MakeCert, MakeKey, OpenSSL
from tests.pki.pkilint_helpers import crl_errors

HOUR = dt.timedelta(hours=1)


def test_crl_contents(make_ca: MakeCa) -> None:
    ca = make_ca("CA")
    revoked = [
        (0x1234, NOW - 3 * HOUR, "keyCompromise"),
        (0x99, NOW - 2 * HOUR, None),
        (0xABCDEF, NOW - HOUR, "unspecified"),
        (0x42, NOW, "superseded"),
    ]

    crl = build_crl(
        ca.cert, ca.key, revoked, crl_number=7, now=NOW + dt.timedelta(0, 0, 500)
    )

    assert crl.issuer == ca.cert.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + 7 * 24 * HOUR
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert (number.critical, number.value.crl_number) == (False, 7)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.critical is False
    assert aki.value.key_identifier == ski.digest
    entries = {e.serial_number: e for e in crl}
    assert sorted(entries) == [0x42, 0x99, 0x1234, 0xABCDEF]
    assert entries[0x1234].revocation_date_utc == NOW - 3 * HOUR
    reasons = {
        serial: [(ext.critical, ext.value.reason) for ext in entry.extensions]
        for serial, entry in entries.items()
    }
    assert reasons == {
        0x1234: [(False, x509.ReasonFlags.key_compromise)],
        0x99: [],
        0xABCDEF: [],
        0x42: [(False, x509.ReasonFlags.superseded)],
    }


def test_empty_crl_with_custom_interval(make_ca: MakeCa, make_key: MakeKey) -> None:
    ca = make_ca("Ed CA", key=make_key("ED25519"), digest=None)

    crl = build_crl(ca.cert, ca.key, [], crl_number=0, now=NOW, next_update_hours=25)

    assert list(crl) == []
    assert crl.next_update_utc == NOW + 25 * HOUR
    assert crl.signature_hash_algorithm is None
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]


def test_openssl_verifies_crl_and_sees_revocation(
    make_ca: MakeCa, make_cert: MakeCert, openssl: OpenSSL
) -> None:
    ca = make_ca("CA")
    revoked_leaf = make_cert(issuer=ca)
    good_leaf = make_cert(issuer=ca, common="b.example", san=["b.example"])
    crl = build_crl(
        ca.cert,
        ca.key,
        [(revoked_leaf.cert.serial_number, NOW, "keyCompromise")],
        1,
        NOW,
    )
    ca_path = openssl.write("ca.pem", ca.pem)
    crl_path = openssl.write("ca.crl", crl.public_bytes(serialization.Encoding.PEM))
    at = str(int((NOW + HOUR).timestamp()))

    text = openssl.run("crl", "-in", crl_path, "-CAfile", ca_path, "-noout", "-text")
    good = openssl.run(
        "verify", "-attime", at, "-crl_check", "-CRLfile", crl_path, "-CAfile", ca_path,
        openssl.write("good.pem", good_leaf.pem),
    )  # fmt: skip
    bad = subprocess.run(
        ["openssl", "verify", "-attime", at, "-crl_check", "-CRLfile", crl_path,
         "-CAfile", ca_path, openssl.write("bad.pem", revoked_leaf.pem)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert "X509v3 CRL Number: \n                1" in text
    assert "Key Compromise" in text
    assert good.endswith("good.pem: OK\n")
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr


def test_openssl_crl_verify(make_ca: MakeCa, openssl: OpenSSL) -> None:
    ca = make_ca("CA")
    crl = build_crl(ca.cert, ca.key, [(5, NOW, None)], 3, NOW)

    result = subprocess.run(
        ["openssl", "crl", "-verify", "-noout", "-CAfile", openssl.write("ca.pem", ca.pem),
         "-in", openssl.write("ca.crl", crl.public_bytes(serialization.Encoding.PEM))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 0
    assert "verify OK" in result.stdout + result.stderr


def test_crl_passes_pkilint(make_ca: MakeCa) -> None:
    ca = make_ca("CA")
    crl = build_crl(
        ca.cert,
        ca.key,
        [(0x1234, NOW - HOUR, "keyCompromise"), (0x99, NOW - HOUR, None)],
        crl_number=12,
        now=NOW,
    )

    assert crl_errors(crl) == []


def test_crl_refuses_bad_entries(make_ca: MakeCa) -> None:
    ca = make_ca("CA")
    revoked = [
        (1, NOW, "keyCompromise"),
        (1, NOW, None),
        (0, NOW, None),
        (2, NOW + HOUR, None),
        (3, NOW.replace(tzinfo=None), None),
        (4, NOW, "removeFromCRL"),
        (2**159, NOW, None),
    ]

    with pytest.raises(ValidationError) as info:
        build_crl(ca.cert, ca.key, revoked, crl_number=-1, now=NOW, next_update_hours=0)

    assert [(e.field, e.message) for e in info.value.errors] == [
        ("crl_number", "must be between 0 and 2**159 - 1"),
        ("next_update_hours", "must be at least 1 hour"),
        ("revoked.1", "serial 1 repeats revoked.0"),
        ("revoked.2", "the serial number must be positive and fit 20 octets"),
        ("revoked.3", "the revocation time lies in the future"),
        ("revoked.4", "the revocation time must be an aware datetime"),
        (
            "revoked.5",
            "unknown reason 'removeFromCRL'; use one of unspecified, keyCompromise, "
            "cACompromise, affiliationChanged, superseded, cessationOfOperation, "
            "certificateHold, privilegeWithdrawn, aACompromise",
        ),
        ("revoked.6", "the serial number must be positive and fit 20 octets"),
    ]


def test_crl_refuses_wrong_key_and_ca_without_crl_sign(
    make_ca: MakeCa, make_key: MakeKey
) -> None:
    ca = make_ca("CA")
    no_crl_sign = make_ca(
        "No CRL",
        extensions=CertExtensions.model_validate(
            {
                "BasicConstraints": {
                    "enabled": True,
                    "ca": True,
                    "extension_critical": True,
                },
                "KeyUsage": {"enabled": True, "key_cert_sign": True},
            }
        ),
    )

    with pytest.raises(
        PkiError, match="the CA's private key does not match its certificate"
    ):
        build_crl(ca.cert, make_key("EC", fresh=True), [], 1, NOW)
    with pytest.raises(PkiError, match="the CA's KeyUsage does not allow cRLSign"):
        build_crl(no_crl_sign.cert, no_crl_sign.key, [], 1, NOW)
    with pytest.raises(PkiError, match="now must be an aware datetime"):
        build_crl(ca.cert, ca.key, [], 1, NOW.replace(tzinfo=None))


def test_revocation_reason_choices_are_rfc_5280_names() -> None:
    assert revocation_reason_choices() == {
        "unspecified": "Unspecified",
        "keyCompromise": "Key compromise",
        "cACompromise": "CA compromise",
        "affiliationChanged": "Affiliation changed",
        "superseded": "Superseded",
        "cessationOfOperation": "Cessation of operation",
        "certificateHold": "Certificate hold",
        "privilegeWithdrawn": "Privilege withdrawn",
        "aACompromise": "AA compromise",
    }
