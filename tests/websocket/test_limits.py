"""Per-connection limits: message size and calls in flight."""

from __future__ import annotations

from pathlib import Path

from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, connect
from tests.websocket.conftest import Key, Probe, ws_server, ws_url


async def test_a_request_over_the_size_limit_is_refused_by_id(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", server={"max_request_bytes": 2048})
    async with running_daemon(config) as running:
        async with connect(ws_url(running)) as client:
            reply = await client.request("core.ping", "x" * 3000, request_id="big")
            assert reply["id"] == "big"
            assert reply["error"]["code"] == -32600
            assert reply["error"]["message"].startswith("Request too large: ")
            assert "at most 2048 bytes" in reply["error"]["message"]
            assert await client.call("core.ping") == "pong"

            # Far beyond the limit the frame itself is refused and the socket closed.
            await client.ws.send_str("x" * 5000)
            assert await client.wait_closed() == 1009


async def test_calls_in_flight_are_limited_per_connection(
    certd: RunningDaemon, key: Key, probe: Probe
) -> None:
    ws_server(certd).max_calls_in_flight = 1
    probe.gate.clear()
    async with connect(ws_url(certd)) as client, connect(ws_url(certd)) as other:
        await client.login_plain(key.name, key.raw)
        await client.call("core.subscribe", "core.get_jobs")
        # A job call gives its place back once the job is submitted.
        _, job_call = await client.start("probe.work")
        job_id = (await client.next_event("core.get_jobs"))["params"]["id"]
        # Requests are read in order, so this one holds the only place when
        # the ping arrives.
        _, waiting = await client.start("core.job_wait", job_id, 60)
        try:
            await client.call("core.ping")
        except CallFailed as refused:
            assert refused.code == -32000
            assert "(1)" in refused.error["message"]
        else:
            raise AssertionError("a second call in flight was accepted")
        # Other connections have their own allowance.
        assert await other.call("core.ping") == "pong"

        probe.gate.set()
        assert (await waiting)["state"] == "SUCCESS"
        assert await job_call == {"outcome": "ok"}
        assert await client.call("core.ping") == "pong"
