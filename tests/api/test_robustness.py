"""Load, start-up failures and shutdown leave the daemon in a clean state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certd.client import RpcError
from certd.errors import ValidationError
from certd.service import Daemon
from tests.daemon import call_job, make_config, running_daemon
from tests.testbed import PebbleServer


async def test_a_flood_of_jobs_waits_its_turn_and_every_job_ends(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "state", server={"max_running_jobs": 3})
    async with running_daemon(config) as running:
        jobs = running.daemon.jobs
        at_once = peak = 0

        async def work(job) -> int:  # type: ignore[no-untyped-def]
            nonlocal at_once, peak
            at_once += 1
            peak = max(peak, at_once)
            for step in range(5):
                await job.set_progress(step * 20, f"step {step}")
                await asyncio.sleep(0.005)
            at_once -= 1
            return job.id

        submitted = [await jobs.submit("test.flood", [], work) for _ in range(40)]
        results = [await jobs.wait(j.id, 30) for j in submitted]
        assert [r["state"] for r in results] == ["SUCCESS"] * 40
        assert [r["result"] for r in results] == [j.id for j in submitted]
        assert peak == 3
        # What the store says agrees with memory once every job has ended.
        async with running.client() as client:
            stored = await client.call("core.get_jobs", [["method", "=", "test.flood"]])
        assert {j["state"] for j in stored} == {"SUCCESS"}


async def test_many_key_generations_through_the_api(tmp_path: Path) -> None:
    async with running_daemon(make_config(tmp_path / "state")) as running:
        async with running.client() as client:
            created = await asyncio.gather(
                *(
                    call_job(
                        client,
                        "certificate.create",
                        {
                            "name": f"flood-{i}",
                            "create_type": "CERTIFICATE_CREATE_CSR",
                            "key_type": "EC",
                            "san": [f"f{i}.example.test"],
                        },
                    )
                    for i in range(30)
                )
            )
            assert sorted(c["name"] for c in created) == sorted(
                f"flood-{i}" for i in range(30)
            )
            assert await client.call("certificate.query", [], {"count": True}) == 30
            assert await client.call("core.ping") == "pong"


async def test_the_socket_is_removed_when_the_daemon_stops(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    async with running_daemon(config):
        assert config.server.unix_socket is not None
        assert config.server.unix_socket.exists()
    assert not config.server.unix_socket.exists()


async def test_a_bad_ca_bundle_is_named_and_nothing_is_left_open(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "state", acme={"ca_bundle": str(tmp_path / "missing.pem")}
    )
    daemon = Daemon(config)
    with pytest.raises(ValidationError) as caught:
        await daemon.start()
    assert caught.value.errors[0].field == "acme.ca_bundle"
    assert "missing.pem" in caught.value.message
    assert config.server.unix_socket is not None
    assert not config.server.unix_socket.exists()


async def test_an_untrusted_acme_server_is_met_with_the_setting_to_use(
    tmp_path: Path, pebble: PebbleServer
) -> None:
    async with running_daemon(make_config(tmp_path / "state")) as running:
        async with running.client() as client:
            job_id = await client.call(
                "acme.registration.create",
                {"acme_directory_uri": pebble.directory_url, "tos": True},
            )
            with pytest.raises(RpcError) as caught:
                await client.wait_job(job_id)
            accounts = await client.call("acme.registration.query")

    assert caught.value.message.startswith(
        f"cannot reach the ACME server at {pebble.directory_url}: its TLS "
        "certificate is not trusted here ("
    )
    assert "certificate verify failed" in caught.value.message
    assert caught.value.message.endswith(
        "set [acme] ca_bundle to that root's certificate"
    )
    assert accounts == []


async def test_jobs_cancelled_before_they_run_are_recorded(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", server={"max_running_jobs": 1})
    async with running_daemon(config) as running:
        jobs = running.daemon.jobs
        gate = asyncio.Event()

        async def blocked(job) -> None:  # type: ignore[no-untyped-def]
            await gate.wait()

        first = await jobs.submit("test.blocked", [], blocked)
        queued = [await jobs.submit("test.blocked", [], blocked) for _ in range(3)]
        await jobs.abort(queued[0].id)
        aborted = await jobs.entry(queued[0].id)
        assert aborted["state"] == "ABORTED"
        assert aborted["error"] == "aborted by request"
    # Stopping with a job running and two queued ends all three, and the store
    # keeps that: nothing is left RUNNING or WAITING.
    async with running_daemon(config) as again:
        async with again.client() as client:
            stored = await client.call(
                "core.get_jobs", [["method", "=", "test.blocked"]]
            )
    assert {j["id"]: j["state"] for j in stored} == {
        first.id: "ABORTED",
        **{j.id: "ABORTED" for j in queued},
    }


async def test_storing_survives_a_deleted_csr_and_a_lost_name_race(
    tmp_path: Path,
) -> None:
    from certd.store.models import Certificate

    async with running_daemon(make_config(tmp_path / "state")) as running:
        service = running.daemon.services["certificate"]
        # The CSR an ACME job started from was deleted while the job ran.
        stored = await service._insert(  # type: ignore[attr-defined]
            Certificate(
                name="orphan",
                cert_type="CSR",
                create_type="CERTIFICATE_CREATE_CSR",
                csr="x",
                csr_id=999,
            )
        )
        entry = await service.get_entry(stored)
        assert entry["csr_id"] is None
        # Two jobs store the same name at once: one wins, the other gets the
        # same clear refusal a sequential duplicate gets.
        results = await asyncio.gather(
            *(
                service._insert(  # type: ignore[attr-defined]
                    Certificate(
                        name="twin",
                        cert_type="CSR",
                        create_type="CERTIFICATE_CREATE_CSR",
                        csr="x",
                    )
                )
                for _ in range(5)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, int)]
        losers = [r for r in results if isinstance(r, ValidationError)]
        assert len(winners) == 1 and len(losers) == 4
        assert all(e.errors[0].field == "data.name" for e in losers)
