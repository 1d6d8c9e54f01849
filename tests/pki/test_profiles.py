"""Presets and choices: each preset validates, issues, and passes pkilint."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509

from certd.pki.keys import generate_private_key, key_description
from certd.pki.models import CertExtensions, KeyOptions, Subject
from certd.pki.names import build_name
from certd.pki.profiles import (
    ca_profiles,
    certificate_profiles,
    country_choices,
    csr_profiles,
    digest_choices,
    ec_curve_choices,
    extended_key_usage_choices,
    key_length_choices,
    key_type_choices,
)
from certd.pki.sign import build_certificate
from tests.pki.conftest import NOW, Issued, OpenSSL, cn
from tests.pki.pkilint_helpers import (
    CertificateType,
    cabf_serverauth_errors,
    pkix_errors,
)

KEY_FIELDS = ("key_type", "key_length", "ec_curve", "digest_algorithm")

# A private CA publishes no CPS, CRL or OCSP URL; those public-trust
# requirements are the only CA/B findings a preset may leave.
PRIVATE_PKI_FINDINGS = {
    "ERROR cabf.serverauth.ca.certificate_policies_extension_absent",
    "ERROR cabf.serverauth.ca.crl_distribution_points_extension_absent",
    "ERROR cabf.serverauth.subscriber.authority_info_access_extension_absent",
    "ERROR cabf.serverauth.subscriber.certificate_policies_extension_absent",
    "ERROR cabf.serverauth.subscriber.revocation_information_absent",
    "ERROR msft.end_entity.revocation_information_absent",
}


def issue(
    profile: dict[str, Any], subject: x509.Name, issuer: Issued | None, san: list[str]
) -> Issued:
    options = KeyOptions.model_validate({k: profile[k] for k in KEY_FIELDS})
    key = generate_private_key(options)
    cert = build_certificate(
        subject_key_public=key.public_key(),
        subject=subject,
        san=san,
        extensions=CertExtensions.model_validate(profile["cert_extensions"]),
        issuer_cert=issuer.cert if issuer else None,
        issuer_key=issuer.key if issuer else key,
        digest=options.digest_algorithm,
        lifetime_days=profile["lifetime"],
        now=NOW,
    )
    return Issued(cert, key)


@pytest.fixture(scope="module")
def hierarchy() -> tuple[Issued, Issued]:
    profiles = ca_profiles()
    # CA/B BR 7.1.2.10.2: CA subjects carry a country and an organization.
    root_name = build_name(Subject(country="DE", organization="certd", common="Root"))
    inter_name = build_name(Subject(country="DE", organization="certd", common="TLS"))
    root = issue(profiles["Root CA"], root_name, None, [])
    inter = issue(profiles["Intermediate CA"], inter_name, root, [])
    return root, inter


def test_profile_names() -> None:
    assert list(certificate_profiles()) == [
        "HTTPS RSA Certificate",
        "HTTPS ECC Certificate",
        "TLS Client Certificate",
        "OpenVPN Server Certificate",
        "OpenVPN Client Certificate",
    ]
    assert list(csr_profiles()) == list(certificate_profiles())
    assert list(ca_profiles()) == ["Root CA", "Intermediate CA"]


@pytest.mark.parametrize(
    "profile",
    [*certificate_profiles().values(), *ca_profiles().values()],
)
def test_profiles_validate_unchanged(profile: dict[str, Any]) -> None:
    options = KeyOptions.model_validate({k: profile[k] for k in KEY_FIELDS})
    extensions = CertExtensions.model_validate(profile["cert_extensions"])

    assert options.model_dump() == {k: profile[k] for k in KEY_FIELDS}
    assert extensions.model_dump() == profile["cert_extensions"]
    assert set(profile) == {*KEY_FIELDS, "lifetime", "cert_extensions"}
    assert extensions.ExtendedKeyUsage.extension_critical is False
    assert extensions.KeyUsage.extension_critical is True


def test_csr_profiles_have_no_lifetime() -> None:
    for name, profile in csr_profiles().items():
        expected = certificate_profiles()[name]
        del expected["lifetime"]
        assert profile == expected


def test_profiles_are_copies() -> None:
    certificate_profiles()["HTTPS RSA Certificate"]["key_length"] = 4096

    assert certificate_profiles()["HTTPS RSA Certificate"]["key_length"] == 2048


def test_ca_profiles_values() -> None:
    root, inter = ca_profiles()["Root CA"], ca_profiles()["Intermediate CA"]

    assert (root["lifetime"], inter["lifetime"]) == (3650, 1825)
    assert root["cert_extensions"]["BasicConstraints"]["path_length"] is None
    assert inter["cert_extensions"]["BasicConstraints"]["path_length"] == 0
    assert root["cert_extensions"]["ExtendedKeyUsage"]["enabled"] is False
    assert inter["cert_extensions"]["ExtendedKeyUsage"]["usages"] == [
        "SERVER_AUTH",
        "CLIENT_AUTH",
    ]


@pytest.mark.parametrize("name", list(ca_profiles()))
def test_ca_profiles_pass_pkix_and_cabf_lint(
    name: str, hierarchy: tuple[Issued, Issued]
) -> None:
    issued = hierarchy[0] if name == "Root CA" else hierarchy[1]

    cert_type, cabf = cabf_serverauth_errors(issued.cert)

    assert pkix_errors(issued.cert) == []
    assert cert_type == (
        CertificateType.ROOT_CA
        if name == "Root CA"
        else CertificateType.INTERNAL_UNCONSTRAINED_TLS_CA
    )
    assert set(cabf) <= PRIVATE_PKI_FINDINGS


@pytest.mark.parametrize("name", list(certificate_profiles()))
def test_certificate_profiles_pass_pkix_lint(
    name: str, hierarchy: tuple[Issued, Issued], openssl: OpenSSL
) -> None:
    profile = certificate_profiles()[name]
    leaf = issue(profile, cn("www.example.com"), hierarchy[1], ["DNS:www.example.com"])

    assert pkix_errors(leaf.cert) == []
    description = key_description(leaf.key)
    assert (description["key_type"], description["ec_curve"]) == (
        profile["key_type"],
        profile["ec_curve"],
    )
    curve_bits = {"SECP256R1": 256, "SECP384R1": 384}.get(profile["ec_curve"])
    assert description["key_length"] == (profile["key_length"] or curve_bits)
    purpose = "sslserver" if "SERVER_AUTH" in str(profile) else "sslclient"
    out = openssl.run(
        "verify", "-attime", str(int((NOW + dt.timedelta(days=1)).timestamp())),
        "-purpose", purpose, "-x509_strict",
        "-CAfile", openssl.write("root.pem", hierarchy[0].pem),
        "-untrusted", openssl.write("inter.pem", hierarchy[1].pem),
        openssl.write("leaf.pem", leaf.pem),
    )  # fmt: skip
    assert out.endswith("leaf.pem: OK\n")


@pytest.mark.parametrize("name", ["HTTPS RSA Certificate", "HTTPS ECC Certificate"])
def test_https_profiles_pass_cabf_serverauth_lint(
    name: str, hierarchy: tuple[Issued, Issued]
) -> None:
    leaf = issue(
        certificate_profiles()[name],
        cn("www.example.com"),
        hierarchy[1],
        ["DNS:www.example.com"],
    )

    _, findings = cabf_serverauth_errors(
        leaf.cert, CertificateType.DV_FINAL_CERTIFICATE
    )

    assert set(findings) <= PRIVATE_PKI_FINDINGS


def test_choices() -> None:
    assert list(key_type_choices()) == ["RSA", "EC", "ED25519"]
    assert list(ec_curve_choices()) == ["SECP256R1", "SECP384R1", "SECP521R1"]
    assert list(digest_choices()) == ["SHA256", "SHA384", "SHA512"]
    assert list(key_length_choices()) == [2048, 3072, 4096]
    assert extended_key_usage_choices()["SERVER_AUTH"] == (
        "TLS Web Server Authentication (1.3.6.1.5.5.7.3.1)"
    )
    assert len(extended_key_usage_choices()) == 12
    assert country_choices()["FR"] == "France"
    assert len(country_choices()) == 249
