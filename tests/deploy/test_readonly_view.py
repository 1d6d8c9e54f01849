"""What a read-only API key sees of deploy hooks: the program and how runs ended.

A hook's arguments may carry tokens and its output what the program printed;
a read-only key (for dashboards) gets neither, through any method or event,
while full callers (keys that are not read-only, the unix socket) get both.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from certd.client import RpcError
from certd.deploy.deployer import state_for_readonly
from certd.deploy.hooks import withheld
from certd.deploy.models import DeploySpec
from certd.store.models import ApiKey, Certificate
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.renewal.factory import make_chain, store_certificate, wait_until
from tests.websocket.client import WsClient, connect
from tests.websocket.conftest import Key, make_key, ws_url

# What the hook prints (written reversed in its script, so that the script,
# an argument, does not hold it) and its secret-looking argument.
OUTPUT_SECRET = f"printed-secret-{secrets.token_hex(6)}"
ERROR_SECRET = f"stderr-secret-{secrets.token_hex(6)}"
ARGUMENT_SECRET = f"--token=argument-secret-{secrets.token_hex(6)}"
SECRETS = (OUTPUT_SECRET, ERROR_SECRET, ARGUMENT_SECRET)
# argv: status to exit with, a file to wait for ("" for none), the token.
SCRIPT = (
    "import os, sys, time\n"
    "while sys.argv[2] and not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.02)\n"
    f"print({OUTPUT_SECRET[::-1]!r}[::-1])\n"
    f"print({ERROR_SECRET[::-1]!r}[::-1], file=sys.stderr)\n"
    "sys.exit(int(sys.argv[1]))\n"
)
HIDDEN_ARGUMENTS = 5


def hook_argv(status: int = 0, gate: Path | None = None) -> list[str]:
    return [sys.executable, "-c", SCRIPT, str(status), str(gate or ""), ARGUMENT_SECRET]


def leaked(value: Any) -> list[str]:
    """The secrets found anywhere in ``value`` as JSON."""
    text = json.dumps(value)
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon


@pytest.fixture
async def viewer(certd: RunningDaemon) -> Key:
    return await make_key(certd, "dashboard", readonly=True)


async def with_hook(
    certd: RunningDaemon, name: str, status: int = 0, gate: Path | None = None
) -> int:
    """A stored certificate whose one deploy hook is the script above."""
    cid = await store_certificate(
        certd.daemon, name, make_chain([f"{name}.example.test"])
    )
    spec = DeploySpec.model_validate(
        {"hooks": [{"argv": hook_argv(status, gate), "timeout": 10}]}
    )
    async with certd.daemon.db.session() as session:
        row = await session.get(Certificate, cid)
        assert row is not None
        row.deploy = spec.stored()
    return cid


def readonly_state(full: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A deploy state as a read-only key should get it: no spec digest either."""
    return {
        **{k: v for k, v in full.items() if k != "spec"},
        "hooks": [withheld_run(run)],
    }


def withheld_run(full: dict[str, Any]) -> dict[str, Any]:
    """The record of a hook's run as a read-only key should get it."""
    return {
        **full,
        "argv": [sys.executable],
        "arguments_withheld": HIDDEN_ARGUMENTS,
        "output": None,
        "output_withheld": True,
    }


