"""Private keys: generation, PEM export and tolerant PEM import.

Loading an RSA key the usual way runs OpenSSL's RSA_check_key, which tests
both primes for primality: about 0.3 s for RSA-4096, 4 s for RSA-8192 and
over 30 s for RSA-16384. Keys are therefore read without that check
(:func:`read_private_key`), checked once where they come in
(:func:`validate_private_key`; from the event loop, large RSA keys in a
child process, see certd.pki.keycheck), and loaded unchecked from certd's
own store
(:func:`load_stored_private_key`).
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certd.errors import PkiError
from certd.pki.der import check_key_encryption_cost
from certd.pki.keycheck import INCONSISTENT
from certd.pki.models import DEFAULT_DIGEST, Digest, KeyOptions
from certd.pki.pem import missing_pem_reason, pem_blocks

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

MIN_RSA_BITS = 2048
# Imported RSA keys may have at most this many bits. certd itself generates
# at most 4096; 8192 leaves room for keys made elsewhere. OpenSSL
# goes up to 16384, but checking such a key takes over 30 s of a worker, and
# signing, which runs on the event loop, costs about the cube of the size:
# ~40 ms at 8192 bits, so some 0.3 s of stall per certificate or CRL at 16384.
MAX_RSA_BITS = 8192
_PRIVATE_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
)

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "SECP256R1": ec.SECP256R1,
    "SECP384R1": ec.SECP384R1,
    "SECP521R1": ec.SECP521R1,
}
_HASHES: dict[str, type[SigningHash]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}

# Labels of RFC 7468 (PKCS#8, encrypted PKCS#8) and the OpenSSL traditional
# forms (PKCS#1 for RSA, SEC1 for EC); "EC PARAMETERS" blocks are skipped.
_KEY_LABELS = (
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
)


def generate_private_key(options: KeyOptions) -> PrivateKey:
    """Generate a new key as described by ``options``; CPU-heavy for RSA."""
    if options.key_type == "RSA":
        bits = options.key_length or MIN_RSA_BITS
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if options.key_type == "EC":
        curve = CURVES[options.ec_curve or "SECP384R1"]
        return ec.generate_private_key(curve())
    return ed25519.Ed25519PrivateKey.generate()


def private_key_to_pem(key: PrivateKey, passphrase: str | None = None) -> str:
    """Serialize a key as PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase.encode())
    else:
        encryption = serialization.NoEncryption()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return pem.decode("ascii")


