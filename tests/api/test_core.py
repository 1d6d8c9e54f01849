"""Discovery, jobs and their history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import certd.api.jobs
from certd.api.jobs import JobState
from certd.store.models import Job as JobRow
from tests.daemon import RunningDaemon, make_config, running_daemon


async def test_discover_describes_every_method(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        document = await client.call("rpc.discover")
    assert document["openrpc"].startswith("1.2")
    by_name = {m["name"]: m for m in document["methods"]}
    assert set(by_name) == set(certd.daemon.registry.methods)
    create = by_name["certificate.create"]
    assert create["x-job"] is True
    assert create["params"][0]["name"] == "data"
    data_schema = create["params"][0]["schema"]
    properties = data_schema["$defs"]["CertificateCreate"]["properties"]
    assert {"name", "create_type", "csr_id", "dns_mapping", "san"} <= set(properties)
    query = by_name["certificate.query"]
    assert [p["name"] for p in query["params"]] == ["filters", "options"]
    assert query["result"]["schema"]  # list of entries, an entry, or a count
    for method in document["methods"]:
        assert method["summary"], method["name"]
        assert "schema" in method["result"], method["name"]


async def test_job_progress_result_and_history(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    async with running_daemon(config) as running:
        jobs = running.daemon.jobs
        steps = asyncio.Event()

        async def work(job) -> dict[str, int]:  # type: ignore[no-untyped-def]
            await job.set_progress(50, "half way")
            await steps.wait()
            return {"answer": 42}

        job = await jobs.submit("test.work", {"x": 1}, work, caller="tests")
        seen = await jobs.wait_for_change(job.id, 5)
        while seen["progress"]["percent"] < 50:
            seen = await jobs.wait_for_change(job.id, 5)
        assert seen["state"] == "RUNNING"
        assert seen["progress"] == {"percent": 50.0, "description": "half way"}
        steps.set()
        done = await jobs.wait(job.id, 5)
        assert done["state"] == "SUCCESS"
        assert done["result"] == {"answer": 42}

        async def forever(job) -> None:  # type: ignore[no-untyped-def]
            await asyncio.sleep(3600)

        stuck = await jobs.submit("test.forever", [], forever)
        async with running.client() as client:
            await client.call("core.job_abort", stuck.id)
            aborted = await client.call("core.job_wait", stuck.id, 5)
        assert aborted["state"] == JobState.ABORTED
        assert aborted["error"] == "aborted by request"

        # A job left running by a killed process is marked when the daemon starts.
        async with running.daemon.db.session() as session:
            left = JobRow(method="test.forever", arguments=[], state="RUNNING")
            session.add(left)
    async with running_daemon(config) as restarted:
        async with restarted.client() as client:
            history = await client.call("core.get_jobs", [], {"order_by": ["id"]})
    states = {job["id"]: (job["state"], job["error"]) for job in history}
    assert states[job.id] == ("SUCCESS", None)
    assert states[stuck.id][0] == "ABORTED"
    assert states[left.id][0] == "ABORTED"
    assert "interrupted" in states[left.id][1]


async def test_a_finished_jobs_entry_is_the_same_from_memory_and_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certd.api.jobs, "PROGRESS_FLUSH_SECONDS", 0.05)
    async with running_daemon(make_config(tmp_path / "state")) as running:
        jobs = running.daemon.jobs
        flushed = asyncio.Event()
        finish = asyncio.Event()

        async def work(job) -> dict[str, object]:  # type: ignore[no-untyped-def]
            await job.set_progress(30, "working")
            await flushed.wait()
            await job.set_progress(90, "nearly")
            await finish.wait()
            return {"names": ["a", "b"], "count": 2, "nested": {"ok": True}}

        job = await jobs.submit("test.work", {"x": 1}, work, caller="tests")
        # The row is written at the first progress flush, not when the job starts.
        for _ in range(100):
            async with running.daemon.db.session() as session:
                row = await session.get(JobRow, job.id)
                assert row is not None
                if row.progress_percent == 30:
                    break
            await asyncio.sleep(0.02)
        assert (row.state, row.progress_description) == ("RUNNING", "working")
        assert row.started_at is not None
        flushed.set()
        finish.set()
        from_memory = await jobs.wait(job.id, 5)
        from_store = await jobs.entry(job.id)  # no longer running: read back
    assert job.id not in jobs.running
    assert from_memory["state"] == "SUCCESS"
    assert from_memory["result"] == {
        "names": ["a", "b"],
        "count": 2,
        "nested": {"ok": True},
    }
    assert from_store == from_memory


async def test_listing_jobs_does_not_queue_behind_a_writing_session(
    tmp_path: Path,
) -> None:
    async with running_daemon(make_config(tmp_path / "state")) as running:
        jobs = running.daemon.jobs

        async def work(job) -> int:  # type: ignore[no-untyped-def]
            return 7

        done = await jobs.wait((await jobs.submit("test.work", [], work)).id, 5)
        async with running.daemon.db.session() as session:
            session.add(JobRow(method="test.held", arguments=[], state="WAITING"))
            await session.flush()  # the sessions' one connection is held
            listed = await asyncio.wait_for(jobs.entries(), 5)
            one = await asyncio.wait_for(jobs.entry(done["id"]), 5)
    assert [entry["method"] for entry in listed] == ["test.work"]
    assert one == done


async def test_ca_and_authenticator_queries_do_not_queue_behind_a_writing_session(
    tmp_path: Path,
) -> None:
    async with running_daemon(make_config(tmp_path / "state")) as running:
        async with running.client() as client:
            await client.call(
                "certificateauthority.create",
                {"name": "root", "create_type": "CA_CREATE_INTERNAL", "common": "root"},
            )
            await client.call(
                "acme.dns.authenticator.create",
                {
                    "name": "bind",
                    "attributes": {
                        "authenticator": "rfc2136",
                        "server": "127.0.0.1",
                        "port": 53,
                        "tsig_key_name": "k",
                        "tsig_secret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                        "tsig_algorithm": "hmac-sha256",
                    },
                },
            )
        services = running.daemon.services
        async with running.daemon.db.session() as session:
            session.add(JobRow(method="test.held", arguments=[], state="WAITING"))
            await session.flush()  # the sessions' one connection is held
            cas = await asyncio.wait_for(services["certificateauthority"].entries(), 5)
            authenticators = await asyncio.wait_for(
                services["acme.dns.authenticator"].entries(), 5
            )
    assert [(ca["name"], ca["has_privatekey"]) for ca in cas] == [("root", True)]
    (bind,) = authenticators
    # Read with their encrypted columns opened; secrets stay hidden.
    assert bind["attributes"]["server"] == "127.0.0.1"
    assert bind["secrets_set"] == ["tsig_secret"]
    assert "tsig_secret" not in bind["attributes"]
