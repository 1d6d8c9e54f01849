"""Exporting a certificate with its key and chain (PKCS#12, PEM bundle)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from certd.errors import PkiError
from certd.pki.importing import key_matches
from certd.pki.keys import PrivateKey, private_key_to_pem

# PBES2 with AES-256 and PBKDF2-SHA256 and an SHA-256 MAC: what OpenSSL 3 and
# current Windows and macOS read; the legacy RC2/3DES form is not offered.
_PBKDF2_ROUNDS = 100_000


def to_pkcs12(
    cert: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    password: str | None,
    friendly_name: str | None = None,
) -> bytes:
    """A PKCS#12 file holding the key, the certificate and its chain.

    ``chain`` excludes ``cert`` itself. Without a password the file is not
    encrypted at all, for tools that cannot ask for one.

    Raises:
        PkiError: the key does not belong to the certificate.
    """
    if not key_matches(cert, key):
        raise PkiError("the private key does not match the certificate")

    encryption: serialization.KeySerializationEncryption
    if password:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(_PBKDF2_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode())
        )
    else:
        encryption = serialization.NoEncryption()

    name = friendly_name or _common_name(cert)
    return pkcs12.serialize_key_and_certificates(
        name.encode() if name else None, key, cert, list(chain) or None, encryption
    )


def to_pem_bundle(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    key: PrivateKey | None = None,
) -> str:
    """The certificate, then its chain, then optionally the unencrypted key."""
    parts = [
        c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, *chain)
    ]
    if key is not None:
        parts.append(private_key_to_pem(key))
    return "".join(parts)


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = values[0].value if values else None
    return value if isinstance(value, str) else None
