"""Certificates of certd's own CAs: renewed by signing again; CA and revocation events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certd.client import Client, RpcError
from certd.store.models import Certificate, utcnow
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki_api.conftest import make_intermediate, make_root
from tests.renewal.factory import wait_until


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        renewal={"enabled": True, "tick_interval": 0.05, "ca_warning_days": 400},
    )
    async with running_daemon(config) as daemon:
        yield daemon


async def _leaf(client: Client, inter: int) -> dict[str, Any]:
    return await call_job(
        client,
        "certificate.create",
        {
            "name": "intranet",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter,
            "common": "intranet.example.test",
            "san": ["intranet.example.test", "wiki.example.test"],
            "lifetime": 30,
        },
    )


async def _issued(
    client: Client, inter_lifetime: int = 365
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An intermediate CA under a new root, and a certificate it signed."""
    root = await make_root(client, lifetime=3650)
    inter = await make_intermediate(client, root["id"], lifetime=inter_lifetime)
    return inter, await _leaf(client, inter["id"])


def _chain(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


async def test_internal_certificate_is_signed_again(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        inter, cert = await _issued(client)
        plan = await client.call("certificate.renewal_plan")
        result = await call_job(client, "certificate.renew", cert["id"])
        after = await client.call("certificate.get_instance", cert["id"])
        events = await client.call("event.query", [["certificate_id", "=", cert["id"]]])

    old, new = _chain(cert["certificate"]), _chain(after["certificate"])
    inter_cert = x509.load_pem_x509_certificate(inter["certificate"].encode())
    assert [p["kind"] for p in plan if p["id"] == cert["id"]] == ["internal"]
    assert result["serial"] == after["serial"] != cert["serial"]
    assert new[0].subject == old[0].subject
    assert new[0].issuer == inter_cert.subject
    new[0].verify_directly_issued_by(inter_cert)
    assert new[1:] == old[1:]
    san = new[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "intranet.example.test",
        "wiki.example.test",
    ]
    assert new[0].public_key() != old[0].public_key()  # a new key
    lifetime = new[0].not_valid_after_utc - new[0].not_valid_before_utc
    assert lifetime == old[0].not_valid_after_utc - old[0].not_valid_before_utc
    assert isinstance(new[0].public_key(), type(old[0].public_key()))
    assert [e["kind"] for e in events] == ["certificate.issued", "certificate.renewed"]


async def test_ca_expiry_and_revocation_raise_events(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        inter, cert = await _issued(client, inter_lifetime=200)
        await client.call(
            "certificate.update",
            cert["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        revoked = await wait_until(
            lambda: client.call("event.query", [["kind", "=", "certificate.revoked"]])
        )
        plan = await client.call("certificate.renewal_plan")
        # the scan that runs at start-up saw no CA yet; run it again
        await certd.daemon.renewal.scan()
        expiring = await client.call("event.query", [["kind", "=", "ca.expiring"]])
        await certd.daemon.renewal.scan()  # raised once a day, not on every scan
        again = await client.call("event.query", [["kind", "=", "ca.expiring"]])

    assert revoked[0]["certificate_id"] == cert["id"]
    assert revoked[0]["data"] == {"reason": "keyCompromise"}
    entry = next(p for p in plan if p["id"] == cert["id"])
    assert (entry["renewable"], entry["reason"], entry["next_attempt_at"]) == (
        False,
        "revoked",
        None,
    )
    assert {e["subject"] for e in expiring} == {inter["name"]}
    assert expiring[0]["data"]["ca_id"] == inter["id"]
    assert expiring[0]["severity"] == "warning"
    assert len(again) == len(expiring) == 1


async def test_a_revoked_ca_signs_no_renewal(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        inter, cert = await _issued(client)
        await client.call(
            "certificateauthority.update",
            inter["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        plan = await client.call("certificate.renewal_plan")
        with pytest.raises(RpcError) as refused:
            await client.call("certificate.renew", cert["id"])
        after = await client.call("certificate.get_instance", cert["id"])

    assert [(p["kind"], p["renewable"]) for p in plan if p["id"] == cert["id"]] == [
        ("internal", False)
    ]
    assert "is revoked and signs no more" in refused.value.message
    assert after["serial"] == cert["serial"]
    assert after["certificate"] == cert["certificate"]


async def _plan_when(
    certd: RunningDaemon, cid: int, wanted: Callable[[tuple[Any, Any]], bool]
) -> tuple[Any, Any] | None:
    """The row's (next_attempt_at, reason) once ``wanted`` holds for it."""
    async with certd.daemon.db.session() as session:
        row = await session.get(Certificate, cid)
        assert row is not None
        plan = (row.next_attempt_at, row.next_attempt_reason)
    return plan if wanted(plan) else None


async def test_a_certificate_whose_ca_was_deleted_is_tried_once(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        inter, cert = await _issued(client)
        assert await client.call("certificateauthority.delete", inter["id"], True)
        async with certd.daemon.db.session() as session:
            row = await session.get(Certificate, cert["id"])
            assert row is not None
            row.next_attempt_at = utcnow() - timedelta(minutes=1)
        await wait_until(
            lambda: _plan_when(
                certd, cert["id"], lambda plan: plan == (None, "not_renewable")
            )
        )
        await asyncio.sleep(0.5)  # ten ticks
        jobs = await client.call(
            "core.get_jobs", [["method", "=", "certificate.renew"]]
        )

    assert [j["state"] for j in jobs] == ["FAILED"]


async def test_a_lifted_hold_is_planned_again(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        _, cert = await _issued(client)
        await client.call(
            "certificate.update",
            cert["id"],
            {"revoked": True, "revoked_reason": "certificateHold"},
        )
        held = await wait_until(
            lambda: _plan_when(certd, cert["id"], lambda plan: plan[1] == "revoked")
        )
        await client.call("certificate.update", cert["id"], {"revoked": False})
        lifted = await wait_until(
            lambda: _plan_when(certd, cert["id"], lambda plan: plan[0] is not None)
        )

    assert held == (None, "revoked")
    assert lifted[1] == "lifetime_fraction"
