"""The running daemon renews ACME certificates by itself, against pebble and BIND."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from certd.client import RpcError
from certd.pki.extensions import serial_hex
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.renewal.conftest import issue_acme, replace_account, rfc2136
from tests.renewal.factory import wait_until
from tests.testbed import NamedServer, PebbleServer


@pytest.fixture
async def certd(
    tmp_path: Path, named: NamedServer, short_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        named=named,
        pebble=short_pebble,
        renewal={
            "enabled": True,
            "tick_interval": 0.1,
            # a one-minute certificate is due 6 s after it starts
            "earliest_fraction": 0.1,
            "jitter": 0,
            "retry_base": 0.5,
            "retry_max": 2,
            "failure_alert_after": 2,
        },
    )
    async with running_daemon(config) as daemon:
        yield daemon


def _serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


async def _events(client: Any, cid: int, kind: str) -> list[dict[str, Any]]:
    return await client.call(
        "event.query", [["certificate_id", "=", cid], ["kind", "=", kind]]
    )


async def test_due_certificate_is_renewed_and_deployed_by_the_loop(
    certd: RunningDaemon, named: NamedServer, short_pebble: PebbleServer, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    marker = tmp_path / "reloaded"
    hook = [
        sys.executable,
        "-c",
        "import os, sys; open(sys.argv[1], 'a').write("
        "os.environ['CERTD_REASON'] + ' ' + os.environ['CERTD_SERIAL'] + '\\n')",
        str(marker),
    ]
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136(named)},
        )
        cert = await issue_acme(
            client, short_pebble, authenticator["id"], "www", ["www.example.test"]
        )
        cid = cert["id"]
        await replace_account(client, short_pebble)
        await client.call(
            "certificate.set_deploy",
            cid,
            {
                "targets": [
                    {
                        "directory": str(live),
                        "files": ["fullchain", "privkey"],
                        "key_mode": "0640",
                    }
                ],
                "hooks": [{"argv": hook}],
            },
        )
        plan = await client.call("certificate.renewal_plan")
        renewed = await wait_until(
            lambda: _events(client, cid, "certificate.renewed"), timeout=30
        )
        new_serial = renewed[0]["data"]["serial"]

        async def deployed() -> bool:
            return marker.exists() and f"renewed {new_serial}\n" in marker.read_text()

        await wait_until(deployed, timeout=10)
        after = await client.call("certificate.get_instance", cid)

        async def first_job() -> dict[str, Any] | None:
            jobs = await client.call(
                "core.get_jobs", [["method", "=", "certificate.renew"]]
            )
            return jobs[0] if jobs[0]["state"] != "RUNNING" else None

        job = await wait_until(first_job)
        async with aiohttp.ClientSession() as http:
            async with http.get(certd.url + "/metrics") as response:
                metrics = await response.text()
            async with http.get(certd.url + "/readyz") as response:
                ready = await response.json()

    old_leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
    entry = next(p for p in plan if p["id"] == cid)
    assert entry["kind"] == "acme"
    assert entry["window_source"] == "lifetime_fraction"
    assert (
        entry["next_attempt_at"]
        == (
            old_leaf.not_valid_before_utc
            + (old_leaf.not_valid_after_utc - old_leaf.not_valid_before_utc) * 0.1
        ).isoformat()
    )

    assert renewed[0]["data"]["old_serial"] == serial_hex(old_leaf.serial_number)
    assert _serial(after["certificate"]) != old_leaf.serial_number
    assert job["state"] == "SUCCESS"
    assert job["caller"] == "scheduler"
    assert job["arguments"] == {"id": cid, "trigger": "schedule"}
    assert job["result"]["deployed"] is True
    assert after["renewal"]["failure_count"] == 0

    # the key rotated: the live key is the new one, not the CSR's
    key_file = (live / "privkey.pem").read_text()
    assert (live / "privkey.pem").stat().st_mode & 0o777 == 0o640
    assert (live / "fullchain.pem").stat().st_mode & 0o777 == 0o644
    from certd.pki.keys import load_private_key, public_key_der

    new_leaf = x509.load_pem_x509_certificate((live / "fullchain.pem").read_bytes())
    assert public_key_der(new_leaf.public_key()) == public_key_der(  # type: ignore[arg-type]
        load_private_key(key_file)
    )
    assert public_key_der(new_leaf.public_key()) != public_key_der(  # type: ignore[arg-type]
        old_leaf.public_key()  # type: ignore[arg-type]
    )
    assert marker.read_text().splitlines()[0].startswith("configured ")
    assert named.query("_acme-challenge.www.example.test") == []
    assert 'certd_renewals_total{result="success"}' in metrics
    assert 'certd_certificate_expiry_seconds{certificate="www"}' in metrics
    assert "certd_acme_request_duration_seconds_count" in metrics
    samples = dict(
        line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#")
    )
    assert float(samples["certd_dns_propagation_seconds_count"]) >= 1
    assert float(samples["certd_scheduler_running"]) == 1
    assert "certd_scheduler_lag_seconds" in samples
    assert "certd_jobs_running" in samples
    assert ready["checks"]["scheduler"] is True


async def test_forced_renewal_keeps_the_key_when_asked(
    certd: RunningDaemon, named: NamedServer, short_pebble: PebbleServer
) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136(named)},
        )
        cert = await issue_acme(
            client,
            short_pebble,
            authenticator["id"],
            "api",
            ["api.example.test"],
            renew_days=1,
        )
        updated = await client.call(
            "certificate.update", cert["id"], {"reuse_key": True}
        )
        result = await call_job(client, "certificate.renew", cert["id"])
        after = await client.call("certificate.get_instance", cert["id"])
        csr = await client.call("certificate.get_instance", cert["csr_id"])
        with pytest.raises(RpcError) as csr_renewal:
            await client.call("certificate.renew", cert["csr_id"])

    assert updated["reuse_key"] is True
    assert result["serial"] == after["serial"]
    assert after["serial"] != cert["serial"]
    assert after["CSR"] == cert["CSR"] == csr["CSR"]
    old_key = x509.load_pem_x509_certificate(cert["certificate"].encode()).public_key()
    new_key = x509.load_pem_x509_certificate(after["certificate"].encode()).public_key()
    assert old_key == new_key
    assert csr_renewal.value.message.endswith(
        f"certificate {csr['name']!r} cannot be renewed: it is a CSR"
    )


async def test_failing_certificate_backs_off_and_others_still_renew(
    certd: RunningDaemon, named: NamedServer, short_pebble: PebbleServer
) -> None:
    async with certd.client() as client:
        good = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136(named)},
        )
        broken = await client.call(
            "acme.dns.authenticator.create",
            {
                "name": "broken",
                "attributes": rfc2136(
                    named, secret="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                ),
            },
        )
        failing = await issue_acme(
            client, short_pebble, good["id"], "fail", ["fail.example.test"]
        )
        healthy = await issue_acme(
            client, short_pebble, good["id"], "ok", ["ok.example.test"]
        )
        await replace_account(client, short_pebble)
        await client.call(
            "certificate.update",
            failing["id"],
            {"dns_mapping": {"fail.example.test": broken["id"]}},
        )
        failing_events = await wait_until(
            lambda: _events(client, failing["id"], "certificate.renewal_failing"),
            timeout=30,
        )
        await wait_until(
            lambda: _events(client, healthy["id"], "certificate.renewed"), timeout=30
        )
        failed = await _events(client, failing["id"], "certificate.renewal_failed")
        entry = await client.call("certificate.get_instance", failing["id"])
        plan = {p["id"]: p for p in await client.call("certificate.renewal_plan")}

    assert failing_events[0]["data"]["failure_count"] == 2
    assert failing_events[0]["severity"] == "error"
    assert [e["data"]["failure_count"] for e in failed][:2] == [1, 2]
    # backoff: retry_base 0.5 s doubled per failure, less up to a quarter
    for event, full in zip(failed[:2], (0.5, 1.0), strict=True):
        waited = datetime.fromisoformat(
            event["data"]["next_attempt_at"]
        ) - datetime.fromisoformat(event["data"]["last_attempt_at"])
        assert full * 0.75 <= waited.total_seconds() <= full
    assert entry["renewal"]["last_error"].startswith("rfc2136: TSIG key rejected")
    assert "(BADSIG)" in entry["renewal"]["last_error"]
    assert entry["renewal"]["failure_count"] >= 2
    assert entry["certificate"] == failing["certificate"]  # the current one is kept
    assert plan[failing["id"]]["reason"] in ("backoff", "lifetime_fraction")
    assert plan[failing["id"]]["failure_count"] >= 2
    assert named.query("_acme-challenge.fail.example.test") == []
