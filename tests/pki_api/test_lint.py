"""Every shipped profile, issued through the API, passes pkilint for its kind."""

from __future__ import annotations

import pytest
from cryptography import x509

from certd.client import Client
from certd.pki.profiles import certificate_profiles, csr_profiles
from tests.daemon import call_job
from tests.pki.pkilint_helpers import (
    CertificateType,
    cabf_serverauth_errors,
    crl_errors,
    pkix_errors,
)
from tests.pki.test_profiles import PRIVATE_PKI_FINDINGS
from tests.pki_api.conftest import leaf_of, make_intermediate, make_root

HTTPS = ("HTTPS RSA Certificate", "HTTPS ECC Certificate")


async def test_ca_profiles_and_their_crls_pass_lint(client: Client) -> None:
    root = await make_root(client, "root", profile="Root CA")
    inter = await make_intermediate(
        client, root["id"], "inter", profile="Intermediate CA"
    )

    root_type, root_findings = cabf_serverauth_errors(leaf_of(root))
    inter_type, inter_findings = cabf_serverauth_errors(leaf_of(inter))

    assert pkix_errors(leaf_of(root)) == []
    assert pkix_errors(leaf_of(inter)) == []
    assert root_type == CertificateType.ROOT_CA
    assert inter_type == CertificateType.INTERNAL_UNCONSTRAINED_TLS_CA
    assert set(root_findings) <= PRIVATE_PKI_FINDINGS
    assert set(inter_findings) <= PRIVATE_PKI_FINDINGS
    for ca in (root, inter):
        assert crl_errors(x509.load_pem_x509_crl(ca["crl"].encode())) == []


@pytest.mark.parametrize("profile", list(certificate_profiles()))
async def test_certificate_profiles_pass_lint(client: Client, profile: str) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])

    leaf = await call_job(
        client,
        "certificate.create",
        {
            "name": "leaf",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter["id"],
            "profile": profile,
            "common": "www.example.com",
            "san": ["www.example.com"],
        },
    )

    assert pkix_errors(leaf_of(leaf)) == []
    if profile in HTTPS:
        _, findings = cabf_serverauth_errors(
            leaf_of(leaf), CertificateType.DV_FINAL_CERTIFICATE
        )
        assert set(findings) <= PRIVATE_PKI_FINDINGS


@pytest.mark.parametrize("profile", list(csr_profiles()))
async def test_csr_profiles_signed_by_a_ca_pass_lint(
    client: Client, profile: str
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": "req",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "profile": profile,
            "common": "www.example.com",
            "san": ["www.example.com"],
        },
    )

    signed = await client.call(
        "certificateauthority.ca_sign_csr",
        {
            "ca_id": inter["id"],
            "csr_cert_id": csr["id"],
            "name": "signed",
            "profile": profile,
        },
    )

    assert csr["extensions"]["KeyUsage"]["critical"] is True
    assert (
        signed["extensions"]["ExtendedKeyUsage"]
        == csr["extensions"]["ExtendedKeyUsage"]
    )
    assert pkix_errors(leaf_of(signed)) == []
    if profile in HTTPS:
        _, findings = cabf_serverauth_errors(
            leaf_of(signed), CertificateType.DV_FINAL_CERTIFICATE
        )
        assert set(findings) <= PRIVATE_PKI_FINDINGS
