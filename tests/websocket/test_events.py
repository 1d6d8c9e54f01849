"""Subscriptions to the event bus: collection_update events and their end."""

from __future__ import annotations

import pytest

from tests.daemon import RunningDaemon
from tests.websocket.client import CallFailed, connect
from tests.websocket.conftest import Key, ws_url


async def test_events_reach_the_collections_that_match(
    certd: RunningDaemon, key: Key
) -> None:
    events = certd.daemon.events
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        everything = await client.call("core.subscribe", "event.query")
        renewed = await client.call("core.subscribe", "certificate.renewed")
        assert everything != renewed

        entry = await events.publish(
            "certificate.renewed", "renewed web", subject="web", data={"serial": "0A"}
        )
        first = (await client.next_event())["params"]
        second = (await client.next_event())["params"]
        assert {first["collection"], second["collection"]} == {
            "event.query",
            "certificate.renewed",
        }
        for params in (first, second):
            assert params["msg"] == "added"
            assert params["id"] == entry["id"]
            assert params["fields"] == entry

        await events.publish("certificate.expiring", "web expires soon", subject="web")
        expiring = (await client.next_event())["params"]
        assert expiring["collection"] == "event.query"
        assert expiring["fields"]["kind"] == "certificate.expiring"

        await client.call("core.unsubscribe", everything)
        await events.publish("certificate.expiring", "still expiring", subject="web")
        marker = await events.publish("certificate.renewed", "again", subject="web")
        # The expiring event went to no one: the next one is the marker.
        after = (await client.next_event())["params"]
        assert after["collection"] == "certificate.renewed"
        assert after["id"] == marker["id"]


async def test_unknown_names_and_ids_are_refused(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        with pytest.raises(CallFailed) as caught:
            await client.call("core.subscribe", "certificate.frobnicated")
        assert caught.value.data is not None
        assert caught.value.data["errname"] == "ENOENT"
        assert "certificate.frobnicated" in caught.value.data["reason"]
        with pytest.raises(CallFailed) as caught:
            await client.call("core.unsubscribe", "no-such-id")
        assert caught.value.data is not None
        assert caught.value.data["errname"] == "ENOENT"


async def test_stopping_the_daemon_closes_connections_with_1001(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain(key.name, key.raw)
        await certd.daemon.stop()
        assert await client.wait_closed() == 1001
