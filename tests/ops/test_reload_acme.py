"""A reload applies the ACME section to outbound HTTPS, and orders go on."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from certd.config import load_config
from tests.daemon import make_config, running_daemon, write_config
from tests.testbed import PebbleServer


async def _reaches(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as reply:
            return reply.status == 200
    except aiohttp.ClientConnectorCertificateError:
        return False


async def test_a_reload_trusts_a_new_ca_bundle_and_keeps_the_old_session_open(
    tmp_path: Path, pebble: PebbleServer
) -> None:
    path = write_config(tmp_path / "certd.toml", make_config(tmp_path / "state"))
    async with running_daemon(load_config(path)) as running:
        daemon = running.daemon
        before = daemon.http
        assert before is not None
        assert not await _reaches(before, pebble.directory_url)

        trusting = make_config(tmp_path / "state", pebble=pebble)
        write_config(path, trusting)
        await daemon.reload()
        after = daemon.http
        assert after is not None and after is not before
        assert await _reaches(after, pebble.directory_url)
        assert daemon.config.acme.ca_bundle == pebble.tls_ca_path
        # what started on the old session may still use it
        assert not before.closed

        # a bundle that cannot be read keeps the running config and session
        broken = make_config(tmp_path / "state", pebble=pebble)
        broken.acme.ca_bundle = tmp_path / "missing.pem"
        write_config(path, broken)
        await daemon.reload()
        assert daemon.http is after
        assert daemon.config.acme.ca_bundle == pebble.tls_ca_path
    assert before.closed and after.closed