def public_key_to_pem(key: PublicKey) -> str:
    """Serialize a public key as SubjectPublicKeyInfo PEM."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def load_private_key(data: str | bytes, passphrase: str | None = None) -> PrivateKey:
    """Load and fully check one PEM private key that comes from outside certd.

    Runs RSA_check_key on the calling thread, holding the interpreter lock:
    from the event loop use certd.api.pki_import.read_checked_key.

    Raises:
        PkiError: as :func:`read_private_key` and :func:`validate_private_key`.
    """
    return validate_private_key(read_private_key(data, passphrase))


def read_private_key(data: str | bytes, passphrase: str | None = None) -> PrivateKey:
    """Read one PEM private key for import, ignoring text and EC PARAMETERS around it.

    Cheap: the RSA consistency check is left to :func:`validate_private_key`,
    which an imported key must pass before it is used or stored.

    Raises:
        PkiError: no key, several keys, DER input, a wrong or missing
            passphrase, an unsupported or too weak key, or an RSA key larger
            than :data:`MAX_RSA_BITS`.
    """
    key = check_private_key(_read(data, passphrase))
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size > MAX_RSA_BITS:
        raise PkiError(
            f"the RSA key has {key.key_size} bits; at most {MAX_RSA_BITS} are "
            "accepted (larger keys take seconds to check and to sign with)"
        )
    return key


def load_stored_private_key(data: str | bytes) -> PrivateKey:
    """Load a key from certd's own store without re-checking an RSA key.

    Every stored key was generated here or passed :func:`validate_private_key`
    on import, and the store's AES-GCM encryption authenticates it, so it
    cannot have changed since; checking it again would cost seconds per
    signature with a large CA key. No size bound either: a key stored before
    :data:`MAX_RSA_BITS` existed keeps working.

    Raises:
        PkiError: the stored text holds no readable, supported key.
    """
    return check_private_key(_read(data, None))


def validate_private_key(key: PrivateKey) -> PrivateKey:
    """Check that an RSA key's primes, exponents and CRT values belong together.

    CPU-heavy for large RSA keys (seconds for RSA-8192) and holding the
    interpreter lock throughout: from the event loop, check large keys with
    :func:`certd.pki.keycheck.check_rsa_key_apart`. EC keys are checked on
    reading already; Ed25519 keys have nothing to check.

    Raises:
        PkiError: the RSA key is inconsistent.
    """
    if not isinstance(key, rsa.RSAPrivateKey):
        return key
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        checked = serialization.load_der_private_key(der, password=None)
    except ValueError:
        raise PkiError(INCONSISTENT) from None
    return check_private_key(checked)


def _read(data: str | bytes, passphrase: str | None) -> Any:
    blocks = pem_blocks(data, _KEY_LABELS)
    if not blocks:
        raise PkiError(missing_pem_reason(data, "private key"))
    if len(blocks) > 1:
        raise PkiError(f"found {len(blocks)} private keys; give exactly one")

    password = passphrase.encode() if passphrase else None
    if password is not None and blocks[0].startswith(b"-----BEGIN ENCRYPTED"):
        check_key_encryption_cost(blocks[0])
    try:
        return serialization.load_pem_private_key(
            blocks[0], password=password, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        if password is None:
            raise PkiError(
                "the private key is encrypted; a passphrase is required"
            ) from None
        # A passphrase for a key that is not encrypted is harmless.
        return _load_plain(blocks[0])
    except ValueError as exc:
        if password is not None and _is_encrypted(blocks[0]):
            raise PkiError("the passphrase does not decrypt the private key") from None
        raise PkiError(f"the private key cannot be read: {exc}") from None
    except UnsupportedAlgorithm as exc:
        raise PkiError(
            f"the private key uses an unsupported algorithm: {exc}"
        ) from None


def _load_plain(block: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(
            block, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"the private key cannot be read: {exc}") from None


def _is_encrypted(block: bytes) -> bool:
    return (
        block.startswith(b"-----BEGIN ENCRYPTED") or b"Proc-Type: 4,ENCRYPTED" in block
    )


def check_private_key(key: Any) -> PrivateKey:
    """Refuse key types and sizes certd does not sign with or accept.

    Raises:
        PkiError: the key is not RSA >= 2048, EC on a NIST prime curve, or Ed25519.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise PkiError(
                f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} "
                "are required (112-bit security, NIST SP 800-131A)"
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name.upper() not in CURVES:
            raise PkiError(
                f"the EC key is on curve {key.curve.name}; only SECP256R1, "
                "SECP384R1 and SECP521R1 are supported"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise PkiError(
        f"unsupported private key type {type(key).__name__}; use RSA, EC or Ed25519"
    )


def key_description(key: PrivateKey | PublicKey) -> dict[str, Any]:
    """Describe a key as ``{key_type, key_length, ec_curve}``."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return {"key_type": "RSA", "key_length": key.key_size, "ec_curve": None}
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {
            "key_type": "EC",
            "key_length": key.curve.key_size,
            "ec_curve": key.curve.name.upper(),
        }
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return {"key_type": "ED25519", "key_length": None, "ec_curve": None}
    name = type(key).__name__.upper()
    for prefix in ("DSA", "ED448", "X25519", "X448"):
        if name.startswith(prefix):
            return {"key_type": prefix, "key_length": None, "ec_curve": None}
    return {"key_type": "OTHER", "key_length": None, "ec_curve": None}


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a key, for comparing keys."""
    public = key.public_key() if isinstance(key, _PRIVATE_TYPES) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hash_algorithm(digest: Digest | None, key: PrivateKey) -> SigningHash | None:
    """The hash to sign with: none for Ed25519, the default when ``digest`` is None."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return _HASHES[digest or DEFAULT_DIGEST]()
