"""Who may talk to the daemon, over what, and what a guesser of API keys gets."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import signal
import socket
import ssl
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.api.ratelimit import TOO_MANY_FAILURES
from certd.config import Config
from certd.errors import ValidationError
from certd.store.db import Database
from certd.store.masterkey import unlock_store
from certd.store.models import Certificate
from tests.daemon import daemon_process, make_config, running_daemon

PING = {"jsonrpc": "2.0", "method": "core.ping", "id": 1}


async def test_failed_authentication_is_rate_limited_and_logged(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "state",
        server={"auth_failure_burst": 3, "auth_failure_refill_seconds": 3600},
    )
    async with running_daemon(config) as running:
        guesses = [f"certd_abcdef123456_guess{n}" for n in range(5)]
        replies = []
        with structlog.testing.capture_logs() as logs:
            for guess in guesses:
                async with running.client(guess) as client:
                    replies.append(await client.raw(PING))
            async with running.client(guesses[0]) as client:
                same_key_while_limited = await client.raw(PING)
            async with running.client() as client:
                other_key_while_limited = await client.raw(PING)
            async with running.unix_client() as client:
                over_unix = await client.call("core.ping")

    assert [status for status, _ in replies] == [401, 401, 401, 429, 429]
    _, body = replies[3]
    assert body["error"]["code"] == TOO_MANY_FAILURES
    assert body["error"]["message"].startswith(
        "Too many failed authentication attempts from 127.0.0.1 for API key "
        "key_id=abcdef123456; try again in"
    )
    assert body["error"]["data"]["type"] == "RateLimited"
    # Refused whatever the secret: a guesser cannot tell a hit from a miss.
    # Other keys from the same address are not held back.
    assert same_key_while_limited[0] == 429
    assert other_key_while_limited[1]["result"] == "pong"
    assert over_unix == "pong"
    events = [entry["event"] for entry in logs]
    assert events.count("authentication_failed") == 3
    assert events.count("authentication_rate_limited") == 1
    failed = next(e for e in logs if e["event"] == "authentication_failed")
    assert failed["remote"] == "127.0.0.1"
    logged = repr(logs)
    for guess in guesses:
        assert guess not in logged
    assert running.api_key not in logged


async def test_refusal_says_when_to_retry(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        server={"auth_failure_burst": 1, "auth_failure_refill_seconds": 1},
    )
    async with running_daemon(config) as running:
        async with aiohttp.ClientSession() as session:
            bad = {"Authorization": "Bearer certd_000000000000_nope"}
            async with session.post(f"{running.url}/rpc", json=PING, headers=bad) as r:
                assert r.status == 401
            async with session.post(f"{running.url}/rpc", json=PING, headers=bad) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "1"
                assert (await r.json())["error"]["code"] == TOO_MANY_FAILURES


async def test_http_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    assert Config().server.http_host == "127.0.0.1"
    async with running_daemon(make_config(tmp_path / "state")) as running:
        assert running.daemon._runner is not None
        addresses = {
            sock.getsockname()[0]
            for site in running.daemon._runner.sites
            for sock in (getattr(site, "_server", None).sockets or [])  # type: ignore[union-attr]
            if sock.family in (socket.AF_INET, socket.AF_INET6)
        }
    assert addresses == {"127.0.0.1"}


def self_signed(common_name: str, *, ca: bool = True) -> tuple[str, str, int]:
    """(certificate PEM, key PEM, serial) for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem, cert.serial_number


async def store_certificate(config: Config, name: str, cert: str, key: str) -> None:
    """Store (or replace) a certificate with its key through the daemon's store."""
    async with running_daemon(config) as running:
        await put_certificate(running.daemon, name, cert, key)


async def put_certificate(daemon: object, name: str, cert: str, key: str) -> None:
    from sqlalchemy import select

    async with daemon.db.session() as session:  # type: ignore[attr-defined]
        row = await session.scalar(select(Certificate).where(Certificate.name == name))
        if row is None:
            row = Certificate(
                name=name,
                cert_type="CERTIFICATE",
                create_type="CERTIFICATE_CREATE_IMPORTED",
            )
            session.add(row)
        row.certificate = cert
        row.privatekey = key


