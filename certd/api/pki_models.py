"""Parameters and results of the certificate and certificateauthority namespaces.

Field names follow the NAS middleware's screens, so a console built for it
finds every wizard field here; the models check types only, the services
check meaning (through :mod:`certd.api.pki_params`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from certd.errors import ValidationCollector

# \Z, not $: "$" also matches before a final newline.
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9_-]+\Z")

CreateType = Literal[
    "CERTIFICATE_CREATE_INTERNAL",
    "CERTIFICATE_CREATE_IMPORTED",
    "CERTIFICATE_CREATE_CSR",
    "CERTIFICATE_CREATE_IMPORTED_CSR",
    "CERTIFICATE_CREATE_ACME",
]
CREATE_TYPE_LABELS: dict[str, str] = {
    "CERTIFICATE_CREATE_INTERNAL": "Internal Certificate",
    "CERTIFICATE_CREATE_IMPORTED": "Import Certificate",
    "CERTIFICATE_CREATE_CSR": "Certificate Signing Request",
    "CERTIFICATE_CREATE_IMPORTED_CSR": "Import Certificate Signing Request",
    "CERTIFICATE_CREATE_ACME": "ACME Certificate",
}
CrlReason = Literal[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]
# RFC 5280 5.3.1: only a hold may be lifted; every other reason is final.
HOLD = "certificateHold"


TRUST_STORE_FIELD = Field(
    default=False,
    description="Accepted for the screens' sake; certd does not manage the "
    "host's trust store, so only false is taken.",
)


class WizardFields(BaseModel):
    """The steps the certificate, CSR and CA wizards share: name, key, subject,
    extensions, and a key passphrase for imports."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    add_to_trusted_store: bool = TRUST_STORE_FIELD
    # key, digest and lifetime
    key_type: str | None = None
    key_length: int | None = None
    ec_curve: str | None = None
    digest_algorithm: str | None = None
    lifetime: int | None = Field(default=None, description="days")
    signedby: int | None = Field(default=None, description="id of the signing CA")
    # subject
    country: str | None = None
    state: str | None = None
    city: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    email: str | None = None
    common: str | None = None
    san: list[str] = Field(default_factory=list)
    cert_extensions: dict[str, Any] | None = None
    passphrase: SecretStr | None = None


class CertificateCreate(WizardFields):
    """Every field of the certificate screens; which apply depends on create_type."""

    create_type: CreateType
    profile: str | None = Field(
        default=None,
        description="A preset from certificate.profiles (INTERNAL) or "
        "certificate.csr_profiles (CSR); fields given here win over it.",
    )
    # imports
    certificate: str | None = Field(default=None, description="PEM chain (IMPORTED)")
    privatekey: SecretStr | None = Field(
        default=None, description="PEM key (IMPORTED, IMPORTED_CSR)"
    )
    CSR: str | None = Field(default=None, description="PEM CSR (IMPORTED_CSR)")
    # ACME; csr_id also names the CSR whose key an IMPORTED certificate uses
    csr_id: int | None = None
    acme_directory_uri: str | None = None
    tos: bool = False
    dns_mapping: dict[str, int] = Field(default_factory=dict)
    renew_days: int | None = Field(default=None, ge=1, le=365)
    preferred_chain: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Issuer common name of the chain to take when the CA offers "
        "alternates (ACME); the default chain when none matches.",
    )


class CertificateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    add_to_trusted_store: bool = TRUST_STORE_FIELD
    renew_days: int | None = Field(default=None, ge=1, le=365)
    dns_mapping: dict[str, int] | None = None
    reuse_key: bool | None = Field(
        default=None,
        description="Renew with the same key and CSR instead of a new key each time.",
    )
    revoked: bool | None = Field(
        default=None,
        description="Revoke a certificate signed by a local CA; only a "
        "certificateHold can be lifted again.",
    )
    revoked_reason: CrlReason | None = Field(
        default=None, description="RFC 5280 reason, with revoked: true"
    )


