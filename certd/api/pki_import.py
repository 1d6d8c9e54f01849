"""Reading pasted PEM for imports, with refusals addressed to the field at fault.

Certificate, CA and CSR imports share these readers; each turns the PKI
library's :class:`~certd.errors.PkiError` into a validation error on the
request field a user has to fix, so nothing is stored from a bad import.
"""

from __future__ import annotations

from cryptography import x509
from pydantic import SecretStr

from certd.errors import PkiError, ValidationError
from certd.pki.csr import csr_matches_key, load_csr
from certd.pki.importing import check_key_matches, import_chain
from certd.pki.keys import PrivateKey, load_private_key


def secret(value: SecretStr | None) -> str | None:
    """The text behind a secret field, or None."""
    return value.get_secret_value() if value is not None else None


def read_chain(pem: str, field: str = "data.certificate") -> list[x509.Certificate]:
    """A pasted chain in any order, rebuilt leaf first.

    Raises:
        ValidationError: at ``field``: no certificate, DER, garbage, a gap
            or a duplicate.
    """
    try:
        return import_chain(pem)
    except PkiError as exc:
        raise ValidationError.single(field, exc.message) from None


def read_key(
    pem: str, passphrase: SecretStr | None, field: str = "data.privatekey"
) -> PrivateKey:
    """A pasted private key, decrypted with ``passphrase`` when it is encrypted.

    Raises:
        ValidationError: at ``data.passphrase`` when it is missing or wrong,
            otherwise at ``field``.
    """
    try:
        return load_private_key(pem, secret(passphrase))
    except PkiError as exc:
        # The loader names the passphrase exactly when the passphrase is at fault.
        at = "data.passphrase" if "passphrase" in exc.message else field
        raise ValidationError.single(at, exc.message) from None


def match_certificate_key(
    cert: x509.Certificate, key: PrivateKey, field: str = "data.privatekey"
) -> None:
    """Refuse a key that is not the certificate's.

    Raises:
        ValidationError: at ``field``.
    """
    try:
        check_key_matches(cert, key)
    except PkiError as exc:
        raise ValidationError.single(field, exc.message) from None


def read_csr(pem: str, field: str = "data.CSR") -> x509.CertificateSigningRequest:
    """A pasted CSR whose self-signature verifies.

    Raises:
        ValidationError: at ``field``.
    """
    try:
        return load_csr(pem)
    except PkiError as exc:
        raise ValidationError.single(field, exc.message) from None


def match_csr_key(
    csr: x509.CertificateSigningRequest,
    key: PrivateKey,
    field: str = "data.privatekey",
) -> None:
    """Refuse a key that is not the CSR's.

    Raises:
        ValidationError: at ``field``.
    """
    if not csr_matches_key(csr, key):
        raise ValidationError.single(field, "the private key does not match the CSR")
