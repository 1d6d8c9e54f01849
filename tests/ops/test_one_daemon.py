"""One daemon per state directory: a second is refused before it touches the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certd.errors import ConflictError
from certd.service import DAEMON_LOCK_FILE, Daemon
from tests.daemon import make_config, running_daemon


async def test_a_second_daemon_on_the_same_state_directory_is_refused(
    tmp_path: Path,
) -> None:
    first = make_config(tmp_path / "state")
    async with running_daemon(first) as running:
        async with running.unix_client() as client:
            job_id = await client.call(
                "certificate.create",
                {
                    "name": "slow",
                    "create_type": "CERTIFICATE_CREATE_CSR",
                    "key_type": "RSA",
                    "key_length": 4096,
                    "san": ["slow.example.test"],
                },
            )
            # Its own socket, so that only the state directory is shared.
            second_config = make_config(tmp_path / "state")
            second_config.server.unix_socket = tmp_path / "second.sock"
            second = Daemon(second_config)
            with pytest.raises(ConflictError) as caught:
                await second.start()
            await second.stop()
            job = await client.call("core.job_wait", job_id, 60)

    assert str(caught.value) == (
        f"another certd (pid {os.getpid()}) serves {tmp_path / 'state'}"
    )
    # Had the second started, its recovery would have aborted the first's job.
    assert job["state"] == "SUCCESS"
    assert not (tmp_path / "second.sock").exists()


async def test_the_lock_is_released_when_the_daemon_stops(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    async with running_daemon(config):
        pass
    assert (tmp_path / "state" / DAEMON_LOCK_FILE).read_text() == f"{os.getpid()}\n"
    async with running_daemon(config) as again:
        async with again.unix_client() as client:
            assert await client.call("core.ping") == "pong"


async def test_a_lock_file_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("kept\n")
    (state / DAEMON_LOCK_FILE).symlink_to(victim)
    daemon = Daemon(make_config(state))
    with pytest.raises(OSError):
        await daemon.start()
    await daemon.stop()
    assert victim.read_text() == "kept\n"
