"""Reading pasted PEM for imports, with refusals addressed to the field at fault.

Certificate, CA and CSR imports share these readers; each turns the PKI
library's :class:`~certd.errors.PkiError` into a validation error on the
request field a user has to fix, so nothing is stored from a bad import.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from certd.errors import PkiError, ValidationError
from certd.pki.csr import csr_matches_key, load_csr
from certd.pki.importing import check_key_matches, import_chain
from certd.pki.keycheck import IN_PROCESS_BITS, check_rsa_key_apart
from certd.pki.keys import (
    PrivateKey,
    read_private_key,
    validate_private_key,
)


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


async def read_checked_key(
    pem: str,
    passphrase: SecretStr | None,
    field: str = "data.privatekey",
) -> PrivateKey:
    """A pasted private key, decrypted with ``passphrase`` and fully checked.

    The event loop runs on meanwhile. Reading and the size bound are cheap and come first, so an oversized or
    unreadable key is refused before anything costly. An RSA key above 2048
    bits is checked in a child process (:mod:`certd.pki.keycheck`): the check
    holds the interpreter lock, for seconds at 8192 bits.

    Raises:
        ValidationError: at ``data.passphrase`` when it is missing or wrong,
            otherwise at ``field``.
    """
    try:
        key = read_private_key(pem, secret(passphrase))
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size > IN_PROCESS_BITS:
            await check_rsa_key_apart(key)
            return key
        return validate_private_key(key)
    except PkiError as exc:
        raise _key_error(exc, field) from None


def _key_error(exc: PkiError, field: str) -> ValidationError:
    # The loader names the passphrase exactly when the passphrase is at fault.
    at = "data.passphrase" if "passphrase" in exc.message else field
    return ValidationError.single(at, exc.message)


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
