"""Server certificates for wss:// tests, made on the spot."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from certd.config import Config
from certd.store.models import Certificate
from tests.daemon import make_config, running_daemon

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


Digest = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def make_server_cert(
    kind: str = "ec", digest: Digest | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed certificate for 127.0.0.1, signed with ``digest``."""
    key: PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    signing = None if kind == "ed25519" else (digest or hashes.SHA256())
    return builder.sign(key, signing), key


def server_context(
    cert: x509.Certificate, key: PrivateKey, directory: Path
) -> ssl.SSLContext:
    """A TLS server context holding ``cert``."""
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


async def https_config(state: Path, name: str = "api") -> tuple[Config, bytes]:
    """A config whose HTTP listener serves a stored ECDSA certificate; its DER."""
    cert, key = make_server_cert("ec")
    async with running_daemon(make_config(state)) as running:
        async with running.daemon.db.session() as session:
            session.add(
                Certificate(
                    name=name,
                    cert_type="CERTIFICATE",
                    create_type="CERTIFICATE_CREATE_IMPORTED",
                    certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
                    privatekey=key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                )
            )
    config = make_config(state, server={"tls_certificate": name})
    return config, cert.public_bytes(serialization.Encoding.DER)


def insecure() -> ssl.SSLContext:
    """Like the client's --insecure: nothing verified, the certificate still read."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