class CertificateEntry(BaseModel):
    """A certificate or CSR as query returns it; private keys are never included."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    cert_type: Literal["CERTIFICATE", "CSR"]
    create_type: str
    parsed: bool
    parse_error: str | None
    certificate: str | None
    CSR: str | None
    has_privatekey: bool
    san: list[str] | None
    common: str | None
    not_valid_before: str | None
    not_valid_after: str | None
    days_left: int | None
    fingerprint_sha256: str | None
    chain_list: list[str] | None
    signedby: int | None
    issuer: str | None
    revoked: bool
    revoked_at: str | None
    revoked_reason: str | None
    acme: dict[str, Any] | None
    dns_mapping: dict[str, int]
    renew_days: int | None


class ExportResult(BaseModel):
    """A certificate with its chain and key, as certificate.export returns it."""

    id: int
    name: str
    format: Literal["PEM", "PKCS12"]
    certificate: str = Field(description="the leaf, PEM")
    chain: list[str] = Field(description="its issuers, PEM, leaf's issuer first")
    privatekey: str | None = Field(description="unencrypted PKCS#8 PEM (PEM format)")
    pkcs12: str | None = Field(description="base64 PKCS#12 (PKCS12 format)")


CACreateType = Literal[
    "CA_CREATE_INTERNAL",
    "CA_CREATE_INTERMEDIATE",
    "CA_CREATE_IMPORTED",
]
CA_CREATE_TYPE_LABELS: dict[str, str] = {
    "CA_CREATE_INTERNAL": "Internal CA",
    "CA_CREATE_INTERMEDIATE": "Intermediate CA",
    "CA_CREATE_IMPORTED": "Import CA",
}


class CACreate(WizardFields):
    """Every field of the CA wizard; which apply depends on create_type."""

    create_type: CACreateType
    profile: str | None = Field(
        default=None,
        description="A preset from certificateauthority.profiles; when omitted, "
        "Root CA or Intermediate CA by create_type. Send null for none.",
    )
    certificate: str | None = Field(default=None, description="PEM (IMPORTED)")
    privatekey: SecretStr | None = Field(default=None, description="PEM (IMPORTED)")


class CAUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    add_to_trusted_store: bool = TRUST_STORE_FIELD
    revoked: bool | None = None
    revoked_reason: CrlReason | None = None


class CASignCSR(BaseModel):
    """Sign a stored CSR with a CA; extensions come from the signer, never the CSR."""

    model_config = ConfigDict(extra="forbid")

    ca_id: int
    csr_cert_id: int
    name: str = Field(min_length=1, max_length=120)
    profile: str | None = Field(
        default=None,
        description="A preset from certificate.profiles; by default the HTTPS "
        "preset for the CSR's key type.",
    )
    cert_extensions: dict[str, Any] | None = None
    lifetime: int | None = Field(default=None, description="days")
    digest_algorithm: str | None = None


class CAEntry(BaseModel):
    """A CA as query returns it; its private key is never included."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    create_type: str
    parsed: bool
    parse_error: str | None
    certificate: str
    has_privatekey: bool
    signedby: int | None
    issuer: str | None
    revoked: bool
    revoked_at: str | None
    revoked_reason: str | None
    signed_certificates: int
    signed_authorities: int
    revoked_certificates: list[dict[str, Any]]
    crl: str | None
    crl_number: int
    crl_url: str
    crl_pem_url: str


def check_trusted_store(errors: ValidationCollector, value: bool | None) -> None:
    """Refuse a request to add something to the host's trust store."""
    if value:
        errors.add(
            "data.add_to_trusted_store",
            "certd does not manage the host's trust store; install the CA "
            "certificate there with the system's own tools",
        )


def check_revocation_change(
    errors: ValidationCollector,
    *,
    revoked: bool | None,
    reason: str | None,
    now_revoked: bool,
    now_reason: str | None,
) -> None:
    """The rules every revocation change follows, for a certificate or a CA."""
    if reason is not None and revoked is not True:
        errors.add("data.revoked_reason", "give it together with revoked: true")
    if now_revoked and now_reason != HOLD:
        if revoked is False:
            errors.add(
                "data.revoked",
                "revocation is permanent; only a certificateHold can be lifted "
                "(RFC 5280 5.3.1)",
            )
        elif revoked and reason != now_reason:
            errors.add(
                "data.revoked_reason",
                f"already revoked ({now_reason or 'unspecified'}); only a "
                "certificateHold may change (RFC 5280 5.3.1)",
            )
