"""Fixtures and helpers for driving AcmeClient against the session's pebble."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import josepy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certd.acme import AcmeClient, Dns01, Order, PollPolicy
from tests.testbed import NamedServer, PebbleServer, start_pebble

FAST_POLL = PollPolicy(initial=0.01, factor=1.5, maximum=0.2, timeout=20.0)


def ec_account_key() -> josepy.JWK:
    """A fresh P-256 account key."""
    return josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


@dataclass(frozen=True)
class Issued:
    """The result of one complete order."""

    order: Order
    fullchain_pem: str
    alternates: list[str]
    key: ec.EllipticCurvePrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        """The end-entity certificate of the chain."""
        return x509.load_pem_x509_certificates(self.fullchain_pem.encode())[0]


def make_csr(names: Iterable[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A P-256 key and a CSR (PEM) with ``names`` as DNS SANs and an empty subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


async def issue(
    client: AcmeClient,
    named: NamedServer,
    names: list[str],
    *,
    tamper: Callable[[Dns01], str] = lambda task: task.value,
) -> Issued:
    """Run one dns-01 order end to end; TXT values are removed afterwards.

    ``tamper`` picks the published value, to make validation fail on purpose.
    """
    key, csr_pem = make_csr(names)
    order = await client.new_order(csr_pem)
    authzs = [await client.authorization(url) for url in order.authorizations]
    tasks = [client.dns01(authz) for authz in authzs]
    published: list[tuple[str, str]] = []
    try:
        for task in tasks:
            value = tamper(task)
            named.add_txt(task.record_name, value)
            published.append((task.record_name, value))
        # answer only once every value is in the zone: wildcard and apex share a name
        for task in tasks:
            await client.answer_challenge(task.challenge)
        await client.poll_authorizations(order.authorizations)
        csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(
            serialization.Encoding.DER
        )
        order = await client.finalize(order, csr_der)
    finally:
        for record_name, value in published:
            named.delete_txt(record_name, value)
    assert order.certificate_url is not None
    pem, alternates = await client.download(order.certificate_url)
    return Issued(order, pem, alternates, key)


def openssl_verify(tmp_path: Path, pebble: PebbleServer, fullchain_pem: str) -> str:
    """Run ``openssl verify`` on the leaf against the issuer; return stdout."""
    root = tmp_path / "root.pem"
    intermediate = tmp_path / "intermediate.pem"
    leaf = tmp_path / "leaf.pem"
    root.write_text(pebble.issuer_root_pem())
    intermediate.write_text(pebble.issuer_intermediate_pem())
    first = x509.load_pem_x509_certificates(fullchain_pem.encode())[0]
    leaf.write_bytes(first.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(intermediate),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def session_for(pebble: PebbleServer) -> aiohttp.ClientSession:
    """An aiohttp session that verifies pebble's TLS certificate."""
    context = ssl.create_default_context(cafile=str(pebble.tls_ca_path))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


@pytest.fixture
async def http(pebble: PebbleServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A verifying HTTP session for the session's pebble."""
    async with session_for(pebble) as session:
        yield session


@pytest.fixture
async def client(pebble: PebbleServer, http: aiohttp.ClientSession) -> AcmeClient:
    """A client with a freshly registered P-256 account."""
    acme = await AcmeClient.open(
        pebble.directory_url, ec_account_key(), session=http, poll=FAST_POLL
    )
    await acme.register(
        contact_email="admin@example.test", terms_of_service_agreed=True
    )
    return acme


@pytest.fixture(scope="module")
def nonce_hostile_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """A second pebble that rejects every nonce."""
    rundir = tmp_path_factory.mktemp("pebble-nonce100")
    with start_pebble(
        rundir, named.port, env={"PEBBLE_WFE_NONCEREJECT": "100"}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def nonce_flaky_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """A second pebble that rejects half of all nonces."""
    rundir = tmp_path_factory.mktemp("pebble-nonce50")
    with start_pebble(
        rundir, named.port, env={"PEBBLE_WFE_NONCEREJECT": "50"}
    ) as server:
        yield server
