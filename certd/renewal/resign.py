"""Renewing a certificate signed by one of certd's own CAs: sign it again.

The new certificate asks for nothing new: the old leaf's subject and
extensions are kept (key identifiers are made afresh for the new key and the
CA, and the CRL it names is the CA's current one when certd is told where CRLs
are published), the lifetime is the old one's, cut at the CA's own end.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.errors import PkiError, ValidationError
from certd.pki.constraints import check_issuers_valid, check_name_constraints
from certd.pki.extensions import crl_distribution_points
from certd.pki.keys import hash_algorithm, load_stored_private_key
from certd.pki.sign import CLOCK_SKEW, random_serial

_REMADE = (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)


def resign(
    certificate_pem: str,
    csr_pem: str,
    ca_certificate_pem: str,
    ca_key_pem: str,
    *,
    now: dt.datetime,
    crl_url: str | None = None,
) -> str:
    """A new chain for the CSR's key with the old leaf's content and issuers.

    With ``crl_url`` the new leaf names that CRL, in place of any the old one
    named; without, an old cRLDistributionPoints is kept as it was.

    Raises:
        PkiError: the CA has expired, is not valid yet, forbids a name of the
            certificate, or its key does not match its certificate.
    """
    old = x509.load_pem_x509_certificate(certificate_pem.encode())
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    # the CA's row holds its chain, the CA first
    issuers = x509.load_pem_x509_certificates(ca_certificate_pem.encode())
    ca = issuers[0]
    ca_key = load_stored_private_key(ca_key_pem)
    if ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise PkiError("the CA's private key does not match its certificate")

    check_issuers_valid(issuers, now)
    try:
        # A certificate signed before certd checked name constraints (or
        # imported with a CA) may name what the CAs forbid: not again.
        check_name_constraints(old.subject, _san(old), issuers)
    except ValidationError as exc:
        raise PkiError(f"the CA's name constraints forbid it: {exc.message}") from None

    lifetime = old.not_valid_after_utc - old.not_valid_before_utc
    # Backdated for clocks a little behind, but never to before the CA.
    not_before = max(now.replace(microsecond=0) - CLOCK_SKEW, ca.not_valid_before_utc)
    not_after = min(not_before + lifetime, ca.not_valid_after_utc)
    if not_after <= now:
        raise PkiError(f"the CA {ca.subject.rfc4514_string()} has expired")

    public_key = csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    remade = _REMADE if crl_url is None else (*_REMADE, x509.CRLDistributionPoints)
    for extension in old.extensions:
        if not isinstance(extension.value, remade):
            builder = builder.add_extension(extension.value, extension.critical)
    if crl_url is not None:
        ext, critical = crl_distribution_points(crl_url)
        builder = builder.add_extension(ext, critical=critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
        critical=False,
    )
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.public_key()  # type: ignore[arg-type]
        )
    builder = builder.add_extension(aki, critical=False)
    leaf = builder.sign(ca_key, hash_algorithm(None, ca_key))
    # the issuers above the leaf are the same as before: keep the old chain's
    pem = serialization.Encoding.PEM
    issuers = x509.load_pem_x509_certificates(certificate_pem.encode())[1:] or [ca]
    return b"".join(c.public_bytes(pem) for c in [leaf, *issuers]).decode("ascii")


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)
