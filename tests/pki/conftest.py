"""Factories for keys, CAs and certificates, all on a fixed clock."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certd.pki.keys import PrivateKey, generate_private_key
from certd.pki.models import CertExtensions, Digest, KeyOptions
from certd.pki.sign import build_certificate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)

CA_EXTENSIONS = CertExtensions.model_validate(
    {
        "BasicConstraints": {"enabled": True, "ca": True, "extension_critical": True},
        "KeyUsage": {
            "enabled": True,
            "key_cert_sign": True,
            "crl_sign": True,
            "digital_signature": True,
            "extension_critical": True,
        },
    }
)
LEAF_EXTENSIONS = CertExtensions.model_validate(
    {
        "BasicConstraints": {"enabled": True, "ca": False, "extension_critical": True},
        "KeyUsage": {
            "enabled": True,
            "digital_signature": True,
            "extension_critical": True,
        },
        "ExtendedKeyUsage": {"enabled": True, "usages": ["SERVER_AUTH"]},
    }
)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cn(value: str) -> x509.Name:
    """A name with only a common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


MakeKey = Callable[..., PrivateKey]
MakeCa = Callable[..., Issued]
MakeCert = Callable[..., Issued]


@pytest.fixture(scope="session")
def _key_pool() -> dict[str, PrivateKey]:
    return {}


@pytest.fixture
def make_key(_key_pool: dict[str, PrivateKey]) -> MakeKey:
    """Keys by type; the same options give the same key unless ``fresh``."""

    def make(
        key_type: str = "EC", *, fresh: bool = False, **options: Any
    ) -> PrivateKey:
        spec = KeyOptions(key_type=key_type, **options)  # type: ignore[arg-type]
        label = spec.model_dump_json()
        if fresh:
            return generate_private_key(spec)
        if label not in _key_pool:
            _key_pool[label] = generate_private_key(spec)
        return _key_pool[label]

    return make


@pytest.fixture
def make_ca(make_key: MakeKey) -> MakeCa:
    """A root CA (or an intermediate under ``parent``) valid for years around NOW."""

    def make(
        name: str = "certd Test Root CA",
        *,
        parent: Issued | None = None,
        key: PrivateKey | None = None,
        path_length: int | None = None,
        lifetime_days: int = 3650,
        now: dt.datetime = NOW - dt.timedelta(days=365),
        digest: Digest | None = "SHA256",
        extensions: CertExtensions | None = None,
    ) -> Issued:
        key = key or make_key("EC", fresh=True)
        ext = extensions or CA_EXTENSIONS
        if path_length is not None:
            bc = ext.BasicConstraints.model_copy(update={"path_length": path_length})
            ext = ext.model_copy(update={"BasicConstraints": bc})
        cert = build_certificate(
            subject_key_public=key.public_key(),
            subject=cn(name),
            san=[],
            extensions=ext,
            issuer_cert=parent.cert if parent else None,
            issuer_key=parent.key if parent else key,
            digest=digest,
            lifetime_days=lifetime_days,
            now=now,
        )
        return Issued(cert, key)

    return make


@pytest.fixture
def make_cert(make_key: MakeKey, make_ca: MakeCa) -> MakeCert:
    """A leaf certificate; ``not_after`` pins its end, ``issuer`` defaults to a root."""

    def make(
        *,
        issuer: Issued | None = None,
        common: str | None = "a.example",
        san: Sequence[str] = ("DNS:a.example",),
        not_after: dt.datetime | None = None,
        lifetime_days: int = 90,
        key: PrivateKey | None = None,
        digest: Digest | None = "SHA256",
        extensions: CertExtensions | None = None,
    ) -> Issued:
        issuer = issuer or make_ca()
        key = key or make_key("EC")
        now = NOW if not_after is None else not_after - dt.timedelta(days=lifetime_days)
        cert = build_certificate(
            subject_key_public=key.public_key(),
            subject=cn(common) if common else x509.Name([]),
            san=list(san),
            extensions=extensions or LEAF_EXTENSIONS,
            issuer_cert=issuer.cert,
            issuer_key=issuer.key,
            digest=digest,
            lifetime_days=lifetime_days,
            now=now,
        )
        return Issued(cert, key)

    return make


@dataclass
class OpenSSL:
    """The openssl command line, run on files in a temporary directory."""

    workdir: Path

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def run(
        self, *args: str | Path, input: bytes | None = None, with_stderr: bool = False
    ) -> str:
        result = subprocess.run(
            ["openssl", *map(str, args)], capture_output=True, input=input, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"openssl {' '.join(map(str, args))} failed: "
                f"{result.stderr.decode(errors='replace')}"
            )
        out = result.stdout.decode(errors="replace")
        return out + result.stderr.decode(errors="replace") if with_stderr else out


@pytest.fixture
def openssl(tmp_path: Path) -> OpenSSL:
    """Runs openssl in this test's temporary directory."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed")
    return OpenSSL(tmp_path)


def oversized_rsa_pem(bits: int) -> str:
    """A PKCS#8 PEM RSA key of ``bits`` bits made of random numbers, not primes.

    Generating a real key above 8192 bits takes minutes; a reader that looks
    at the size before checking the key refuses this one for its size alone.
    """
    half = bits // 2
    # Top two bits set, so the product has exactly ``bits`` bits; odd numbers.
    p, q = (secrets.randbits(half) | (3 << (half - 2)) | 1 for _ in range(2))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=secrets.randbits(bits - 8),
        dmp1=secrets.randbits(half - 8) | 1,
        dmq1=secrets.randbits(half - 8) | 1,
        iqmp=secrets.randbits(half - 8),
        public_numbers=rsa.RSAPublicNumbers(65537, p * q),
    )
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    assert key.key_size == bits
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def broken_crt(key: rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
    """``key`` with a wrong CRT coefficient (iqmp): RSA_check_key refuses it.

    It still signs correctly: when a CRT result does not verify, OpenSSL
    computes the signature again with the private exponent. So it tells
    apart a path that re-checks a key from one that does not.
    """
    n = key.private_numbers()
    bad = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d, n.dmp1, n.dmq1, (n.iqmp + 1) % n.p, n.public_numbers
    )
    return bad.private_key(unsafe_skip_rsa_key_validation=True)
