"""What the daemon logs of calls that crash and of logins it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from certd.api.registry import Service, api_method
from certd.api.websocket import ClientOptions, CoreSession
from certd.api.ws_auth import RefusalLog
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, connect
from tests.websocket.conftest import make_key, ws_url

SECRET = "hunter2-never-logged"


class Broken(Service):
    """A method with a bug."""

    namespace = "broken"

    @api_method(anonymous=True, readonly=True)
    async def divide(self, by: int) -> float:
        """One divided by ``by``."""
        return 1 / by


async def _set_options_crashes(self: CoreSession, options: ClientOptions) -> None:
    raise RuntimeError("a bug in the connection's own methods")


async def test_a_crash_in_a_connection_method_is_logged_once_without_params(
    certd: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CoreSession, "set_options", _set_options_crashes)
    async with connect(ws_url(certd), handshake=False) as client:
        with capture_logs() as logs:
            with pytest.raises(CallFailed) as caught:
                await client.call("core.set_options", {"token": SECRET})
    assert caught.value.data is not None
    assert caught.value.data["errname"] == "EFAULT"
    assert caught.value.data["reason"] == "internal error; see the daemon log"
    (crash,) = [e for e in logs if e.get("exc_info")]
    assert crash["event"] == "websocket_call_crashed"
    assert crash["method"] == "core.set_options"
    assert crash["log_level"] == "error"
    assert SECRET not in repr(logs)


async def test_a_crash_in_a_method_is_logged_once(certd: RunningDaemon) -> None:
    certd.daemon.registry.add_service(Broken(certd.daemon))
    async with connect(ws_url(certd)) as client:
        with capture_logs() as logs:
            with pytest.raises(CallFailed) as caught:
                await client.call("broken.divide", 0)
    assert caught.value.data is not None
    assert caught.value.data["errname"] == "EFAULT"
    # The dispatcher logs it; the connection does not log it again.
    assert [e["event"] for e in logs if e.get("exc_info")] == ["rpc_crashed"]


async def test_refusals_of_a_rate_limited_address_log_one_warning(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "state",
        server={"auth_failure_burst": 1, "auth_failure_refill_seconds": 3600},
    )
    async with running_daemon(config) as running:
        key = await make_key(running, "ci")
        async with connect(ws_url(running)) as client:
            assert await client.login_plain("ci", f"{key.id}-wrong") == {
                "response_type": "AUTH_ERR"
            }
            with capture_logs() as logs:
                for _ in range(5):
                    with pytest.raises(CallFailed) as caught:
                        await client.login_plain("ci", key.raw)
                    assert caught.value.data is not None
                    assert caught.value.data["errname"] == "EAGAIN"
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    (refused,) = [e for e in logs if e["log_level"] == "warning"]
    assert refused["event"] == "authentication_refused_rate_limited"
    assert refused["remote"] == "127.0.0.1"
    assert refused["bucket"] == "key"
    assert refused["key_ref"] == f"id={key.id}"
    assert "exc_info" not in refused


def test_refusal_log_speaks_once_per_address_and_period() -> None:
    refusals = RefusalLog(max_tracked=2)
    assert refusals.due("a", now=0.0, period=60.0)
    assert not refusals.due("a", now=59.0, period=60.0)
    assert refusals.due("b", now=59.0, period=60.0)
    assert refusals.due("a", now=60.0, period=60.0)
    # Past the bound the address seen longest ago is forgotten.
    assert refusals.due("c", now=61.0, period=60.0)
    assert refusals.due("b", now=62.0, period=60.0)
