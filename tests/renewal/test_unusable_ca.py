"""Certificates whose CA of ours cannot sign: not planned, not tried, told once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from certd.client import Client, RpcError
from certd.renewal.planning import (
    CA_CANNOT_SIGN,
    REVOKED,
    SignerFacts,
    not_renewable_because,
    plan_row,
)
from certd.renewal.policy import PolicySettings
from certd.store.models import (
    Certificate,
    CertificateAuthority,
    RenewalAttempt,
    utcnow,
)
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki_api.conftest import issue, make_root
from tests.renewal.factory import make_chain, store_certificate

BLOCKED = "certificate.renewal_blocked"


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    # the loop is off: each test runs the tick and the scan itself
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon


async def _stored(certd: RunningDaemon, cid: int) -> tuple[Any, ...]:
    """(next_attempt_at, next_attempt_reason, failure_count, attempts) of a row."""
    async with certd.daemon.db.session() as session:
        row = await session.get(Certificate, cid)
        assert row is not None
        attempts = await session.scalar(
            select(func.count()).where(RenewalAttempt.certificate_id == cid)
        )
        return row.next_attempt_at, row.next_attempt_reason, row.failure_count, attempts


async def _make_due(certd: RunningDaemon, cid: int, reason: str) -> datetime:
    """Give a row a plan that has come, as a path that knew no CA would."""
    due = utcnow() - timedelta(minutes=1)
    async with certd.daemon.db.session() as session:
        row = await session.get(Certificate, cid)
        assert row is not None
        row.next_attempt_at, row.next_attempt_reason = due, reason
    return due


async def _set_ca(certd: RunningDaemon, ca_id: int, **values: Any) -> None:
    """Change a CA in the store, past the API (and its call to the planner)."""
    async with certd.daemon.db.session() as session:
        ca = await session.get(CertificateAuthority, ca_id)
        assert ca is not None
        for name, value in values.items():
            setattr(ca, name, value)


async def _plan_entry(client: Client, cid: int) -> dict[str, Any]:
    plan = await client.call("certificate.renewal_plan")
    return next(p for p in plan if p["id"] == cid)  # type: ignore[no-any-return]


async def _events(client: Client, cid: int, kind: str) -> list[dict[str, Any]]:
    return await client.call(  # type: ignore[no-any-return]
        "event.query", [["certificate_id", "=", cid], ["kind", "=", kind]]
    )


async def _renew_jobs(client: Client) -> list[dict[str, Any]]:
    return await client.call(  # type: ignore[no-any-return]
        "core.get_jobs", [["method", "=", "certificate.renew"]]
    )


async def _hold(client: Client, ca_id: int, held: bool) -> None:
    data: dict[str, Any] = {"revoked": held}
    if held:
        data["revoked_reason"] = "certificateHold"
    await client.call("certificateauthority.update", ca_id, data)


async def test_a_held_ca_stops_planning_until_the_hold_is_lifted(
    certd: RunningDaemon,
) -> None:
    engine = certd.daemon.renewal
    async with certd.client() as client:
        root = await make_root(client)
        cert = await issue(client, root["id"])
        planned = await _stored(certd, cert["id"])

        await _hold(client, root["id"], True)
        held = await _stored(certd, cert["id"])
        entry = await _plan_entry(client, cert["id"])
        # the scheduler's passes find nothing to do and say nothing more
        await engine.tick()
        await engine.scan()
        await engine.tick()
        after_passes = await _stored(certd, cert["id"])
        scheduled = await _renew_jobs(client)
        blocked = await _events(client, cert["id"], BLOCKED)
        with pytest.raises(RpcError) as refused:
            await client.call("certificate.renew", cert["id"])
        after_manual = await _stored(certd, cert["id"])
        failed = await _events(client, cert["id"], "certificate.renewal_failed")
        manual_jobs = await _renew_jobs(client)

        await _hold(client, root["id"], False)
        lifted = await _stored(certd, cert["id"])
        entry_lifted = await _plan_entry(client, cert["id"])

    assert planned[0] is not None
    assert held == (None, CA_CANNOT_SIGN, 0, 0)
    assert (entry["renewable"], entry["next_attempt_at"], entry["reason"]) == (
        False,
        None,
        CA_CANNOT_SIGN,
    )
    assert after_passes == held
    assert scheduled == []
    assert [(e["severity"], e["data"]["because"]) for e in blocked] == [
        ("warning", "its CA 'root' is on hold")
    ]
    assert blocked[0]["message"] == "leaf will not be renewed: its CA 'root' is on hold"
    assert blocked[0]["data"]["ca_id"] == root["id"]
    # asked for by hand, it is refused at once with the reason; nothing is counted
    assert refused.value.code == -32602
    assert [e["field"] for e in refused.value.data["errors"]] == ["id"]
    assert "cannot be renewed: its CA 'root' is on hold" in refused.value.message
    assert manual_jobs == []
    assert after_manual == held
    assert failed == []
    # planned again as it was before the hold
    assert lifted == planned
    assert planned[1] not in (CA_CANNOT_SIGN, REVOKED)
    assert (entry_lifted["renewable"], entry_lifted["reason"]) == (True, planned[1])


async def test_the_tick_does_not_try_a_due_certificate_of_a_revoked_ca(
    certd: RunningDaemon,
) -> None:
    engine = certd.daemon.renewal
    async with certd.client() as client:
        root = await make_root(client)
        cert = await issue(client, root["id"])
        planned = await _stored(certd, cert["id"])
        # revoked, and the certificate's plan come, with no call to the planner
        await _set_ca(certd, root["id"], revoked=True, revoked_reason="certificateHold")
        await _make_due(certd, cert["id"], planned[1])

        await engine.tick()
        renewing = dict(engine.active)
        stopped = await _stored(certd, cert["id"])
        scheduled = await _renew_jobs(client)
        blocked = await _events(client, cert["id"], BLOCKED)
        await engine.tick()
        again = await _stored(certd, cert["id"])

        await _set_ca(certd, root["id"], revoked=False, revoked_reason=None)
        await engine.tick()
        lifted = await _stored(certd, cert["id"])
        blocked_after = await _events(client, cert["id"], BLOCKED)

    assert renewing == {}
    assert scheduled == []
    assert stopped == again == (None, CA_CANNOT_SIGN, 0, 0)
    assert [e["data"]["because"] for e in blocked] == ["its CA 'root' is on hold"]
    # planned again by the tick alone, as it was before
    assert lifted == planned
    assert len(blocked_after) == 1


async def test_a_certificate_of_a_ca_without_its_key_is_not_planned(
    certd: RunningDaemon,
) -> None:
    engine = certd.daemon.renewal
    chain = make_chain(["keyless.example.test"])
    async with certd.client() as client:
        ca = await client.call(
            "certificateauthority.create",
            {
                "name": "outside",
                "create_type": "CA_CREATE_IMPORTED",
                "certificate": chain.ca_pem,
            },
        )
        cert = await call_job(
            client,
            "certificate.create",
            {
                "name": "keyless",
                "create_type": "CERTIFICATE_CREATE_IMPORTED",
                "certificate": chain.fullchain_pem,
                "privatekey": chain.key_pem,
            },
        )
        entry = await _plan_entry(client, cert["id"])
        await _make_due(certd, cert["id"], "lifetime_fraction")
        await engine.tick()
        renewing = dict(engine.active)
        stopped = await _stored(certd, cert["id"])
        await engine.scan()
        await engine.tick()
        again = await _stored(certd, cert["id"])
        scheduled = await _renew_jobs(client)
        blocked = await _events(client, cert["id"], BLOCKED)
        with pytest.raises(RpcError) as refused:
            await client.call("certificate.renew", cert["id"])
        after_manual = await _stored(certd, cert["id"])
        jobs = await _renew_jobs(client)

    assert (ca["has_privatekey"], cert["signedby"]) == (False, ca["id"])
    assert (entry["kind"], entry["renewable"], entry["next_attempt_at"]) == (
        "internal",
        False,
        None,
    )
    assert entry["reason"] == CA_CANNOT_SIGN
    assert renewing == {}
    assert stopped == again == after_manual == (None, CA_CANNOT_SIGN, 0, 0)
    assert scheduled == []
    assert [e["data"]["because"] for e in blocked] == [
        "its CA 'outside' has no private key"
    ]
    assert "cannot be renewed: its CA 'outside' has no private key" in str(
        refused.value
    )
    assert jobs == []


async def test_a_certificate_whose_ca_was_deleted_is_told_once(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        cert = await issue(client, root["id"])
        assert await client.call("certificateauthority.delete", root["id"], True)
        gone = await _stored(certd, cert["id"])
        await certd.daemon.renewal.scan()
        await certd.daemon.renewal.tick()
        blocked = await _events(client, cert["id"], BLOCKED)
        with pytest.raises(RpcError) as refused:
            await client.call("certificate.renew", cert["id"])

    assert gone == (None, "not_renewable", 0, 0)
    assert [e["data"]["because"] for e in blocked] == ["its CA was deleted"]
    assert "cannot be renewed: its CA was deleted" in str(refused.value)


async def test_an_interrupted_renewal_of_a_revoked_ca_is_closed(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        cert = await issue(client, root["id"])
        async with certd.daemon.db.session() as session:
            attempt = RenewalAttempt(
                certificate_id=cert["id"], state="running", trigger="schedule"
            )
            session.add(attempt)
        await _hold(client, root["id"], True)

        resumed = await certd.daemon.renewal.resume_interrupted()
        (job,) = await _renew_jobs(client)
        ended = await client.call("core.job_wait", job["id"], 30)
        stored = await _stored(certd, cert["id"])
        async with certd.daemon.db.session() as session:
            closed = await session.get(RenewalAttempt, attempt.id)
            assert closed is not None
            state, error = closed.state, closed.error
        # the next start has nothing to resume
        again = await certd.daemon.renewal.resume_interrupted()

    assert (resumed, ended["state"], again) == (1, "FAILED", 0)
    assert state == "failed"
    assert error == "certificate 'leaf' cannot be renewed: its CA 'root' is on hold"
    assert stored == (None, CA_CANNOT_SIGN, 0, 1)


async def test_the_scan_reads_the_cas_once_a_batch(certd: RunningDaemon) -> None:
    """600 certificates of two CAs, one revoked: two batches, two CA reads."""
    engine = certd.daemon.renewal
    fine, held = make_chain(["fine.example.test"]), make_chain(["held.example.test"])
    await store_certificate(certd.daemon, "fine-0", fine, signed_by_ca=True)
    await store_certificate(certd.daemon, "held-0", held, signed_by_ca=True)
    async with certd.daemon.db.session() as session:
        # the CAs of "fine-0" and "held-0", in that order
        ca_ids = list(
            await session.scalars(
                select(CertificateAuthority.id).order_by(CertificateAuthority.id)
            )
        )
        for n in range(1, 300):
            for name, chain, ca_id in (
                ("fine", fine, ca_ids[0]),
                ("held", held, ca_ids[1]),
            ):
                session.add(
                    Certificate(
                        name=f"{name}-{n}",
                        cert_type="CERTIFICATE",
                        create_type="CERTIFICATE_CREATE_INTERNAL",
                        certificate=chain.fullchain_pem,
                        privatekey=chain.key_pem,
                        signedby_id=ca_id,
                    )
                )
    await _set_ca(certd, ca_ids[1], revoked=True, revoked_reason="keyCompromise")

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sync_engine = certd.daemon.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", seen)
    try:
        await engine.scan()
    finally:
        event.remove(sync_engine, "before_cursor_execute", seen)

    async with certd.daemon.db.session() as session:
        plans = (
            await session.execute(
                select(Certificate.signedby_id, Certificate.next_attempt_reason)
            )
        ).all()
    # The CA facts of a batch: every CA, whether it has a key asked of SQL.
    ca_reads = [
        s
        for s in statements
        if "FROM certificate_authority" in s and "privatekey IS NOT NULL" in s
    ]
    blocked = {reason for ca_id, reason in plans if ca_id == ca_ids[1]}
    planned = {reason for ca_id, reason in plans if ca_id == ca_ids[0]}
    assert len(plans) == 600
    assert blocked == {CA_CANNOT_SIGN}
    assert CA_CANNOT_SIGN not in planned and None not in planned
    assert len(ca_reads) == 2  # one per batch of 500, none per certificate


_CHAIN = make_chain(["unit.example.test"])
_SETTINGS = PolicySettings()


def _row(**fields: Any) -> Certificate:
    """A certificate row signed by CA 7, as planning reads it."""
    chain = _CHAIN
    values: dict[str, Any] = {
        "name": "c",
        "cert_type": "CERTIFICATE",
        "create_type": "CERTIFICATE_CREATE_INTERNAL",
        "certificate": chain.fullchain_pem,
        "revoked": False,
        "acme_account_id": None,
        "signedby_id": 7,
        "renew_days": None,
        "failure_count": 0,
        "next_attempt_reason": None,
    }
    return Certificate(**{**values, **fields})


@pytest.mark.parametrize(
    ("signers", "reason", "because"),
    [
        ({7: SignerFacts("ca", False, True)}, None, None),
        (
            {7: SignerFacts("ca", True, True)},
            CA_CANNOT_SIGN,
            "its CA 'ca' is revoked and signs no more",
        ),
        (
            {7: SignerFacts("ca", False, False)},
            CA_CANNOT_SIGN,
            "its CA 'ca' has no private key",
        ),
        ({}, CA_CANNOT_SIGN, "its CA (id 7) no longer exists"),
    ],
)
def test_plan_row_and_the_reason_with_the_signer(
    signers: dict[int, SignerFacts], reason: str | None, because: str | None
) -> None:
    row = _row()
    result = plan_row(row, _SETTINGS, utcnow(), signers)

    if reason is None:
        assert result is not None and row.next_attempt_at == result.at
    else:
        assert (result, row.next_attempt_at, row.next_attempt_reason) == (
            None,
            None,
            reason,
        )
        assert not_renewable_because(row, signers) == because


def test_without_the_signer_a_blocked_row_stays_blocked() -> None:
    blocked = _row(next_attempt_reason=CA_CANNOT_SIGN)
    fresh = _row()

    plan_row(blocked, _SETTINGS, utcnow())
    plan_row(fresh, _SETTINGS, utcnow())

    assert (blocked.next_attempt_at, blocked.next_attempt_reason) == (
        None,
        CA_CANNOT_SIGN,
    )
    assert fresh.next_attempt_at is not None
