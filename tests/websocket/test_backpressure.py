"""A client that leaves its answers unread cannot make the daemon hold them."""

from __future__ import annotations

from structlog.testing import capture_logs

from certd.api.registry import Service, api_method
from certd.api.websocket import Connection
from tests.daemon import RunningDaemon
from tests.renewal.factory import wait_until
from tests.websocket.conftest import Key, ws_server
from tests.websocket.raw import RawClient

MIB = 1024 * 1024


class Bulk(Service):
    """A method with an answer as large as the caller asks."""

    namespace = "bulk"

    @api_method(anonymous=True, readonly=True)
    async def blob(self, size: int) -> str:
        """``size`` bytes of text."""
        return "x" * size


def _add_bulk(running: RunningDaemon) -> None:
    running.daemon.registry.add_service(Bulk(running.daemon))


async def _only_connection(running: RunningDaemon) -> Connection:
    server = ws_server(running)
    await wait_until(lambda: server.connections, interval=0.01)
    (connection,) = server.connections
    return connection


async def test_unread_answers_over_the_byte_limit_close_with_1008(
    certd: RunningDaemon,
) -> None:
    _add_bulk(certd)
    server = ws_server(certd)
    server.max_queued_bytes = 2 * MIB
    client = await RawClient.connect(certd.daemon.http_port or 0)
    try:
        with capture_logs() as logs:
            # Far more than the socket buffers on both sides hold.
            for n in range(20):
                await client.call("bulk.blob", MIB, request_id=n)
            connection = await _only_connection(certd)
            await wait_until(lambda: connection._aborting, interval=0.01)
            # What the client would never read is let go of at once. (Once the
            # close is seen, the reader may already have queued the None that
            # stops the writer.)
            assert [m for m in connection._outbox._queue if m is not None] == []  # type: ignore[attr-defined]
            assert connection._queued_bytes == 0

            code, answered = await client.close_code()
        assert code == 1008
        assert len(answered) < 20
        assert all(m["result"] == "x" * MIB for m in answered)
        (warning,) = [e for e in logs if e["event"] == "websocket_reader_too_slow"]
        assert warning["log_level"] == "warning"
        assert warning["queued_bytes"] > 2 * MIB
        assert warning["connection"] == connection.id
    finally:
        client.close()


async def test_a_call_is_in_flight_until_its_answer_is_written(
    certd: RunningDaemon, key: Key
) -> None:
    _add_bulk(certd)
    ws_server(certd).max_calls_in_flight = 1
    client = await RawClient.connect(certd.daemon.http_port or 0)
    try:
        await client.call("bulk.blob", 16 * MIB, request_id="big")
        connection = await _only_connection(certd)
        # The answer is queued or being written, and the client reads nothing.
        await wait_until(lambda: connection._queued_bytes, interval=0.01)
        await client.call("core.ping", request_id="ping")

        big = await client.message()
        assert big["id"] == "big" and len(big["result"]) == 16 * MIB
        refused = await client.message()
        assert refused["id"] == "ping"
        assert refused["error"]["code"] == -32000

        # Written, the answer gives its place back.
        await client.call("core.ping", request_id="again")
        assert await client.message() == {
            "jsonrpc": "2.0",
            "result": "pong",
            "id": "again",
        }
    finally:
        client.close()
