"""Every method needs an authenticated caller, except the liveness probes."""

from __future__ import annotations

import os

import aiohttp
import pytest

from certd.client import Client, RpcError
from tests.daemon import RunningDaemon


async def test_every_method_refuses_an_anonymous_caller(certd: RunningDaemon) -> None:
    methods = sorted(certd.daemon.registry.methods)
    assert len(methods) > 10
    async with Client(url=certd.url) as anonymous:
        for method in methods:
            with pytest.raises(RpcError) as caught:
                await anonymous.call(method)
            assert caught.value.code == -32001, method
            assert "Not authenticated" in caught.value.message


async def test_probes_need_no_key(certd: RunningDaemon) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{certd.url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with session.get(f"{certd.url}/readyz") as response:
            body = await response.json()
            assert response.status == 200
            assert body["ready"] is True
            assert body["checks"]["store"] is True


async def test_unknown_malformed_and_revoked_keys_get_401(certd: RunningDaemon) -> None:
    _, key = await certd.daemon.api_keys.create("short-lived")
    async with certd.client(key) as client:
        assert await client.call("core.ping") == "pong"
    # Row ids past 64 bits or in other digits name no key (they once reached
    # the store and failed there with a 500).
    too_long = ("9" * 19 + "-secret", "5" * 5000 + "-secret", "\u0661-secret")
    for bad in ("certd_nothere_secret", "not-a-key", key[:-3] + "abc", *too_long):
        async with certd.client(bad) as client:
            status, reply = await client.raw(
                {"jsonrpc": "2.0", "method": "core.ping", "id": 1}
            )
            assert status == 401
            assert reply["error"]["code"] == -32001
    await certd.daemon.api_keys.revoke("short-lived")
    async with certd.client(key) as client:
        status, _ = await client.raw({"jsonrpc": "2.0", "method": "core.ping", "id": 1})
        assert status == 401
    stored = {k["name"]: k for k in await certd.daemon.api_keys.list()}
    assert stored["short-lived"]["revoked"] is True
    assert key not in str(stored)


async def test_keys_are_stored_hashed(certd: RunningDaemon) -> None:
    _, key = await certd.daemon.api_keys.create("hashed")
    secret = key.split("_", 2)[2]
    database = (certd.config.store.state_dir / "certd.db").read_bytes()
    wal = certd.config.store.state_dir / "certd.db-wal"
    everything = database + (wal.read_bytes() if wal.exists() else b"")
    assert secret.encode() not in everything


async def test_readonly_key_reads_but_cannot_change(certd: RunningDaemon) -> None:
    _, key = await certd.daemon.api_keys.create("viewer", readonly=True)
    async with certd.client(key) as client:
        assert await client.call("certificate.query") == []
        with pytest.raises(RpcError) as caught:
            await client.call(
                "acme.dns.authenticator.create",
                {"name": "x", "attributes": {"authenticator": "rfc2136"}},
            )
        assert caught.value.code == -32002
        assert caught.value.message == (
            "acme.dns.authenticator.create changes state and this API key is read-only"
        )
        # export changes nothing, but a read-only key may not take keys away
        with pytest.raises(RpcError) as export:
            await client.call("certificate.export", 1)
        assert export.value.code == -32002
        assert export.value.message == (
            "certificate.export hands out private keys; this API key is read-only"
        )
    async with certd.client() as client:
        assert await client.call("acme.dns.authenticator.query") == []


async def test_unix_socket_owner_needs_no_key(certd: RunningDaemon) -> None:
    socket_path = certd.config.server.unix_socket
    assert socket_path is not None
    assert oct(os.stat(socket_path).st_mode & 0o777) == "0o600"
    async with certd.unix_client() as client:
        assert await client.call("core.ping") == "pong"
        assert await client.call("certificate.query") == []
