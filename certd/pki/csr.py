"""Certificate signing requests (PKCS#10, RFC 2986)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from certd.errors import PkiError, ValidationError
from certd.pki.extensions import build_extensions, san_extension
from certd.pki.keys import PrivateKey, hash_algorithm, public_key_der
from certd.pki.models import CertExtensions, Digest, Subject
from certd.pki.names import build_name, parse_san
from certd.pki.pem import missing_pem_reason, pem_blocks

_CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")


def create_csr(
    key: PrivateKey,
    subject: Subject,
    san: list[str],
    extensions: CertExtensions,
    digest: Digest | None,
) -> x509.CertificateSigningRequest:
    """Build and sign a CSR; the common name is optional when SANs are given.

    Raises:
        ValidationError: neither a common name nor a SAN, or a bad SAN entry.
    """
    names = parse_san(san)
    if not names and not subject.common:
        raise ValidationError.single(
            "san", "give a common name or at least one subject alternative name"
        )

    name = build_name(subject)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if names:
        ext, critical = san_extension(names, name)
        builder = builder.add_extension(ext, critical=critical)
    for ext, critical in build_extensions(extensions):
        builder = builder.add_extension(ext, critical=critical)

    return builder.sign(key, hash_algorithm(digest, key))


def load_csr(data: str | bytes) -> x509.CertificateSigningRequest:
    """Load one PEM CSR and check its self-signature.

    Raises:
        PkiError: no CSR, several CSRs, DER input, or a bad signature.
    """
    blocks = pem_blocks(data, _CSR_LABELS)
    if not blocks:
        raise PkiError(missing_pem_reason(data, "certificate signing request"))
    if len(blocks) > 1:
        raise PkiError(f"found {len(blocks)} CSRs; give exactly one")

    try:
        csr = x509.load_pem_x509_csr(blocks[0])
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"the CSR cannot be read: {exc}") from None
    if not valid:
        raise PkiError("the CSR's signature does not verify with its own public key")
    return csr


def csr_matches_key(csr: x509.CertificateSigningRequest, key: PrivateKey) -> bool:
    """Whether ``key`` is the private half of the CSR's public key."""
    try:
        return public_key_der(csr.public_key()) == public_key_der(key)  # type: ignore[arg-type]
    except (ValueError, UnsupportedAlgorithm):
        return False
