"""A store of many distinct certificates, written straight into certd's database.

Every certificate is distinct (its own key, serial, name and expiry), so the
daemon cannot answer from a cache of a few; private keys are sealed by the
store's own column types, as the API would store them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.store.db import Database
from certd.store.masterkey import unlock_store
from certd.store.models import Certificate

_PEM = serialization.Encoding.PEM


def _bench_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certd bench CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_certificates(count: int, prefix: str = "inv") -> list[tuple[str, str, str]]:
    """(name, chain PEM, key PEM) for ``count`` distinct EC P-256 certificates.

    Expiry dates spread over the next 400 days, one in 50 already expired, so
    filters on ``days_left`` select a realistic share.
    """
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = _bench_ca(now)
    ca_pem = ca.public_bytes(_PEM).decode()
    out = []
    for index in range(count):
        name = f"{prefix}-{index:05d}"
        key = ec.generate_private_key(ec.SECP256R1())
        days = -3 if index % 50 == 0 else 1 + (index * 7919) % 400
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.example.test")]
                )
            )
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(f"{name}.example.test")]),
                critical=False,
            )
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        out.append((name, cert.public_bytes(_PEM).decode() + ca_pem, key_pem))
    return out


async def _insert(state_dir: Path, rows: list[tuple[str, str, str]]) -> None:
    db = Database(f"sqlite+aiosqlite:///{state_dir / 'certd.db'}")
    try:
        await db.migrate()
        await unlock_store(db, state_dir)
        async with db.session() as session:
            session.add_all(
                Certificate(
                    name=name,
                    cert_type="CERTIFICATE",
                    create_type="CERTIFICATE_CREATE_IMPORTED",
                    certificate=chain,
                    privatekey=key,
                )
                for name, chain, key in rows
            )
    finally:
        await db.close()


async def fill_store(state_dir: Path, count: int) -> None:
    """Write ``count`` certificates into the (stopped) daemon's store."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    rows = await asyncio.to_thread(make_certificates, count)
    await _insert(state_dir, rows)
