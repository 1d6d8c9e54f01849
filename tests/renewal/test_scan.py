"""The scan: expiry events once a day, plans for every certificate, old events pruned."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from certd.renewal import scheduler
from certd.renewal.scheduler import RenewalEngine
from certd.store.models import Event
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.renewal.factory import make_chain, store_certificate


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        renewal={"enabled": True, "expiry_warning_days": 10},
        events={"retention_days": 30},
    )
    async with running_daemon(config) as daemon:
        yield daemon


async def test_scan_raises_expiry_events_once_a_day(certd: RunningDaemon) -> None:
    now = dt.datetime.now(dt.UTC)
    soon = make_chain(["soon.example.test"], not_before=now - dt.timedelta(days=80))
    gone = make_chain(["gone.example.test"], not_before=now - dt.timedelta(days=91))
    fine = make_chain(["fine.example.test"])
    ids = {
        name: await store_certificate(certd.daemon, name, chain)
        for name, chain in (("soon", soon), ("gone", gone), ("fine", fine))
    }

    await certd.daemon.renewal.scan()
    await certd.daemon.renewal.scan()
    async with certd.client() as client:
        expiring = await client.call(
            "event.query", [["kind", "=", "certificate.expiring"]]
        )
        expired = await client.call(
            "event.query", [["kind", "=", "certificate.expired"]]
        )
        plan = {p["name"]: p for p in await client.call("certificate.renewal_plan")}

    assert [(e["certificate_id"], e["severity"]) for e in expiring] == [
        (ids["soon"], "warning")
    ]
    assert expiring[0]["data"]["not_after"] == soon.leaf.not_valid_after_utc.isoformat()
    assert 9 * 86400 < expiring[0]["data"]["seconds_left"] <= 10 * 86400
    assert [(e["certificate_id"], e["severity"]) for e in expired] == [
        (ids["gone"], "error")
    ]
    # imported certificates are not renewed, but they are watched
    assert {p["reason"] for p in plan.values()} == {"not_renewable"}
    assert plan["fine"]["renewable"] is False
    assert plan["fine"]["not_after"] == fine.leaf.not_valid_after_utc.isoformat()


async def test_scan_prunes_old_events(certd: RunningDaemon) -> None:
    old = await certd.daemon.events.publish("certificate.deployed", "long ago")
    recent = await certd.daemon.events.publish("certificate.deployed", "just now")
    async with certd.daemon.db.session() as session:
        row = await session.get(Event, old["id"])
        assert row is not None
        row.created_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)

    await certd.daemon.renewal.scan()

    async with certd.daemon.db.session() as session:
        left = (await session.scalars(select(Event.id))).all()
    assert old["id"] not in left
    assert recent["id"] in left


async def _stop_during_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_seconds: float
) -> list[str]:
    """Stop the engine while a scan runs; what the scan saw of the stop."""
    seen: list[str] = []
    started = asyncio.Event()

    async def slow_scan(self: RenewalEngine) -> None:
        started.set()
        try:
            await asyncio.sleep(scan_seconds)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("finished")

    monkeypatch.setattr(RenewalEngine, "scan", slow_scan)
    config = make_config(tmp_path / "state", renewal={"enabled": True})
    async with running_daemon(config) as certd:
        await asyncio.wait_for(started.wait(), 10)
        await certd.daemon.renewal.stop()
        seen.append(f"running={certd.daemon.renewal.running}")
    return seen


async def test_stop_lets_a_running_scan_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _stop_during_scan(tmp_path, monkeypatch, 0.3) == [
        "finished",
        "running=False",
    ]


async def test_stop_cancels_a_scan_that_outlasts_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "STOP_GRACE_SECONDS", 0.2)
    assert await _stop_during_scan(tmp_path, monkeypatch, 60) == [
        "cancelled",
        "running=False",
    ]
