"""A new key and CSR for a renewal: same algorithm, same subject and SANs."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certd.errors import PkiError
from certd.pki.csr import load_csr
from certd.pki.keys import PrivateKey, hash_algorithm, load_stored_private_key
from certd.workers import Workers, generate_key

# SKI and AKI describe a key and an issuer; a request names neither.
_NOT_REQUESTED = (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)


def key_options_like(key: PrivateKey) -> dict[str, Any]:
    """KeyOptions fields that generate a key of the same type and size."""
    if isinstance(key, rsa.RSAPrivateKey):
        return {"key_type": "RSA", "key_length": key.key_size}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"key_type": "EC", "ec_curve": key.curve.name.upper()}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"key_type": "ED25519"}
    raise PkiError(f"cannot renew a {type(key).__name__} key")


def renewal_csr(key: PrivateKey, csr_pem: str | None, certificate_pem: str) -> str:
    """A CSR signed by ``key`` that asks for what the old one asked for.

    The old CSR's subject and extensions are copied as they are (not parsed
    and rebuilt), so nothing the first request said is lost; without a
    stored CSR the leaf's subject and SANs are used.
    """
    builder = x509.CertificateSigningRequestBuilder()
    if csr_pem:
        old = load_csr(csr_pem)
        builder = builder.subject_name(old.subject)
        extensions = list(old.extensions)
    else:
        leaf = x509.load_pem_x509_certificate(certificate_pem.encode())
        builder = builder.subject_name(leaf.subject)
        extensions = [
            ext
            for ext in leaf.extensions
            if isinstance(ext.value, x509.SubjectAlternativeName)
        ]
    for extension in extensions:
        if not isinstance(extension.value, _NOT_REQUESTED):
            builder = builder.add_extension(extension.value, extension.critical)
    csr = builder.sign(key, hash_algorithm(None, key))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


async def new_key_and_csr(
    workers: Workers, current_key_pem: str, csr_pem: str | None, certificate_pem: str
) -> tuple[str, str]:
    """A fresh key like the current one (generated off the event loop) and its CSR."""
    options = key_options_like(load_stored_private_key(current_key_pem))
    key_pem, key = await workers.run(generate_key, options)
    return key_pem, renewal_csr(key, csr_pem, certificate_pem)