async def test_http_read_only_key_gets_no_hook_arguments_or_output(
    certd: RunningDaemon, viewer: Key
) -> None:
    cid = await with_hook(certd, "web")
    async with certd.client() as admin:
        job_id = await admin.call("certificate.deploy", cid)
        result = await admin.wait_job(job_id)
        full_deploy = await admin.call("certificate.get_deploy", cid)
        full_job = await admin.call("core.job_wait", job_id)
        full_query = await admin.call("certificate.query")
        full_match = await admin.call(
            "core.get_jobs", [["result.hooks", "=", result["hooks"]]]
        )
    async with certd.unix_client() as local:
        local_deploy = await local.call("certificate.get_deploy", cid)

    run = result["hooks"][0]
    assert run["argv"] == hook_argv()
    assert OUTPUT_SECRET in run["output"] and ERROR_SECRET in run["output"]
    assert (run["returncode"], run["timed_out"], run["ok"]) == (0, False, True)
    assert full_deploy["deploy"]["hooks"] == [{"argv": hook_argv(), "timeout": 10.0}]
    assert full_deploy["state"]["hooks"] == [run]
    assert "output_withheld" not in run
    assert full_job["result"] == result
    assert [job["id"] for job in full_match] == [job_id]
    assert local_deploy == full_deploy

    async with certd.client(viewer.key) as dashboard:
        shown = await dashboard.call("certificate.get_deploy", cid)
        waited = await dashboard.call("core.job_wait", job_id)
        watched = await dashboard.call("core.job_watch", job_id, 0)
        listed = await dashboard.call("core.get_jobs", [["id", "=", job_id]])
        # A filter on the result sees what the caller sees, so it cannot be
        # used to test guesses at what is withheld.
        matched = await dashboard.call(
            "core.get_jobs", [["result.hooks", "=", result["hooks"]]]
        )
        query = await dashboard.call("certificate.query")
        instance = await dashboard.call("certificate.get_instance", cid)
        events = await dashboard.call("event.query")

    assert shown["deploy"]["hooks"] == [
        {
            "argv": [sys.executable],
            "arguments_withheld": HIDDEN_ARGUMENTS,
            "timeout": 10.0,
        }
    ]
    assert "spec" in full_deploy["state"]
    assert shown["state"] == readonly_state(full_deploy["state"], run)
    assert shown["nodes"] == full_deploy["nodes"]
    expected_job = {**full_job, "result": readonly_state(result, run)}
    assert waited == expected_job
    assert watched == expected_job
    assert listed == [expected_job]
    assert matched == []
    assert query == full_query
    assert [e["kind"] for e in events] == ["certificate.deployed"]
    for reply in (shown, waited, watched, listed, query, instance, events):
        assert leaked(reply) == []


async def test_a_failed_hook_shows_its_status_but_not_its_output(
    certd: RunningDaemon, viewer: Key
) -> None:
    cid = await with_hook(certd, "api", status=3)
    async with certd.client() as admin:
        job_id = await admin.call("certificate.deploy", cid)
        with pytest.raises(RpcError) as failed:
            await admin.wait_job(job_id)
        full = await admin.call("certificate.get_deploy", cid)
    async with certd.client(viewer.key) as dashboard:
        shown = await dashboard.call("certificate.get_deploy", cid)
        job = await dashboard.call("core.job_wait", job_id)
        events = await dashboard.call("event.query")

    run = full["state"]["hooks"][0]
    assert OUTPUT_SECRET in run["output"]
    assert ARGUMENT_SECRET in run["argv"]
    reason = f"{sys.executable} exited with status 3"
    assert reason in str(failed.value)
    assert shown["state"]["ok"] is False
    assert shown["state"]["hooks"] == [withheld_run(run)]
    assert shown["state"]["hooks"][0]["returncode"] == 3
    assert shown["state"]["hooks"][0]["timed_out"] is False
    assert shown["nodes"][certd.daemon.deployer.node]["errors"] == [reason]
    assert job["state"] == "FAILED"
    assert job["result"] is None
    assert job["error"].startswith(f"api: deployment failed: {reason}; retrying at ")
    assert [e["kind"] for e in events] == ["certificate.deploy_failed"]
    assert events[0]["data"]["errors"] == [reason]
    for reply in (shown, job, events):
        assert leaked(reply) == []


def updates(client: WsClient, collection: str) -> list[dict[str, Any]]:
    """The params of every collection_update of ``collection`` received so far."""
    return [
        m["params"]
        for m in client.received
        if m.get("method") == "collection_update"
        and m["params"]["collection"] == collection
    ]


