"""describe_certificate / describe_csr: every field, every extension, no raising."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from certd.pki.csr import create_csr
from certd.pki.inspect import (
    FIELDS,
    describe_certificate,
    describe_csr,
    subject_name_hash,
)
from certd.pki.models import Subject
from tests.pki.conftest import (
    LEAF_EXTENSIONS,
    NOW,
    Issued,
    MakeCa,
    MakeCert,
    MakeKey,
    OpenSSL,
)


def test_describe_leaf_with_chain(
    make_ca: MakeCa, make_cert: MakeCert, openssl: OpenSSL
) -> None:
    root = make_ca("Root")
    inter = make_ca("Inter", parent=root, lifetime_days=1000)
    leaf = make_cert(
        issuer=inter,
        san=["a.example", "IP:10.0.0.1"],
        not_after=NOW + dt.timedelta(days=30, hours=1),
        lifetime_days=60,
    )

    info = describe_certificate(leaf.pem + inter.pem, now=NOW)

    path = openssl.write("leaf.pem", leaf.pem)
    serial = openssl.run("x509", "-in", path, "-noout", "-serial").strip()
    sha256 = openssl.run(
        "x509", "-in", path, "-noout", "-fingerprint", "-sha256"
    ).strip()
    sha1 = openssl.run("x509", "-in", path, "-noout", "-fingerprint", "-sha1").strip()
    subject_hash = openssl.run("x509", "-in", path, "-noout", "-hash").strip()
    assert info == {
        "parsed": True,
        "parse_error": None,
        "country": None,
        "state": None,
        "city": None,
        "organization": None,
        "organizational_unit": None,
        "common": "a.example",
        "email": None,
        "DN": "CN=a.example",
        "subject_name_hash": subject_hash,
        "issuer_dn": "CN=Inter",
        "san": ["DNS:a.example", "IP:10.0.0.1"],
        "serial": serial.removeprefix("serial="),
        "not_valid_before": "2026-05-02T12:55:00+00:00",
        "not_valid_after": "2026-07-01T13:00:00+00:00",
        "lifetime": 60,
        "days_left": 30,
        "expired": False,
        "self_signed": False,
        "key_type": "EC",
        "key_length": 384,
        "ec_curve": "SECP384R1",
        "digest_algorithm": "SHA256",
        "fingerprint_sha256": sha256.removeprefix("sha256 Fingerprint="),
        "fingerprint_sha1": sha1.removeprefix("sha1 Fingerprint="),
        "extensions": info["extensions"],
        "chain_list": [leaf.pem, inter.pem],
        "chain": True,
        "is_ca": False,
    }
    assert list(info) == list(FIELDS)
    assert info["extensions"] == {
        "BasicConstraints": {
            "critical": True,
            "oid": "2.5.29.19",
            "ca": False,
            "path_length": None,
        },
        "KeyUsage": {
            "critical": True,
            "oid": "2.5.29.15",
            "digital_signature": True,
            "content_commitment": False,
            "key_encipherment": False,
            "data_encipherment": False,
            "key_agreement": False,
            "key_cert_sign": False,
            "crl_sign": False,
            "encipher_only": False,
            "decipher_only": False,
        },
        "ExtendedKeyUsage": {
            "critical": False,
            "oid": "2.5.29.37",
            "usages": ["SERVER_AUTH"],
        },
        "SubjectAlternativeName": {
            "critical": False,
            "oid": "2.5.29.17",
            "names": ["DNS:a.example", "IP:10.0.0.1"],
        },
        "SubjectKeyIdentifier": {
            "critical": False,
            "oid": "2.5.29.14",
            "key_identifier": colon(
                leaf.cert.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value.digest
            ),
        },
        "AuthorityKeyIdentifier": {
            "critical": False,
            "oid": "2.5.29.35",
            "key_identifier": colon(
                inter.cert.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value.digest
            ),
            "authority_cert_issuer": None,
            "authority_cert_serial_number": None,
        },
    }


def colon(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


@pytest.mark.parametrize(
    ("offset", "days_left", "expired"),
    [
        (dt.timedelta(days=10), 10, False),
        (dt.timedelta(days=10, seconds=-1), 9, False),
        (dt.timedelta(0), 0, False),
        (dt.timedelta(seconds=-1), -1, True),
        (dt.timedelta(days=-3, seconds=1), -3, True),
    ],
)
def test_days_left_floors_and_expired(
    make_cert: MakeCert, offset: dt.timedelta, days_left: int, expired: bool
) -> None:
    leaf = make_cert(not_after=NOW)

    info = describe_certificate(leaf.pem, now=NOW - offset)

    assert (info["days_left"], info["expired"]) == (days_left, expired)


@pytest.fixture
def host_tz() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_description_does_not_depend_on_host_tz(
    make_cert: MakeCert, host_tz: None
) -> None:
    leaf = make_cert(not_after=NOW)

    info = describe_certificate(leaf.pem, now=NOW - dt.timedelta(hours=1))

    assert info["not_valid_after"] == "2026-06-01T12:00:00+00:00"
    assert (info["days_left"], info["expired"]) == (0, False)


def test_default_now_is_current_time(make_cert: MakeCert) -> None:
    leaf = make_cert(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=5, hours=1))

    assert describe_certificate(leaf.pem)["days_left"] == 5


def test_describe_root_self_signed_ca(make_ca: MakeCa) -> None:
    root = make_ca("Root", path_length=1)

    info = describe_certificate(root.pem, now=NOW)

    assert (info["self_signed"], info["is_ca"], info["chain"]) == (True, True, False)
    assert info["issuer_dn"] == info["DN"] == "CN=Root"
    assert info["extensions"]["BasicConstraints"] == {
        "critical": True,
        "oid": "2.5.29.19",
        "ca": True,
        "path_length": 1,
    }
    assert info["lifetime"] == 3650
    assert "AuthorityKeyIdentifier" not in info["extensions"]


def test_describe_rsa_and_ed25519_keys(
    make_ca: MakeCa, make_cert: MakeCert, make_key: MakeKey
) -> None:
    rsa_ca = make_ca("RSA CA", key=make_key("RSA"), digest="SHA384")
    rsa_leaf = make_cert(issuer=rsa_ca, key=make_key("RSA"), digest="SHA512")
    ed_ca = make_ca("Ed CA", key=make_key("ED25519"), digest=None)

    rsa_info = describe_certificate(rsa_leaf.pem, now=NOW)
    ca_info = describe_certificate(rsa_ca.pem, now=NOW)
    ed_info = describe_certificate(ed_ca.pem, now=NOW)

    assert [
        rsa_info[k] for k in ("key_type", "key_length", "ec_curve", "digest_algorithm")
    ] == [
        "RSA",
        2048,
        None,
        "SHA512",
    ]
    assert ca_info["digest_algorithm"] == "SHA384"
    assert [
        ed_info[k] for k in ("key_type", "key_length", "ec_curve", "digest_algorithm")
    ] == [
        "ED25519",
        None,
        None,
        None,
    ]


def test_describe_sha1_signed_certificate(openssl: OpenSSL) -> None:
    pem = openssl.run(
        "req", "-x509", "-sha1", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", openssl.workdir / "old.key", "-subj", "/CN=old", "-days", "1",
    )  # fmt: skip

    info = describe_certificate(pem, now=NOW)

    assert info["digest_algorithm"] == "SHA1"
    assert (info["key_type"], info["ec_curve"]) == ("EC", "SECP256R1")
    assert info["common"] == "old"
    assert info["san"] == []


def base_builder(
    name: x509.Name, key: Any, subject: x509.Name | None = None
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(name if subject is None else subject)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x0A)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
    )


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_describe_decodes_every_extension_kind(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    key = make_key("EC")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kitchen sink")])
    dn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Issuer Org")])
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (
            x509.KeyUsage(False, False, False, False, True, False, False, True, False),
            True,
        ),
        (
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ObjectIdentifier("1.3.6.1.4.1.99.1")]
            ),
            False,
        ),
        (
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.example/"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://ca.example/ca.crt"),
                    ),
                ]
            ),
            False,
        ),
        (
            x509.SubjectInformationAccess(
                [
                    x509.AccessDescription(
                        ObjectIdentifier("1.3.6.1.5.5.7.48.5"),
                        x509.UniformResourceIdentifier("rsync://repo.example/"),
                    )
                ]
            ),
            False,
        ),
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[
                            x509.UniformResourceIdentifier("http://crl.example/a.crl")
                        ],
                        relative_name=None,
                        reasons=frozenset(
                            [
                                x509.ReasonFlags.key_compromise,
                                x509.ReasonFlags.ca_compromise,
                            ]
                        ),
                        crl_issuer=[x509.DirectoryName(dn)],
                    )
                ]
            ),
            False,
        ),
        (
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=None,
                        relative_name=x509.RelativeDistinguishedName(
                            [x509.NameAttribute(NameOID.COMMON_NAME, "delta")]
                        ),
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            False,
        ),
        (
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(
                        ObjectIdentifier("2.23.140.1.2.1"),
                        [
                            "https://cps.example/",
                            x509.UserNotice(
                                x509.NoticeReference("Org", [1, 2]), "Be nice"
                            ),
                        ],
                    ),
                    x509.PolicyInformation(ObjectIdentifier("1.2.3.4"), None),
                ]
            ),
            False,
        ),
        (
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.DNSName("example.com"),
                    x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
                ],
                excluded_subtrees=None,
            ),
            True,
        ),
        (
            x509.PolicyConstraints(
                require_explicit_policy=0, inhibit_policy_mapping=None
            ),
            True,
        ),
        (x509.InhibitAnyPolicy(2), True),
        (x509.TLSFeature([x509.TLSFeatureType.status_request]), False),
        (x509.OCSPNoCheck(), False),
        (x509.IssuerAlternativeName([x509.RFC822Name("ca@example.com")]), False),
        (
            x509.AuthorityKeyIdentifier(
                key_identifier=b"\x01\x02",
                authority_cert_issuer=[x509.DirectoryName(dn)],
                authority_cert_serial_number=0x1F,
            ),
            False,
        ),
        (
            x509.UnrecognizedExtension(
                ObjectIdentifier("1.3.6.1.4.1.99.2"), b"\x05\x00"
            ),
            True,
        ),
    ]
    builder = base_builder(name, key)
    for ext, critical in exts:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(key, hashes.SHA256())

    info = describe_certificate(to_pem(cert), now=NOW)

    assert info["parsed"] is True
    assert info["serial"] == "0A"
    assert (
        openssl.run("x509", "-noout", "-serial", input=to_pem(cert).encode())
        == "serial=0A\n"
    )
    assert info["extensions"] == {
        "KeyUsage": {
            "critical": True,
            "oid": "2.5.29.15",
            "digital_signature": False,
            "content_commitment": False,
            "key_encipherment": False,
            "data_encipherment": False,
            "key_agreement": True,
            "key_cert_sign": False,
            "crl_sign": False,
            "encipher_only": True,
            "decipher_only": False,
        },
        "ExtendedKeyUsage": {
            "critical": False,
            "oid": "2.5.29.37",
            "usages": ["CLIENT_AUTH", "1.3.6.1.4.1.99.1"],
        },
        "AuthorityInformationAccess": {
            "critical": False,
            "oid": "1.3.6.1.5.5.7.1.1",
            "descriptions": [
                {"method": "OCSP", "location": "URI:http://ocsp.example/"},
                {"method": "CA_ISSUERS", "location": "URI:http://ca.example/ca.crt"},
            ],
        },
        "SubjectInformationAccess": {
            "critical": False,
            "oid": "1.3.6.1.5.5.7.1.11",
            "descriptions": [
                {
                    "method": "1.3.6.1.5.5.7.48.5",
                    "location": "URI:rsync://repo.example/",
                }
            ],
        },
        "CRLDistributionPoints": {
            "critical": False,
            "oid": "2.5.29.31",
            "distribution_points": [
                {
                    "full_name": ["URI:http://crl.example/a.crl"],
                    "relative_name": None,
                    "reasons": ["ca_compromise", "key_compromise"],
                    "crl_issuer": ["DirName:O=Issuer Org"],
                }
            ],
        },
        "FreshestCRL": {
            "critical": False,
            "oid": "2.5.29.46",
            "distribution_points": [
                {
                    "full_name": None,
                    "relative_name": "CN=delta",
                    "reasons": None,
                    "crl_issuer": None,
                }
            ],
        },
        "CertificatePolicies": {
            "critical": False,
            "oid": "2.5.29.32",
            "policies": [
                {
                    "policy": "2.23.140.1.2.1",
                    "qualifiers": [
                        {"cps": "https://cps.example/"},
                        {
                            "explicit_text": "Be nice",
                            "organization": "Org",
                            "notice_numbers": [1, 2],
                        },
                    ],
                },
                {"policy": "1.2.3.4", "qualifiers": []},
            ],
        },
        "NameConstraints": {
            "critical": True,
            "oid": "2.5.29.30",
            "permitted": ["DNS:example.com", "IP:10.0.0.0/8"],
            "excluded": None,
        },
        "PolicyConstraints": {
            "critical": True,
            "oid": "2.5.29.36",
            "require_explicit_policy": 0,
            "inhibit_policy_mapping": None,
        },
        "InhibitAnyPolicy": {"critical": True, "oid": "2.5.29.54", "skip_certs": 2},
        "TLSFeature": {
            "critical": False,
            "oid": "1.3.6.1.5.5.7.1.24",
            "features": ["status_request"],
        },
        "OCSPNoCheck": {"critical": False, "oid": "1.3.6.1.5.5.7.48.1.5"},
        "IssuerAlternativeName": {
            "critical": False,
            "oid": "2.5.29.18",
            "names": ["email:ca@example.com"],
        },
        "AuthorityKeyIdentifier": {
            "critical": False,
            "oid": "2.5.29.35",
            "key_identifier": "01:02",
            "authority_cert_issuer": ["DirName:O=Issuer Org"],
            "authority_cert_serial_number": "1F",
        },
        "1.3.6.1.4.1.99.2": {
            "critical": True,
            "oid": "1.3.6.1.4.1.99.2",
            "value_hex": "0500",
        },
    }


@pytest.mark.parametrize(
    "attributes",
    [
        [(NameOID.COMMON_NAME, "  Mixed   CASE\tName  ", None)],
        [
            (NameOID.COUNTRY_NAME, "DE", None),
            (NameOID.ORGANIZATION_NAME, "ÄÖÜ äöü  X", None),
        ],
        [(NameOID.COMMON_NAME, "Printable Name", x509.name._ASN1Type.PrintableString)],
        [(NameOID.COMMON_NAME, "BMP Ωmega", x509.name._ASN1Type.BMPString)],
        [(NameOID.DOMAIN_COMPONENT, "Example", None), (NameOID.USER_ID, "U1", None)],
        [(NameOID.SERIAL_NUMBER, "  A 1 ", None)],
        [],
    ],
)
def test_subject_name_hash_matches_openssl(
    make_key: MakeKey,
    openssl: OpenSSL,
    attributes: list[tuple[ObjectIdentifier, str, Any]],
) -> None:
    key = make_key("EC")
    name = x509.Name(
        [
            x509.NameAttribute(oid, value, _type=kind)
            if kind
            else x509.NameAttribute(oid, value)
            for oid, value, kind in attributes
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    cert = base_builder(issuer, key, name).sign(key, hashes.SHA256())

    expected = openssl.run(
        "x509", "-noout", "-subject_hash", input=to_pem(cert).encode()
    )

    assert subject_name_hash(name) == expected.strip()


def test_subject_name_hash_of_multivalued_rdn(
    make_key: MakeKey, openssl: OpenSSL
) -> None:
    key = make_key("EC")
    name = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zeta"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "Alpha Beta"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
            ),
        ]
    )
    cert = base_builder(name, key).sign(key, hashes.SHA256())

    expected = openssl.run(
        "x509", "-noout", "-subject_hash", input=to_pem(cert).encode()
    )

    assert subject_name_hash(name) == expected.strip()


def test_describe_csr(make_key: MakeKey) -> None:
    csr = create_csr(
        make_key("RSA"),
        Subject(country="DE", city="Berlin", common="a.example", email="x@a.example"),
        ["a.example"],
        LEAF_EXTENSIONS,
        "SHA256",
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()

    info = describe_csr(pem)

    assert list(info) == list(FIELDS)
    assert {k: info[k] for k in FIELDS if k != "extensions"} == {
        "parsed": True,
        "parse_error": None,
        "country": "DE",
        "state": None,
        "city": "Berlin",
        "organization": None,
        "organizational_unit": None,
        "common": "a.example",
        "email": "x@a.example",
        "DN": "1.2.840.113549.1.9.1=x@a.example,CN=a.example,L=Berlin,C=DE",
        "subject_name_hash": None,
        "issuer_dn": None,
        "san": ["DNS:a.example"],
        "serial": None,
        "not_valid_before": None,
        "not_valid_after": None,
        "lifetime": None,
        "days_left": None,
        "expired": None,
        "self_signed": None,
        "key_type": "RSA",
        "key_length": 2048,
        "ec_curve": None,
        "digest_algorithm": "SHA256",
        "fingerprint_sha256": None,
        "fingerprint_sha1": None,
        "chain_list": None,
        "chain": None,
        "is_ca": False,
    }
    assert sorted(info["extensions"]) == [
        "BasicConstraints",
        "ExtendedKeyUsage",
        "KeyUsage",
        "SubjectAlternativeName",
    ]


def unparsed_fields(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("parsed", "parse_error")}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "no certificate given (the input is empty)"),
        ("junk", "no PEM certificate found in the input"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate 0 of the chain cannot be read",
        ),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "no certificate found; the input holds a CERTIFICATE REQUEST block instead",
        ),
        (None, "the certificate cannot be described"),
    ],
)
def test_describe_certificate_never_raises(data: Any, reason: str) -> None:
    info = describe_certificate(data, now=NOW)

    assert info["parsed"] is False
    assert info["parse_error"].startswith(reason)
    assert set(unparsed_fields(info).values()) == {None}
    assert list(info) == list(FIELDS)


def test_describe_certificate_flags_a_broken_chain_member(make_cert: MakeCert) -> None:
    leaf = make_cert()
    broken = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    info = describe_certificate(leaf.pem + broken, now=NOW)

    assert info["parsed"] is False
    assert info["parse_error"].startswith("certificate 1 of the chain cannot be read")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("junk", "no PEM certificate signing request found in the input"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "the CSR cannot be read",
        ),
        (b"\x30\x82\x01", "the certificate signing request looks like binary DER"),
    ],
)
def test_describe_csr_never_raises(data: Any, reason: str) -> None:
    info = describe_csr(data)

    assert info["parsed"] is False
    assert info["parse_error"].startswith(reason)
    assert set(unparsed_fields(info).values()) == {None}


def test_describe_accepts_issued_fixture(make_cert: MakeCert) -> None:
    leaf: Issued = make_cert(common=None, san=["b.example"])

    info = describe_certificate(leaf.pem, now=NOW)

    assert (info["DN"], info["common"], info["san"]) == ("", None, ["DNS:b.example"])
    assert info["extensions"]["SubjectAlternativeName"]["critical"] is True


def test_describe_never_expiring_certificate(make_key: MakeKey) -> None:
    key = make_key("EC")
    forever = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forever")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forever")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(forever)
        .sign(key, hashes.SHA256())
    )

    info = describe_certificate(to_pem(cert), now=NOW)

    assert info["parsed"] is True
    assert info["not_valid_after"] == "9999-12-31T23:59:59+00:00"
    assert info["expired"] is False
    assert info["days_left"] == (forever - NOW).days
