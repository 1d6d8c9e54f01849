"""ACME Renewal Information: certificate ids, fetching windows, and the scan using them."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.renewal.ari import AriClient, cert_id
from certd.renewal.policy import Window
from certd.store.models import AcmeAccount, Certificate
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.renewal.factory import make_chain

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DEFAULT = dt.timedelta(hours=6)


def _cert(serial: int, key_id: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=90))
    )
    if key_id is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(key_id, None, None), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_cert_id_matches_the_rfc_example() -> None:
    # RFC 9773 §4.1: keyIdentifier 69:88:5B:..:D4 and serial 00:87:65:43:21
    key_id = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")

    assert cert_id(_cert(0x87654321, key_id)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_cert_id_short_serial_and_missing_aki() -> None:
    assert cert_id(_cert(0x7F, b"\x01")) == "AQ.fw"
    assert cert_id(_cert(5, None)) is None


class FakeCA:
    """A directory with renewalInfo, answering as each test sets it."""

    def __init__(self) -> None:
        self.body: Any = {}
        self.status = 200
        self.headers: dict[str, str] = {}
        self.asked: list[str] = []
        self.with_ari = True
        self.base = ""

    async def directory(self, request: web.Request) -> web.Response:
        body = {"newNonce": f"{self.base}/nonce"}
        if self.with_ari:
            body["renewalInfo"] = f"{self.base}/renewal-info/"
        return web.json_response(body)

    async def renewal_info(self, request: web.Request) -> web.Response:
        self.asked.append(request.match_info["id"])
        if isinstance(self.body, str):
            return web.Response(
                text=self.body, status=self.status, headers=self.headers
            )
        return web.json_response(self.body, status=self.status, headers=self.headers)


@pytest.fixture
async def fake_ca() -> AsyncIterator[FakeCA]:
    ca = FakeCA()
    app = web.Application()
    app.router.add_get("/dir", ca.directory)
    app.router.add_get("/renewal-info/{id}", ca.renewal_info)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ca.base = f"http://127.0.0.1:{port}"
    yield ca
    await runner.cleanup()


WINDOW = {"start": "2030-02-10T00:00:00Z", "end": "2030-02-12T00:00:00Z"}


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "window", "next_fetch"),
    [
        (200, {"suggestedWindow": WINDOW}, "7200", True, dt.timedelta(hours=2)),
        (200, {"suggestedWindow": WINDOW}, "5", True, dt.timedelta(minutes=1)),
        (200, {"suggestedWindow": WINDOW}, "999999", True, dt.timedelta(days=1)),
        (200, {"suggestedWindow": WINDOW}, None, True, DEFAULT),
        (200, {"suggestedWindow": {"start": "soon"}}, None, False, DEFAULT),
        (200, "not json", None, False, DEFAULT),
        (
            404,
            {"type": "urn:ietf:params:acme:error:malformed"},
            "60",
            False,
            dt.timedelta(minutes=1),
        ),
    ],
)
async def test_fetch_window_and_next_fetch(
    fake_ca: FakeCA,
    status: int,
    body: Any,
    retry_after: str | None,
    window: bool,
    next_fetch: dt.timedelta,
) -> None:
    fake_ca.status, fake_ca.body = status, body
    fake_ca.headers = {"Retry-After": retry_after} if retry_after else {}
    leaf = _cert(0x87654321, b"\x69\x88")

    async with aiohttp.ClientSession() as session:
        info = await AriClient(session).fetch(f"{fake_ca.base}/dir", leaf, NOW, DEFAULT)

    assert info is not None
    assert fake_ca.asked == [cert_id(leaf)]
    expected = Window(
        dt.datetime(2030, 2, 10, tzinfo=dt.UTC), dt.datetime(2030, 2, 12, tzinfo=dt.UTC)
    )
    assert info.window == (expected if window else None)
    assert info.next_fetch_at == NOW + next_fetch


async def test_fetch_without_ari_in_the_directory(fake_ca: FakeCA) -> None:
    fake_ca.with_ari = False

    async with aiohttp.ClientSession() as session:
        info = await AriClient(session).fetch(
            f"{fake_ca.base}/dir", _cert(1, b"\x01"), NOW, DEFAULT
        )

    assert info is None
    assert fake_ca.asked == []


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    config = make_config(tmp_path / "state", renewal={"enabled": True})
    async with running_daemon(config) as daemon:
        yield daemon


async def test_scan_plans_inside_the_ca_window(
    certd: RunningDaemon, fake_ca: FakeCA
) -> None:
    chain = make_chain(["ari.example.test"])
    leaf = chain.leaf
    start = leaf.not_valid_before_utc + dt.timedelta(days=20)
    fake_ca.body = {
        "suggestedWindow": {
            "start": start.isoformat(),
            "end": (start + dt.timedelta(days=1)).isoformat(),
        },
        "explanationURL": "https://ca.example.test/why",
    }
    fake_ca.headers = {"Retry-After": "3600"}
    directory = f"{fake_ca.base}/dir"
    async with certd.daemon.db.session() as session:
        account = AcmeAccount(directory=directory, account_url="x", key_pem="-")
        session.add(account)
        await session.flush()
        row = Certificate(
            name="ari",
            cert_type="CERTIFICATE",
            create_type="CERTIFICATE_CREATE_ACME",
            certificate=chain.fullchain_pem,
            privatekey=chain.key_pem,
            acme_account_id=account.id,
            acme_directory_uri=directory,
            dns_mapping={"ari.example.test": 1},
        )
        session.add(row)
        await session.flush()
        cid = row.id

    await certd.daemon.renewal.scan()
    async with certd.client() as client:
        plan = {p["id"]: p for p in await client.call("certificate.renewal_plan")}
    async with certd.daemon.db.session() as session:
        stored = await session.get(Certificate, cid)
    assert stored is not None
    replaces = await certd.daemon.renewal.renewer._replaces(stored)

    entry = plan[cid]
    assert entry["window_source"] == entry["reason"] == "ari"
    assert entry["ari_window"] == {
        "start": start.isoformat(),
        "end": (start + dt.timedelta(days=1)).isoformat(),
    }
    at = dt.datetime.fromisoformat(entry["next_attempt_at"])
    assert start <= at <= start + dt.timedelta(days=1)
    assert fake_ca.asked == [cert_id(leaf)]
    assert stored.ari_next_fetch_at is not None
    assert replaces == cert_id(leaf)
