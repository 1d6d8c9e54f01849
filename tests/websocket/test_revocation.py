"""A WebSocket login with an API key ends when the key is revoked."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from certd.store.models import ApiKey
from tests.daemon import (
    RunningDaemon,
    call_job,
    make_config,
    running_daemon,
    write_config,
)
from tests.renewal.factory import make_chain
from tests.store.postgres import start_postgres
from tests.websocket.client import CallFailed, WsClient, connect
from tests.websocket.conftest import Key, Probe, make_key, ws_url
from tests.websocket.scram_client import ScramClient

# The answer to the call that finds the login's key revoked.
REVOKED = {
    "code": -32001,
    "message": "Method call error",
    "data": {
        "error": 207,
        "errname": "ENOTAUTHENTICATED",
        "reason": (
            "Not authenticated: the API key this connection logged in with has "
            "been revoked"
        ),
        "trace": None,
        "extra": None,
    },
}
# The answer to a call made before the revocation, withheld after it.
WITHHELD = {
    **REVOKED,
    "data": {
        **REVOKED["data"],  # type: ignore[dict-item]
        "reason": REVOKED["data"]["reason"]  # type: ignore[index]
        + "; the call was made before, and may have taken effect",
    },
}
# The answer to every call after that: the connection is logged out.
NOT_AUTHENTICATED = {
    "code": -32001,
    "message": "Method call error",
    "data": {
        "error": 207,
        "errname": "ENOTAUTHENTICATED",
        "reason": "Not authenticated",
        "trace": None,
        "extra": None,
    },
}


async def revoke_with_cli(certd: RunningDaemon, name: str, directory: Path) -> None:
    """``certd apikey revoke NAME`` in another process, on the daemon's store."""
    config = write_config(directory / "certd.toml", certd.config)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "certd",
        "--config",
        str(config),
        "apikey",
        "revoke",
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert f"API key {name!r} revoked." in stderr.decode()


async def refusal(client: WsClient, method: str, *params: Any) -> dict[str, Any]:
    with pytest.raises(CallFailed) as caught:
        await client.call(method, *params)
    return caught.value.error


async def http_status(certd: RunningDaemon, key: str) -> int:
    body = {"jsonrpc": "2.0", "method": "auth.me", "id": 1}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{certd.url}/rpc", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        return response.status


def updates(client: WsClient, since: int = 0) -> list[dict[str, Any]]:
    return [
        m["params"]
        for m in client.received[since:]
        if m.get("method") == "collection_update"
    ]


def unsubscribed(client: WsClient) -> list[dict[str, Any]]:
    return [
        m["params"] for m in client.received if m.get("method") == "notify_unsubscribed"
    ]


async def imported_certificate(certd: RunningDaemon) -> int:
    chain = make_chain(["www.example.test"])
    async with certd.client() as http:
        entry = await call_job(
            http,
            "certificate.create",
            {
                "name": "web",
                "create_type": "CERTIFICATE_CREATE_IMPORTED",
                "certificate": chain.fullchain_pem,
                "privatekey": chain.key_pem,
            },
        )
    return int(entry["id"])


