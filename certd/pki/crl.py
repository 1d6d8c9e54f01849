"""Certificate revocation lists (RFC 5280 section 5)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509

from certd.errors import PkiError, ValidationCollector
from certd.pki.keys import PrivateKey, hash_algorithm, public_key_der
from certd.pki.models import Digest

# RFC 5280 5.3.1 CRLReason; value 7 is unused and removeFromCRL (8) belongs
# to delta CRLs only, so it is not offered.
REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
_REASON_LABELS = {
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

DEFAULT_NEXT_UPDATE_HOURS = 7 * 24

Revoked = tuple[int, dt.datetime, str | None]
"""A revoked certificate: serial number, revocation time, reason or None."""


def revocation_reason_choices() -> dict[str, str]:
    """Reason names of RFC 5280 5.3.1 with a label."""
    return dict(_REASON_LABELS)


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: Sequence[Revoked],
    crl_number: int,
    now: dt.datetime,
    next_update_hours: int = DEFAULT_NEXT_UPDATE_HOURS,
    digest: Digest | None = None,
) -> x509.CertificateRevocationList:
    """Build and sign a complete CRL for ``ca_cert``.

    Raises:
        PkiError: the key does not belong to the CA, or the CA may not sign CRLs.
        ValidationError: a bad CRL number, update interval, or revoked entry
            (at ``revoked.<index>``).
    """
    _check_issuer(ca_cert, ca_key)
    if now.tzinfo is None:
        raise PkiError("now must be an aware datetime")
    now = now.astimezone(dt.UTC).replace(microsecond=0)

    errors = ValidationCollector()
    # RFC 5280 5.2.3: a non-negative integer of at most 20 octets.
    if not 0 <= crl_number < 2**159:
        errors.add("crl_number", "must be between 0 and 2**159 - 1")
    if next_update_hours < 1:
        errors.add("next_update_hours", "must be at least 1 hour")
    entries = _revoked_entries(revoked, now, errors)
    errors.check()

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(hours=next_update_hours))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hash_algorithm(digest, ca_key))


def _revoked_entries(
    revoked: Sequence[Revoked], now: dt.datetime, errors: ValidationCollector
) -> list[x509.RevokedCertificate]:
    entries = []
    seen: dict[int, int] = {}
    for index, (serial, revoked_at, reason) in enumerate(revoked):
        field = f"revoked.{index}"
        if serial in seen:
            errors.add(field, f"serial {serial:X} repeats revoked.{seen[serial]}")
            continue
        seen[serial] = index
        if not 0 < serial < 2**159:
            errors.add(field, "the serial number must be positive and fit 20 octets")
            continue
        if revoked_at.tzinfo is None:
            errors.add(field, "the revocation time must be an aware datetime")
            continue
        if revoked_at > now:
            errors.add(field, "the revocation time lies in the future")
            continue
        if reason is not None and reason not in REVOCATION_REASONS:
            errors.add(
                field,
                f"unknown reason {reason!r}; use one of "
                + ", ".join(REVOCATION_REASONS),
            )
            continue

        builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at.astimezone(dt.UTC).replace(microsecond=0))
        )
        # RFC 5280 5.3.1: reasonCode is absent rather than "unspecified".
        if reason is not None and reason != "unspecified":
            builder = builder.add_extension(
                x509.CRLReason(REVOCATION_REASONS[reason]), critical=False
            )
        entries.append(builder.build())
    return entries


def _check_issuer(ca_cert: x509.Certificate, ca_key: PrivateKey) -> None:
    if public_key_der(ca_cert.public_key()) != public_key_der(ca_key):  # type: ignore[arg-type]
        raise PkiError("the CA's private key does not match its certificate")
    try:
        usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.crl_sign:
        raise PkiError("the CA's KeyUsage does not allow cRLSign")


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
