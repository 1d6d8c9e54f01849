"""SIGKILL in the middle of a renewal, then a restart: nothing lost, nothing twice."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certd.client import Client
from certd.pki.keys import load_private_key, public_key_der
from certd.renewal.checkpoints import HOLD_ENV, POINTS
from tests.ops.conftest import DOMAIN, DaemonProcess, copy_prepared
from tests.renewal.factory import wait_until
from tests.testbed import NamedServer, PebbleServer


async def _job(client: Client, job_id: int) -> dict[str, Any]:
    return await client.call("core.job_wait", job_id, 0)


async def _held(client: Client, job_id: int, point: str) -> bool:
    job = await _job(client, job_id)
    assert job["state"] == "RUNNING", job
    return job["progress"]["description"] == f"held at {point}"


async def _settled(client: Client) -> list[dict[str, Any]] | None:
    jobs = await client.call("core.get_jobs")
    busy = [j for j in jobs if j["state"] in ("WAITING", "RUNNING")]
    return None if busy else jobs


async def _renewed(client: Client, cid: int, serial: str) -> dict[str, Any] | None:
    entry = await client.call("certificate.get_instance", cid)
    return entry if entry["serial"] != serial else None


def _retire_account(daemon: DaemonProcess) -> None:
    """Move the copied ACME account aside, as the daemon does with a deactivated one.

    pebble gives a new order an authorization the account already holds
    (valid since the prepared issuance or an earlier test) whenever
    rand.Intn(100) is not above PEBBLE_AUTHZREUSE, so 1 time in 100 even at 0.
    Such an order is ready at once, publishes no TXT value and never reaches
    txt_published or finalized with a value in DNS. An account registered by
    the test (_new_account) holds no authorization to hand back.
    """
    with contextlib.closing(sqlite3.connect(daemon.state_dir / "certd.db")) as db:
        with db:
            db.execute("UPDATE acme_account SET directory = directory || '#retired'")


async def _new_account(client: Client, pebble: PebbleServer) -> None:
    """Register the account the renewals of this test order with."""
    job_id = await client.call(
        "acme.registration.create",
        {"acme_directory_uri": pebble.directory_url, "tos": True},
    )
    account = await client.wait_job(job_id)
    assert account["status"] == "valid"
    assert account["directory"] == pebble.directory_url


def _key_matches(fullchain: Path, key: Path) -> bool:
    leaf = x509.load_pem_x509_certificate(fullchain.read_bytes())
    return public_key_der(leaf.public_key()) == public_key_der(  # type: ignore[arg-type]
        load_private_key(key.read_text())
    )


# order_created is left out: txt_published also holds an order that was created
# and never finalized, and each point costs two process starts.
@pytest.mark.parametrize("point", [p for p in POINTS if p != "order_created"])
async def test_sigkill_during_renewal_then_restart(
    point: str,
    prepared: tuple[Path, int],
    daemons: list[DaemonProcess],
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
) -> None:
    daemon = copy_prepared(prepared, tmp_path, named, pebble)
    daemons.append(daemon)
    cid = prepared[1]
    live = tmp_path / "live"

    _retire_account(daemon)
    daemon.start({HOLD_ENV: point})
    await daemon.wait_ready()
    async with daemon.client() as client:
        await _new_account(client, pebble)
        before = await client.call("certificate.get_instance", cid)
        await client.call(
            "certificate.set_deploy",
            cid,
            {"targets": [{"directory": str(live), "files": ["fullchain", "privkey"]}]},
        )
        await wait_until(lambda: (live / "fullchain.pem").exists())
        job_id = await client.call("certificate.renew", cid)
        await wait_until(lambda: _held(client, job_id, point))
        published = named.query(f"_acme-challenge.{DOMAIN}")
    daemon.kill()

    killed_attempt = daemon.query(
        "SELECT state, order_url, order_count FROM renewal_attempt"
    )
    stored = daemon.query("SELECT certificate FROM certificate WHERE id = ?", cid)
    assert len(killed_attempt) == 1
    if point == "installed":
        assert stored[0][0] != before["certificate"]
    else:
        # killed before the new certificate was stored: the old one is intact
        assert stored[0][0] == before["certificate"]
    # TXT values stay published from publication until the order is downloaded
    assert (published != []) == (point in ("txt_published", "finalized"))

    daemon.start()
    await daemon.wait_ready()
    async with daemon.client() as client:
        after = await wait_until(lambda: _renewed(client, cid, before["serial"]))
        jobs = await wait_until(lambda: _settled(client))
        await wait_until(
            lambda: (live / "fullchain.pem").read_text() == after["certificate"]
        )
    assert daemon.terminate() == 0

    by_id = {j["id"]: j for j in jobs}
    assert by_id[job_id]["state"] == "ABORTED"
    assert by_id[job_id]["error"] == "interrupted: the daemon stopped while the job ran"
    resumed = [
        j for j in jobs if j["method"] == "certificate.renew" and j["id"] != job_id
    ]
    if point == "installed":
        assert resumed == []  # nothing was left to do but the deployment
    else:
        assert [(j["state"], j["arguments"]["trigger"]) for j in resumed] == [
            ("SUCCESS", "resume")
        ]
        assert resumed[0]["result"]["resumed"] is True
    assert after["serial"] != before["serial"]
    assert _key_matches(live / "fullchain.pem", live / "privkey.pem")
    assert named.query(f"_acme-challenge.{DOMAIN}") == []

    attempts = daemon.query(
        "SELECT state, order_url, order_count, privatekey FROM renewal_attempt"
    )
    assert len(attempts) == 1  # resumed, not started again
    state, order_url, order_count, leftover_key = attempts[0]
    assert state == "succeeded"
    assert leftover_key is None
    if point in ("attempt_recorded", "finalized", "installed"):
        # the finalized order was fetched, not ordered again: issued once
        assert order_count == 1
    else:
        # an order that was never finalized is let go and a new one placed
        assert order_count == 2
    if point in ("finalized", "installed"):
        assert order_url == killed_attempt[0][1]
    assert daemon.query("SELECT count(*) FROM challenge_record") == [(0,)]


async def test_sigterm_cleans_txt_and_marks_the_job(
    prepared: tuple[Path, int],
    daemons: list[DaemonProcess],
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
) -> None:
    daemon = copy_prepared(prepared, tmp_path, named, pebble)
    daemons.append(daemon)
    cid = prepared[1]

    _retire_account(daemon)
    daemon.start({HOLD_ENV: "txt_published"})
    await daemon.wait_ready()
    async with daemon.client() as client:
        await _new_account(client, pebble)
        before = await client.call("certificate.get_instance", cid)
        job_id = await client.call("certificate.renew", cid)
        await wait_until(lambda: _held(client, job_id, "txt_published"))
        assert len(named.query(f"_acme-challenge.{DOMAIN}")) == 1
    assert daemon.terminate() == 0

    assert named.query(f"_acme-challenge.{DOMAIN}") == []
    assert daemon.query("SELECT state, error FROM job WHERE id = ?", job_id) == [
        ("ABORTED", "interrupted: the daemon is stopping")
    ]
    assert daemon.query("SELECT count(*) FROM challenge_record") == [(0,)]
    assert daemon.query("SELECT state FROM renewal_attempt") == [("running",)]
    assert "job_finished" in daemon.log_tail(200)

    daemon.start()
    await daemon.wait_ready()
    async with daemon.client() as client:
        after = await wait_until(lambda: _renewed(client, cid, before["serial"]))
        await wait_until(lambda: _settled(client))
        plan = await client.call("certificate.renewal_plan")
    assert daemon.terminate() == 0
    assert daemon.query("SELECT state, order_count FROM renewal_attempt") == [
        ("succeeded", 2)
    ]
    assert after["renewal"]["failure_count"] == 0
    assert [p["id"] for p in plan if p["job_id"] is not None] == []