async def test_cli_revocation_ends_the_open_session_and_no_other(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    victim = await make_key(certd, "victim")
    bystander = await make_key(certd, "bystander")
    cert_id = await imported_certificate(certd)
    async with (
        connect(ws_url(certd)) as client,
        connect(ws_url(certd)) as other,
    ):
        await client.login_plain("victim", victim.raw)
        await other.login_plain("bystander", bystander.raw)
        exported = await client.call("certificate.export", cert_id, "PEM")
        assert "PRIVATE KEY" in exported["privatekey"]
        # Over HTTP too, so the daemon holds the key among those it verified.
        assert await http_status(certd, victim.key) == 200

        await revoke_with_cli(certd, "victim", tmp_path)

        assert await refusal(client, "certificate.export", cert_id, "PEM") == REVOKED
        assert await refusal(client, "auth.me") == NOT_AUTHENTICATED
        assert await refusal(client, "certificate.export", cert_id) == (
            NOT_AUTHENTICATED
        )
        assert await http_status(certd, victim.key) == 401
        # The connection stays open for a login with another key.
        assert await client.call("core.ping") == "pong"
        login = await client.login_plain("victim", victim.raw)
        assert login == {"response_type": "AUTH_ERR"}
        login = await client.login_plain("bystander", bystander.raw)
        assert login["response_type"] == "SUCCESS"
        assert (await client.call("auth.me"))["caller"] == "apikey:bystander"

        assert (await other.call("auth.me"))["caller"] == "apikey:bystander"
        exported = await other.call("certificate.export", cert_id, "PEM")
        assert "PRIVATE KEY" in exported["privatekey"]
    assert await http_status(certd, bystander.key) == 200


async def test_subscriptions_of_a_revoked_login_deliver_nothing_more(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    victim = await make_key(certd, "victim")
    bystander = await make_key(certd, "bystander")
    events = certd.daemon.events
    async with (
        connect(ws_url(certd)) as client,
        connect(ws_url(certd)) as other,
    ):
        await client.login_plain("victim", victim.raw)
        await other.login_plain("bystander", bystander.raw)
        for session in (client, other):
            await session.call("core.subscribe", "event.query")
        before = await events.publish("certificate.renewed", "before", subject="web")
        for session in (client, other):
            assert (await session.next_event())["params"]["id"] == before["id"]
        seen = len(client.received)

        await revoke_with_cli(certd, "victim", tmp_path)
        after = await events.publish("certificate.renewed", "after", subject="web")

        # The event finds the key revoked on its way out: the subscription
        # ends instead, and the event is never written.
        ended = await client.next_event()
        assert ended["params"] == {
            "collection": "event.query",
            "error": NOT_AUTHENTICATED["data"],
        }
        assert ended["method"] == "notify_unsubscribed"
        assert (await other.next_event())["params"]["id"] == after["id"]
        await events.publish("certificate.renewed", "later", subject="web")
        assert await client.call("core.ping") == "pong"
        assert updates(client, seen) == []
        assert await refusal(client, "core.subscribe", "event.query") == (
            NOT_AUTHENTICATED
        )
        assert (await other.next_event())["params"]["fields"]["message"] == "later"


async def test_a_job_started_before_the_revocation_answers_with_the_refusal(
    certd: RunningDaemon, probe: Probe, tmp_path: Path
) -> None:
    victim = await make_key(certd, "victim")
    async with connect(ws_url(certd)) as client:
        await client.login_plain("victim", victim.raw)
        await client.call("core.subscribe", "core.get_jobs")
        probe.gate.clear()
        _, answer = await client.start("probe.work")
        while True:
            event = (await client.next_event("core.get_jobs"))["params"]
            if event["fields"]["progress"]["percent"] == 25:
                break
        job_id = event["id"]
        seen = len(client.received)

        await revoke_with_cli(certd, "victim", tmp_path)
        probe.gate.set()

        with pytest.raises(CallFailed) as caught:
            await answer
        assert caught.value.error == WITHHELD
        assert [u for u in updates(client, seen) if u["id"] == job_id] == []
        assert unsubscribed(client) == [
            {"collection": "core.get_jobs", "error": NOT_AUTHENTICATED["data"]}
        ]
    # The job itself ran to its end: it was accepted while the key stood.
    finished = await certd.daemon.jobs.wait(job_id)
    assert (finished["state"], finished["result"]) == ("SUCCESS", {"outcome": "ok"})


async def test_daemon_revocation_ends_a_scram_login(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        _, final = await client.login_scram(ScramClient("ci", key.id, key.secret))
        assert final is not None
        assert (await client.call("auth.me"))["caller"] == "apikey:ci"
        await certd.daemon.api_keys.revoke("ci")
        assert await refusal(client, "auth.me") == REVOKED


async def test_a_key_revoked_between_the_scram_messages_does_not_log_in(
    certd: RunningDaemon, key: Key
) -> None:
    scram = ScramClient("ci", key.id, key.secret)
    async with connect(ws_url(certd)) as client:
        first = await client.call(
            "auth.login_ex",
            {
                "mechanism": "SCRAM",
                "scram_type": "CLIENT_FIRST_MESSAGE",
                "rfc_str": scram.first(),
            },
        )
        assert first["scram_type"] == "SERVER_FIRST_RESPONSE"
        await certd.daemon.api_keys.revoke("ci")
        final = await client.call(
            "auth.login_ex",
            {
                "mechanism": "SCRAM",
                "scram_type": "CLIENT_FINAL_MESSAGE",
                "rfc_str": scram.final(first["rfc_str"]),
            },
        )
        assert final == {"response_type": "AUTH_ERR"}
        assert await refusal(client, "auth.me") == NOT_AUTHENTICATED


async def test_a_key_made_read_only_makes_the_login_read_only(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        assert (await client.call("auth.me"))["readonly"] is False
        # No command does this; another program with the store might.
        async with certd.daemon.db.session() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key.id).values(readonly=True)
            )

        error = await refusal(client, "certificate.export", 1)
        assert error["data"]["errname"] == "EACCES"
        assert error["data"]["reason"] == (
            "certificate.export hands out private keys; this API key is read-only"
        )
        assert await client.call("auth.me") == {
            "username": "ci",
            "readonly": True,
            "caller": "apikey:ci",
        }


async def test_on_postgresql_the_cli_revocation_ends_the_session(
    tmp_path: Path,
) -> None:
    # There the key is read through a pooled connection, not on the loop.
    with start_postgres() as postgres:
        database = await postgres.create_database("revocation")
        config = make_config(
            tmp_path / "state", store={"database_url": postgres.url(database)}
        )
        async with running_daemon(config) as certd:
            victim = await make_key(certd, "victim")
            async with connect(ws_url(certd)) as client:
                await client.login_plain("victim", victim.raw)
                await client.call("core.subscribe", "event.query")
                assert (await client.call("auth.me"))["caller"] == "apikey:victim"

                await revoke_with_cli(certd, "victim", tmp_path)
                await certd.daemon.events.publish("certificate.renewed", "after")

                ended = await client.next_event()
                assert ended["method"] == "notify_unsubscribed"
                assert await refusal(client, "auth.me") == NOT_AUTHENTICATED
                assert updates(client) == []