async def final_job_event(client: WsClient, job_id: int) -> dict[str, Any]:
    """The fields of the event that reports the job's success."""

    def final() -> dict[str, Any] | None:
        return next(
            (
                u["fields"]
                for u in updates(client, "core.get_jobs")
                if u["id"] == job_id and u["fields"]["state"] == "SUCCESS"
            ),
            None,
        )

    return await wait_until(final)  # type: ignore[no-any-return]


async def test_websocket_events_and_calls_of_a_read_only_login(
    certd: RunningDaemon, viewer: Key
) -> None:
    cid = await with_hook(certd, "mail")
    admin_key = await make_key(certd, "admin")
    async with (
        connect(ws_url(certd)) as dashboard,
        connect(ws_url(certd)) as operator,
    ):
        await dashboard.login_plain(viewer.name, viewer.raw)
        await operator.login_plain(admin_key.name, admin_key.raw)
        for client in (dashboard, operator):
            await client.call("core.subscribe", "core.get_jobs")
            await client.call("core.subscribe", "event.query")
        async with certd.client() as admin:
            job_id = await admin.call("certificate.deploy", cid)
            result = await admin.wait_job(job_id)

        seen = await final_job_event(dashboard, job_id)
        told = await final_job_event(operator, job_id)
        deployed = await wait_until(lambda: updates(dashboard, "event.query"))
        shown = await dashboard.call("certificate.get_deploy", cid)
        waited = await dashboard.call("core.job_wait", job_id)
        listed = await dashboard.call("core.get_jobs", [["id", "=", job_id]])
        full = await operator.call("certificate.get_deploy", cid)

    run = result["hooks"][0]
    assert told["result"] == result
    assert seen == {**told, "result": readonly_state(result, run)}
    assert [u["fields"]["kind"] for u in deployed] == ["certificate.deployed"]
    assert shown["state"]["hooks"] == [withheld_run(run)]
    assert shown["deploy"]["hooks"][0]["arguments_withheld"] == HIDDEN_ARGUMENTS
    assert waited["result"]["hooks"] == [withheld_run(run)]
    assert listed[0]["result"] == waited["result"]
    assert full["state"]["hooks"] == [run]
    assert leaked(dashboard.received) == []
    assert OUTPUT_SECRET in json.dumps(operator.received)


async def test_events_queued_before_a_key_is_made_read_only_are_shaped_when_written(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    cid = await with_hook(certd, "vpn", gate=gate)
    key = await make_key(certd, "operator")
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        await client.call("core.subscribe", "core.get_jobs")
        async with certd.client() as admin:
            job_id = await admin.call("certificate.deploy", cid)
            # the job is running its hook, held at the gate
            await wait_until(
                lambda: any(
                    u["fields"]["progress"]["percent"] == 10
                    for u in updates(client, "core.get_jobs")
                )
            )
            # No command does this; another program with the store might.
            async with certd.daemon.db.session() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key.id).values(readonly=True)
                )
            # The job's last events are queued while the connection still
            # takes the login for a full one; the key is read when they are
            # written.
            gate.touch()
            result = await admin.wait_job(job_id)
        seen = await final_job_event(client, job_id)
        me = await client.call("auth.me")

    assert me["readonly"] is True
    assert OUTPUT_SECRET in result["hooks"][0]["output"]
    assert seen["result"]["hooks"] == [withheld_run(result["hooks"][0])]
    assert leaked(client.received) == []


def test_withheld_keeps_a_hook_not_run_and_counts_no_arguments_of_a_lone_program() -> (
    None
):
    assert withheld({}) == {}
    assert withheld({"argv": ["/usr/sbin/reload"], "timeout": None}) == {
        "argv": ["/usr/sbin/reload"],
        "arguments_withheld": 0,
        "timeout": None,
    }
    state = {"ok": True, "hooks": [{}], "files": {"cert": "/srv/cert.pem"}}
    assert state_for_readonly(state) == state
    assert state_for_readonly({}) == {}
    assert state_for_readonly(None) is None
