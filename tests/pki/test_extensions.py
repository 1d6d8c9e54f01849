"""Each extension option, built and read back flag by flag, with its critical bit."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certd.pki.inspect import describe_certificate
from certd.pki.models import EXTENDED_KEY_USAGE_OIDS, KEY_USAGE_FLAGS, CertExtensions
from certd.pki.syntax import canonical_san
from tests.pki.conftest import NOW, MakeCa, MakeCert, OpenSSL

OPENSSL_KEY_USAGE = {
    "digital_signature": "Digital Signature",
    "content_commitment": "Non Repudiation",
    "key_encipherment": "Key Encipherment",
    "data_encipherment": "Data Encipherment",
    "key_agreement": "Key Agreement",
    "key_cert_sign": "Certificate Sign",
    "crl_sign": "CRL Sign",
    "encipher_only": "Encipher Only",
    "decipher_only": "Decipher Only",
}


def extensions_for(flag: str, critical: bool) -> CertExtensions:
    ca = flag == "key_cert_sign"
    flags = {flag: True}
    if flag in ("encipher_only", "decipher_only"):
        flags["key_agreement"] = True
    return CertExtensions.model_validate(
        {
            "BasicConstraints": {"enabled": ca, "ca": ca, "extension_critical": ca},
            "KeyUsage": {"enabled": True, "extension_critical": critical, **flags},
        }
    )


@pytest.mark.parametrize("critical", [True, False])
@pytest.mark.parametrize("flag", KEY_USAGE_FLAGS)
def test_each_key_usage_flag(
    make_ca: MakeCa, make_cert: MakeCert, openssl: OpenSSL, flag: str, critical: bool
) -> None:
    leaf = make_cert(issuer=make_ca(), extensions=extensions_for(flag, critical))

    usage = describe_certificate(leaf.pem, now=NOW)["extensions"]["KeyUsage"]
    text = openssl.run("x509", "-noout", "-text", input=leaf.pem.encode())

    expected_true = {flag} | (
        {"key_agreement"} if flag in ("encipher_only", "decipher_only") else set()
    )
    assert usage == {
        "critical": critical,
        "oid": "2.5.29.15",
        **{f: f in expected_true for f in KEY_USAGE_FLAGS},
    }
    header = "X509v3 Key Usage: critical" if critical else "X509v3 Key Usage: \n"
    assert header in text
    printed = re.search(r"X509v3 Key Usage:.*\n\s+(.*)\n", text)
    assert printed is not None
    assert set(printed.group(1).split(", ")) == {
        OPENSSL_KEY_USAGE[f] for f in expected_true
    }


@pytest.mark.parametrize("critical", [True, False])
def test_every_extended_key_usage(
    make_ca: MakeCa, make_cert: MakeCert, critical: bool
) -> None:
    usages = [u for u in EXTENDED_KEY_USAGE_OIDS if u != "ANY_EXTENDED_KEY_USAGE"]
    extensions = CertExtensions.model_validate(
        {
            "ExtendedKeyUsage": {
                "enabled": True,
                "usages": usages,
                "extension_critical": critical,
            }
        }
    )
    leaf = make_cert(issuer=make_ca(), extensions=extensions)

    value = describe_certificate(leaf.pem, now=NOW)["extensions"]["ExtendedKeyUsage"]

    assert value == {"critical": critical, "oid": "2.5.29.37", "usages": usages}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"enabled": True, "ca": True, "path_length": 3, "extension_critical": True},
            {"critical": True, "ca": True, "path_length": 3},
        ),
        (
            {"enabled": True, "ca": False, "extension_critical": False},
            {"critical": False, "ca": False, "path_length": None},
        ),
    ],
)
def test_basic_constraints(
    make_ca: MakeCa,
    make_cert: MakeCert,
    options: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    key_usage = {"enabled": True, "key_cert_sign": True} if options["ca"] else {}
    extensions = CertExtensions.model_validate(
        {"BasicConstraints": options, "KeyUsage": key_usage}
    )
    leaf = make_cert(issuer=make_ca(), extensions=extensions)

    value = describe_certificate(leaf.pem, now=NOW)["extensions"]["BasicConstraints"]

    assert value == {"oid": "2.5.29.19", **expected}


def test_disabled_extensions_are_left_out(make_ca: MakeCa, make_cert: MakeCert) -> None:
    leaf = make_cert(issuer=make_ca(), extensions=CertExtensions())

    names = describe_certificate(leaf.pem, now=NOW)["extensions"]

    assert sorted(names) == [
        "AuthorityKeyIdentifier",
        "SubjectAlternativeName",
        "SubjectKeyIdentifier",
    ]


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda label: "--" not in label[2:4]
)


@given(st.lists(_LABEL, min_size=1, max_size=4), st.sampled_from(["com", "example"]))
def test_canonical_san_is_idempotent(labels: list[str], tld: str) -> None:
    name = ".".join([*labels, tld])

    first = canonical_san(name.upper())

    assert first == f"DNS:{name}"
    assert canonical_san(first) == first
