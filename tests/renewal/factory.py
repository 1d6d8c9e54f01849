"""Small CAs and chains for renewal and deploy tests, and a store row for them."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.pki.keys import private_key_to_pem
from certd.service import Daemon
from certd.store.models import Certificate, CertificateAuthority

PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Chain:
    """A leaf with its key, and the CA that signed it."""

    leaf: x509.Certificate
    key_pem: str
    ca: x509.Certificate
    ca_key_pem: str

    @property
    def fullchain_pem(self) -> str:
        return (self.leaf.public_bytes(PEM) + self.ca.public_bytes(PEM)).decode()

    @property
    def ca_pem(self) -> str:
        return self.ca.public_bytes(PEM).decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_chain(
    names: list[str],
    *,
    not_before: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=90),
    ca_lifetime: dt.timedelta = dt.timedelta(days=3650),
) -> Chain:
    """A root CA and a leaf for ``names`` (EC P-256 keys)."""
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("certd test CA"))
        .issuer_name(_name("certd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(days=1))
        .not_valid_after(start + ca_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Chain(leaf, private_key_to_pem(key), ca, private_key_to_pem(ca_key))


async def store_certificate(
    daemon: Daemon, name: str, chain: Chain, *, signed_by_ca: bool = False
) -> int:
    """Insert a certificate (and, if asked, its CA) as the PKI would; return its id."""
    async with daemon.db.session() as session:
        ca_id = None
        if signed_by_ca:
            ca = CertificateAuthority(
                name=f"{name}-ca",
                create_type="CA_CREATE_INTERNAL",
                certificate=chain.ca_pem,
                privatekey=chain.ca_key_pem,
            )
            session.add(ca)
            await session.flush()
            ca_id = ca.id
        row = Certificate(
            name=name,
            cert_type="CERTIFICATE",
            create_type="CERTIFICATE_CREATE_INTERNAL"
            if signed_by_ca
            else "CERTIFICATE_CREATE_IMPORTED",
            certificate=chain.fullchain_pem,
            privatekey=chain.key_pem,
            signedby_id=ca_id,
        )
        session.add(row)
        await session.flush()
        return row.id


async def wait_until(
    check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` (sync or async) until it returns something true; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
