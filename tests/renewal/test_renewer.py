"""Renewer paths pebble 2.4 cannot show: a CA that refuses ``replaces`` (ARI).

The issuer here is a stand-in that signs with a local CA; everything else
(store, jobs, ARI lookup over HTTP, install) is the daemon's own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certd.client import RpcError
from certd.errors import AcmeError
from certd.pki.keys import load_private_key
from certd.renewal.ari import cert_id
from certd.renewal.issuance import IssuedChain
from certd.store.models import AcmeAccount, Certificate, RenewalAttempt
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.renewal.factory import Chain, make_chain


class StandInIssuer:
    """Signs each CSR with a local CA; refuses ``replaces`` or fails as told."""

    def __init__(self, chain: Chain, real: Any) -> None:
        self.chain = chain
        self.real = real
        self.calls: list[str | None] = []
        self.refuse_replaces = True
        self.fail_after_order = False

    def poll_policy(self) -> Any:
        return self.real.poll_policy()

    async def issue(self, **kwargs: Any) -> IssuedChain:
        self.calls.append(kwargs["replaces"])
        if kwargs["replaces"] is not None and self.refuse_replaces:
            raise AcmeError(
                "new order failed: already replaced",
                problem_type="urn:ietf:params:acme:error:alreadyReplaced",
            )
        await kwargs["on_order"](f"https://ca.test/order/{len(self.calls)}")
        if self.fail_after_order:
            raise AcmeError("authorization for ari.example.test is invalid")
        await kwargs["before_finalize"](f"https://ca.test/order/{len(self.calls)}")
        csr = x509.load_pem_x509_csr(kwargs["csr_pem"].encode())
        now = dt.datetime.now(dt.UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.chain.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=90))
            .sign(load_private_key(self.chain.ca_key_pem), hashes.SHA256())  # type: ignore[arg-type]
        )
        pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
        return IssuedChain(pem + self.chain.ca_pem, "https://ca.test/order/x", 1, [])


@pytest.fixture
async def ari_directory() -> AsyncIterator[str]:
    app = web.Application()

    async def directory(request: web.Request) -> web.Response:
        return web.json_response({"renewalInfo": "http://127.0.0.1/unused/"})

    app.router.add_get("/dir", directory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/dir"
    await runner.cleanup()


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon


async def _acme_row(daemon: Any, chain: Chain, directory: str) -> int:
    async with daemon.db.session() as session:
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
        return int(row.id)


async def _attempts(daemon: Any) -> list[tuple[str, str | None, int, str | None]]:
    from sqlalchemy import select

    async with daemon.db.session() as session:
        rows = (await session.scalars(select(RenewalAttempt))).all()
        return [(r.state, r.replaces, r.order_count, r.error) for r in rows]


async def test_refused_replaces_is_retried_without_it(
    certd: RunningDaemon, ari_directory: str
) -> None:
    chain = make_chain(["ari.example.test"])
    cid = await _acme_row(certd.daemon, chain, ari_directory)
    issuer = StandInIssuer(chain, certd.daemon.issuer)
    certd.daemon.issuer = issuer  # type: ignore[assignment]

    async with certd.client() as client:
        result = await call_job(client, "certificate.renew", cid)
        after = await client.call("certificate.get_instance", cid)

    assert issuer.calls == [cert_id(chain.leaf), None]
    assert result["serial"] == after["serial"]
    assert await _attempts(certd.daemon) == [("succeeded", None, 1, None)]


async def test_failure_after_the_order_is_not_retried_without_replaces(
    certd: RunningDaemon, ari_directory: str
) -> None:
    chain = make_chain(["ari.example.test"])
    cid = await _acme_row(certd.daemon, chain, ari_directory)
    issuer = StandInIssuer(chain, certd.daemon.issuer)
    issuer.refuse_replaces = False
    issuer.fail_after_order = True
    certd.daemon.issuer = issuer  # type: ignore[assignment]

    async with certd.client() as client:
        with pytest.raises(RpcError, match=r"authorization for ari\.example\.test"):
            await call_job(client, "certificate.renew", cid)
        after = await client.call("certificate.get_instance", cid)

    assert issuer.calls == [cert_id(chain.leaf)]
    assert after["certificate"] == chain.fullchain_pem
    assert after["renewal"]["failure_count"] == 1
    assert await _attempts(certd.daemon) == [
        (
            "failed",
            cert_id(chain.leaf),
            1,
            "authorization for ari.example.test is invalid",
        )
    ]
