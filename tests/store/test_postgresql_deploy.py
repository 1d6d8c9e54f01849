"""Daemons sharing a PostgreSQL store each deploy a certificate onto their own host.

The spec is shared, so both in-process daemons run the same hook; it tells
them apart by ``CERTD_NODE`` and logs each run, and fails on a node while a
file named for that node exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from certd.service import Daemon
from tests.daemon import call_job
from tests.renewal.factory import wait_until
from tests.store.postgres import PostgresServer
from tests.store.test_postgresql_shared import Shared, _leaf, _start_two

HOOK = """
import json, os, pathlib, sys
here = pathlib.Path({directory!r})
node = os.environ["CERTD_NODE"]
failing = (here / ("fail-" + node)).exists()
run = {{k: os.environ[k] for k in ("CERTD_NODE", "CERTD_SERIAL", "CERTD_REASON")}}
with open(here / "runs.jsonl", "a") as log:
    log.write(json.dumps({{**run, "failed": failing}}) + "\\n")
sys.exit(1 if failing else 0)
"""


@pytest.fixture
async def shared(
    tmp_path: Path, postgres: PostgresServer, request: pytest.FixtureRequest
) -> AsyncIterator[Shared]:
    database = await postgres.create_database(request.node.name)
    async with AsyncExitStack() as stack:
        yield await _start_two(
            stack,
            tmp_path,
            postgres,
            database,
            deploy={"retry_base": 0.05, "retry_max": 0.2, "hook_retries": 2},
        )


def _spec(tmp_path: Path) -> dict[str, Any]:
    script = HOOK.format(directory=str(tmp_path))
    return {"hooks": [{"argv": [sys.executable, "-c", script], "timeout": 30}]}


def _runs(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "runs.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


async def _settled(daemon: Daemon) -> list[dict[str, Any]]:
    """The deploy jobs the daemon has under way, once they ended."""
    started = list(daemon.renewal.deploying.values())
    return [await daemon.jobs.wait(job_id) for job_id in started]


async def _tick(daemon: Daemon) -> list[dict[str, Any]]:
    """One scheduler tick; the deploy jobs it started, once they ended."""
    await daemon.renewal.tick()
    return await _settled(daemon)


async def _entry(daemon: Any, certificate_id: int) -> dict[str, Any]:
    async with daemon.client() as client:
        return await client.call(  # type: ignore[no-any-return]
            "certificate.get_deploy", certificate_id
        )


async def test_a_certificate_renewed_on_one_host_is_deployed_on_both(
    shared: Shared, tmp_path: Path
) -> None:
    one, two = shared.one.daemon, shared.two.daemon
    leaf = await _leaf(shared)
    async with shared.one.client() as client:
        await client.call("certificate.set_deploy", leaf["id"], _spec(tmp_path))
        first_on_one = await _settled(one)
        first_on_two = await _tick(two)
        renewed = await call_job(client, "certificate.renew", leaf["id"])
    then_on_two = await _tick(two)
    # Each host has deployed the new certificate: nothing is owed on either.
    idle = [await _tick(one), await _tick(two)]
    seen_by_one = await _entry(shared.one, leaf["id"])
    seen_by_two = await _entry(shared.two, leaf["id"])
    rows = await shared.rows(
        "SELECT node, state->>'serial', next_attempt_at FROM deployment "
        "WHERE certificate_id = $1 ORDER BY node",
        leaf["id"],
    )

    old, new = leaf["serial"], renewed["serial"]
    assert renewed["deployed"] is True
    jobs = first_on_one + first_on_two + then_on_two
    assert [job["state"] for job in jobs] == ["SUCCESS"] * 3
    assert idle == [[], []]
    assert [
        (r["CERTD_NODE"], r["CERTD_SERIAL"], r["CERTD_REASON"]) for r in _runs(tmp_path)
    ] == [
        (one.node, old, "configured"),
        (two.node, old, "configured"),
        (one.node, new, "renewed"),
        (two.node, new, "changed"),
    ]
    assert sorted(rows) == sorted([(one.node, new, None), (two.node, new, None)])
    assert (seen_by_one["state"]["serial"], seen_by_one["state"]["reason"]) == (
        new,
        "renewed",
    )
    assert (seen_by_two["state"]["serial"], seen_by_two["state"]["reason"]) == (
        new,
        "changed",
    )
    assert seen_by_one["next_attempt_at"] is seen_by_two["next_attempt_at"] is None
    assert seen_by_one["nodes"] == seen_by_two["nodes"]
    assert {
        node: (summary["ok"], summary["serial"], summary["owed"])
        for node, summary in seen_by_one["nodes"].items()
    } == {one.node: (True, new, False), two.node: (True, new, False)}


async def test_a_failure_on_one_host_is_its_own_and_retried_there(
    shared: Shared, tmp_path: Path
) -> None:
    one, two = shared.one.daemon, shared.two.daemon
    assert one.node is not None and two.node is not None
    leaf = await _leaf(shared)
    failing = tmp_path / f"fail-{two.node}"
    failing.touch()
    async with shared.one.client() as client:
        await client.call("certificate.set_deploy", leaf["id"], _spec(tmp_path))
    on_one = await _settled(one)
    failed_on_two = await _tick(two)
    seen_by_one = await _entry(shared.one, leaf["id"])
    seen_by_two = await _entry(shared.two, leaf["id"])
    # The first host owes nothing: the second one's failure is not its own.
    idle_on_one = await _tick(one)

    failing.unlink()

    async def retried() -> bool:
        await _tick(two)
        return bool((await _entry(shared.two, leaf["id"]))["state"].get("ok"))

    await wait_until(retried)
    after = await _entry(shared.one, leaf["id"])
    events = await shared.rows(
        "SELECT kind, data->>'node' FROM event WHERE certificate_id = $1 "
        "AND kind LIKE 'certificate.deploy%' ORDER BY id",
        leaf["id"],
    )

    assert [job["state"] for job in failed_on_two] == ["FAILED"]
    assert seen_by_one["state"]["ok"] is True
    assert seen_by_one["next_attempt_at"] is None
    assert seen_by_two["state"]["ok"] is False
    assert seen_by_two["next_attempt_at"] is not None
    assert seen_by_one["nodes"][two.node]["ok"] is False
    assert (
        seen_by_one["nodes"][two.node]["next_attempt_at"]
        == (seen_by_two["next_attempt_at"])
    )
    assert seen_by_one["nodes"][one.node]["ok"] is True
    assert [job["state"] for job in on_one] == ["SUCCESS"]
    assert idle_on_one == []
    assert [(r["CERTD_NODE"], r["failed"]) for r in _runs(tmp_path)] == [
        (one.node, False),
        (two.node, True),
        (two.node, False),
    ]
    assert after["state"]["attempts"] == 1
    assert after["nodes"][two.node]["attempts"] == 2
    assert after["nodes"][two.node]["ok"] is True
    assert events == [
        ("certificate.deployed", one.node),
        ("certificate.deploy_failed", two.node),
        ("certificate.deployed", two.node),
    ]
