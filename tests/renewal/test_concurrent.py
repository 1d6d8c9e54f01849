"""One renewal per certificate at a time, however many callers ask at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from certd.client import Client, RpcError
from certd.renewal import renewer
from certd.renewal.checkpoints import HOLD_ENV, RELEASE_ENV
from certd.store.models import Certificate, utcnow
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki_api.conftest import make_intermediate, make_root
from tests.renewal.factory import wait_until


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    # one job slot: a second job waits, so it can be aborted before it starts
    config = make_config(tmp_path / "state", server={"max_running_jobs": 1})
    async with running_daemon(config) as daemon:
        yield daemon


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Renewals wait after recording their attempt until this file exists."""
    path = tmp_path / "release"
    monkeypatch.setenv(HOLD_ENV, "attempt_recorded")
    monkeypatch.setenv(RELEASE_ENV, str(path))
    return path


async def _leaf(client: Client, inter: int, name: str) -> dict[str, Any]:
    return await call_job(
        client,
        "certificate.create",
        {
            "name": name,
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": inter,
            "common": f"{name}.example.test",
            "san": [f"{name}.example.test"],
            "lifetime": 30,
        },
    )


async def _held(client: Client, job_id: int) -> bool:
    job = await client.call("core.job_watch", job_id, 0.2)
    return job["progress"]["description"] == "held at attempt_recorded"


async def test_parallel_renew_calls_start_one_renewal(
    certd: RunningDaemon, release: Path
) -> None:
    async with certd.client() as client:
        root = await make_root(client, lifetime=3650)
        inter = await make_intermediate(client, root["id"], lifetime=365)
        cert = await _leaf(client, inter["id"], "intranet")
        results = await asyncio.gather(
            *(client.call("certificate.renew", cert["id"]) for _ in range(10)),
            return_exceptions=True,
        )
        accepted = [r for r in results if isinstance(r, int)]
        assert len(accepted) == 1, results
        job_id = accepted[0]
        await wait_until(lambda: _held(client, job_id))
        with pytest.raises(RpcError) as while_running:
            await client.call("certificate.renew", cert["id"])
        plan = await client.call("certificate.renewal_plan")
        release.touch()
        result = await client.wait_job(job_id)
        again = await call_job(client, "certificate.renew", cert["id"])
        renewed = await client.call(
            "event.query",
            [["certificate_id", "=", cert["id"]], ["kind", "=", "certificate.renewed"]],
        )

    refused = [r for r in results if not isinstance(r, int)]
    assert all(isinstance(r, RpcError) for r in refused)
    assert {str(r) for r in refused} <= {
        f"a renewal of intranet is already running as job {job_id}; "
        "wait for it or abort it",
        "a renewal of intranet was just accepted and is starting; "
        "wait for it or abort it",
    }
    assert len(refused) == 9
    assert while_running.value.message == (
        f"a renewal of intranet is already running as job {job_id}; "
        "wait for it or abort it"
    )
    assert next(p["job_id"] for p in plan if p["id"] == cert["id"]) == job_id
    assert result["serial"] != cert["serial"]
    assert again["serial"] not in (cert["serial"], result["serial"])
    assert len(renewed) == 2  # the held renewal and the one after it, no more


async def test_renewal_aborted_before_it_started_releases_the_certificate(
    certd: RunningDaemon, release: Path
) -> None:
    async with certd.client() as client:
        root = await make_root(client, lifetime=3650)
        inter = await make_intermediate(client, root["id"], lifetime=365)
        first = await _leaf(client, inter["id"], "first")
        second = await _leaf(client, inter["id"], "second")
        # the first renewal holds the only job slot; the second one waits
        holder = await client.call("certificate.renew", first["id"])
        await wait_until(lambda: _held(client, holder))
        waiting = await client.call("certificate.renew", second["id"])
        with pytest.raises(RpcError) as refused:
            await client.call("certificate.renew", second["id"])
        state = (await client.call("core.job_watch", waiting, 0))["state"]
        await client.call("core.job_abort", waiting)
        aborted = await client.call("core.job_watch", waiting, 0)
        # aborted before it started: the certificate is free again
        retried = await client.call("certificate.renew", second["id"])
        release.touch()
        await client.wait_job(holder)
        result = await client.wait_job(retried)

    assert state == "WAITING"
    assert "a renewal of second" in refused.value.message
    assert (aborted["state"], aborted["time_started"]) == ("ABORTED", None)
    assert result["serial"] != second["serial"]


async def _lease(certd: RunningDaemon, cid: int) -> tuple[Any, Any]:
    async with certd.daemon.db.session() as session:
        row = await session.get(Certificate, cid)
        assert row is not None
        return row.renewing_node, row.renewal_lease_until


async def test_a_running_renewal_extends_its_lease_and_ends_it(
    certd: RunningDaemon, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # extended every third of the lease: every 0.4 s here
    monkeypatch.setattr(renewer, "LEASE_SECONDS", 1.2)
    async with certd.client() as client:
        root = await make_root(client, lifetime=3650)
        cert = await _leaf(client, root["id"], "leased")
        job_id = await client.call("certificate.renew", cert["id"])
        await wait_until(lambda: _held(client, job_id))
        node, first = await _lease(certd, cert["id"])

        async def extended() -> Any:
            holder, until = await _lease(certd, cert["id"])
            return until if holder == node and until > first else None

        later = await wait_until(extended, timeout=10)
        release.touch()
        result = await client.wait_job(job_id)

    assert node == certd.daemon.node
    assert later > first
    assert result["serial"] != cert["serial"]
    assert await _lease(certd, cert["id"]) == (None, None)


async def test_a_renewal_whose_lease_went_to_another_daemon_installs_nothing(
    certd: RunningDaemon, release: Path
) -> None:
    async with certd.client() as client:
        root = await make_root(client, lifetime=3650)
        cert = await _leaf(client, root["id"], "taken")
        job_id = await client.call("certificate.renew", cert["id"])
        await wait_until(lambda: _held(client, job_id))
        # as if this daemon had stalled past its lease and another took it
        async with certd.daemon.db.session() as session:
            await session.execute(
                update(Certificate)
                .where(Certificate.id == cert["id"])
                .values(
                    renewing_node="elsewhere-0123456789abcdef",
                    renewal_lease_until=utcnow() + timedelta(minutes=5),
                )
            )
        release.touch()
        job = await client.call("core.job_wait", job_id, 60)
        after = await client.call("certificate.get_instance", cert["id"])

    assert after["serial"] == cert["serial"]  # nothing installed
    assert after["renewal"]["failure_count"] == 0
    # the manual renewal learns it lost the race, and counts no failure
    assert (job["state"], job["error"]) == (
        "FAILED",
        "a renewal of taken is already running: it is being renewed by another "
        "daemon (node elsewhere-0123456789abcdef); wait for it",
    )
    assert await _lease(certd, cert["id"]) == (
        "elsewhere-0123456789abcdef",
        pytest.approx(utcnow() + timedelta(minutes=5), abs=timedelta(minutes=1)),
    )