async def put_certificate_beside(
    config: Config, name: str, cert: str, key: str
) -> None:
    db = Database(config.store.url())
    try:
        await unlock_store(db, config.store.state_dir)
        await put_certificate(SimpleNamespace(db=db), name, cert, key)
    finally:
        await db.close()


def served_serial(port: int, trust: str) -> int:
    """The serial of the certificate a TLS handshake with the port presents."""
    context = ssl.create_default_context(cadata=trust)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_https_with_a_stored_certificate_and_reload(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first_cert, first_key, first_serial = self_signed("api one")
    await store_certificate(make_config(state), "api", first_cert, first_key)
    config = make_config(state, server={"tls_certificate": "api"})

    async with running_daemon(config) as running:
        port = running.daemon.http_port
        assert port is not None
        context = ssl.create_default_context(cadata=first_cert)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"https://127.0.0.1:{port}/rpc",
                json=PING,
                headers={"Authorization": f"Bearer {running.api_key}"},
                ssl=context,
            ) as response:
                assert (await response.json())["result"] == "pong"
        assert await asyncio.to_thread(served_serial, port, first_cert) == first_serial

        second_cert, second_key, second_serial = self_signed("api two")
        await put_certificate(running.daemon, "api", second_cert, second_key)
        await running.daemon.reload()
        assert (
            await asyncio.to_thread(served_serial, port, second_cert) == second_serial
        )

        # A broken replacement is refused and the served certificate stays.
        await put_certificate(running.daemon, "api", first_cert, second_key)
        await running.daemon.reload()
        assert (
            await asyncio.to_thread(served_serial, port, second_cert) == second_serial
        )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", "no certificate named 'api' is stored"),
        ("csr", "is a signing request"),
        ("mismatch", "cannot be used for TLS"),
    ],
)
async def test_unusable_tls_certificate_stops_the_start(
    tmp_path: Path, setup: str, message: str
) -> None:
    state = tmp_path / "state"
    cert, key, _ = self_signed("api")
    _, other_key, _ = self_signed("other")
    async with running_daemon(make_config(state)) as running:
        if setup == "csr":
            async with running.daemon.db.session() as session:
                session.add(
                    Certificate(
                        name="api",
                        cert_type="CSR",
                        create_type="CERTIFICATE_CREATE_CSR",
                        csr="x",
                        privatekey=key,
                    )
                )
        elif setup == "mismatch":
            await put_certificate(running.daemon, "api", cert, other_key)

    with pytest.raises(ValidationError) as caught:
        async with running_daemon(
            make_config(state, server={"tls_certificate": "api"})
        ):
            pass
    assert caught.value.errors[0].field == "server.tls_certificate"
    assert message in caught.value.message


async def test_sighup_reloads_the_tls_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first_cert, first_key, first_serial = self_signed("api one")
    await store_certificate(make_config(state), "api", first_cert, first_key)
    config = make_config(state, server={"tls_certificate": "api"})
    second_cert, second_key, second_serial = self_signed("api two")

    with daemon_process(config, tmp_path / "run") as process:
        port = next(
            int(line.split('"port": ')[1].split(",")[0])
            for line in process.log_lines()
            if '"http_listening"' in line
        )
        assert await asyncio.to_thread(served_serial, port, first_cert) == first_serial
        # The daemon holds the store; write through a second opener beside it.
        await put_certificate_beside(config, "api", second_cert, second_key)
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not any(
            '"tls_certificate_loaded"' in line and '"api"' in line
            for line in process.log_lines()[1:]
            if format(second_serial, "X") in line
        ):
            assert time.monotonic() < deadline, process.log_lines()[-5:]
            await asyncio.sleep(0.05)
        assert (
            await asyncio.to_thread(served_serial, port, second_cert) == second_serial
        )
