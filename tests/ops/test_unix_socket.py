"""A daemon does not take over a unix socket another one is serving on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from certd.errors import ValidationError
from certd.service import Daemon
from tests.daemon import make_config, running_daemon


async def test_a_second_daemon_refuses_a_socket_that_answers(tmp_path: Path) -> None:
    first = make_config(tmp_path / "first")
    path = first.server.unix_socket
    assert path is not None
    async with running_daemon(first) as running:
        second = make_config(tmp_path / "second")
        second.server.unix_socket = path
        daemon = Daemon(second)
        with pytest.raises(ValidationError) as caught:
            await daemon.start()
        await daemon.stop()
        assert caught.value.errors[0].field == "server.unix_socket"
        assert "already listens" in caught.value.errors[0].message
        # the first daemon keeps its socket and its clients
        async with running.unix_client() as client:
            assert await client.call("core.ping") == "pong"


async def test_a_socket_file_left_by_a_killed_daemon_is_replaced(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "state")
    path = config.server.unix_socket
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening, file left behind
    stale.close()
    async with running_daemon(config) as running:
        async with running.unix_client() as client:
            assert await client.call("core.ping") == "pong"
