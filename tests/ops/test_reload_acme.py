"""A reload says which ACME settings wait for a restart, and applies the rest."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from certd.config import load_config
from tests.daemon import make_config, running_daemon, write_config
from tests.testbed import PebbleServer


async def test_a_new_ca_bundle_waits_for_a_restart_and_says_so(
    tmp_path: Path, pebble: PebbleServer
) -> None:
    path = write_config(tmp_path / "certd.toml", make_config(tmp_path / "state"))
    async with running_daemon(load_config(path)) as running:
        daemon = running.daemon
        session = daemon.http
        changed = make_config(
            tmp_path / "state",
            pebble=pebble,
            acme={"request_timeout": 7},
            renewal={"enabled": False, "scan_interval": 1234},
        )
        write_config(path, changed)
        with capture_logs() as logs:
            await daemon.reload()
        # Orders in flight keep the session they use; the new trust waits.
        assert daemon.http is session
        assert daemon.config.acme.ca_bundle is None
        assert daemon.config.acme.request_timeout == 30
        assert daemon.config.acme.order_timeout == 30  # applied
        assert daemon.config.renewal.scan_interval == 1234  # applied
    (warning,) = [e for e in logs if e["event"] == "config_needs_restart"]
    assert warning["sections"] == ["acme.ca_bundle", "acme.request_timeout"]
    assert any(e["event"] == "config_reloaded" for e in logs)
