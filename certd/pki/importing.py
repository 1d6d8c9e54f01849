"""Importing certificates: a PEM chain in any order, rebuilt leaf first."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from certd.errors import PkiError
from certd.pki.keys import PrivateKey, public_key_der
from certd.pki.pem import missing_pem_reason, pem_blocks

_CERT_LABELS = ("CERTIFICATE", "X509 CERTIFICATE")


MAX_CHAIN_LENGTH = 16


def import_chain(pem_text: str | bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle and order it leaf first.

    Text around the blocks (``Bag Attributes``, ``subject=`` lines) and other
    PEM blocks such as keys are ignored. Each certificate must be issued by
    the next one; the last may be a root or an intermediate.

    Raises:
        PkiError: no certificate, DER input, an unreadable block, a repeated
            certificate, or certificates that do not form one unbroken chain.
    """
    blocks = pem_blocks(pem_text, _CERT_LABELS)
    if not blocks:
        raise PkiError(missing_pem_reason(pem_text, "certificate"))
    if len(blocks) > MAX_CHAIN_LENGTH:
        # Ordering compares certificates pairwise; real chains are short.
        raise PkiError(
            f"the input holds {len(blocks)} certificates; a chain may hold at "
            f"most {MAX_CHAIN_LENGTH}"
        )

    certs: list[x509.Certificate] = []
    seen: dict[bytes, int] = {}
    for index, block in enumerate(blocks):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise PkiError(f"certificate {index} cannot be read: {exc}") from None
        fingerprint = cert.fingerprint(hashes.SHA256())
        if fingerprint in seen:
            raise PkiError(
                f"certificate {index} ({_label(cert)}) repeats certificate "
                f"{seen[fingerprint]}"
            )
        seen[fingerprint] = index
        certs.append(cert)

    return order_chain(certs)


def order_chain(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Order distinct certificates from the leaf up to the top of the chain.

    Raises:
        PkiError: the certificates do not form one unbroken chain.
    """
    if len(certs) == 1:
        return list(certs)

    issuer_of: dict[int, int] = {}
    for i, child in enumerate(certs):
        for j, parent in enumerate(certs):
            if i != j and issued_by(child, parent):
                issuer_of[i] = j
                break

    issuers = set(issuer_of.values())
    leaves = [i for i in range(len(certs)) if i not in issuers]
    if len(leaves) != 1:
        raise PkiError(_gap_reason(certs, issuer_of, leaves))

    chain = [leaves[0]]
    while chain[-1] in issuer_of and issuer_of[chain[-1]] not in chain:
        chain.append(issuer_of[chain[-1]])
    if len(chain) != len(certs):
        raise PkiError(_gap_reason(certs, issuer_of, leaves))
    return [certs[i] for i in chain]


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent`` is named as the issuer of ``child`` and signed it."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _gap_reason(
    certs: list[x509.Certificate], issuer_of: dict[int, int], leaves: list[int]
) -> str:
    for i, cert in enumerate(certs):
        if i in issuer_of or cert.issuer == cert.subject:
            continue
        same_name = [
            j for j, c in enumerate(certs) if j != i and c.subject == cert.issuer
        ]
        if same_name:
            return (
                f"the chain is broken: certificate {i} ({_label(cert)}) names "
                f"certificate {same_name[0]} as issuer, but its signature does not "
                "verify with that certificate's key"
            )
    if not leaves:
        return "the certificates issue each other in a loop"

    parts = []
    for leaf in leaves:
        path = [leaf]
        while path[-1] in issuer_of and issuer_of[path[-1]] not in path:
            path.append(issuer_of[path[-1]])
        top = certs[path[-1]]
        if top.issuer == top.subject:
            end = "self-signed"
        else:
            end = f"issued by missing {top.issuer.rfc4514_string()!r}"
        steps = " -> ".join(f"{i} ({_label(certs[i])})" for i in path)
        parts.append(f"{steps}, {end}")
    return (
        f"the certificates form {len(leaves)} separate chains instead of one: "
        + "; ".join(parts)
        + "; a certificate between them is missing or one does not belong"
    )


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "empty subject"


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private half of the certificate's public key."""
    try:
        return public_key_der(cert.public_key()) == public_key_der(key)  # type: ignore[arg-type]
    except (ValueError, UnsupportedAlgorithm):
        return False


def check_key_matches(cert: x509.Certificate, key: PrivateKey) -> None:
    """Refuse a private key that does not belong to the certificate.

    Raises:
        PkiError: the public keys differ.
    """
    if not key_matches(cert, key):
        raise PkiError(
            f"the private key does not match the certificate ({_label(cert)})"
        )
