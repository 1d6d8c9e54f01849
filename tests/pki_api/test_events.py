"""Issuing and revoking raise their events at once, scheduler or not."""

from __future__ import annotations

from pathlib import Path

from tests.daemon import make_config, running_daemon
from tests.pki_api.conftest import issue, make_root


async def test_events_are_raised_when_the_change_is_made(tmp_path: Path) -> None:
    # renewal.enabled is false in test configs: no scheduler tick helps here.
    async with running_daemon(make_config(tmp_path / "state")) as running:
        async with running.client() as client:
            root = await make_root(client)
            leaf = await issue(client, root["id"], "leaf")
            events = await client.call(
                "event.query", [["certificate_id", "=", leaf["id"]]]
            )
            assert [e["kind"] for e in events] == ["certificate.issued"]

            await client.call(
                "certificate.update",
                leaf["id"],
                {"revoked": True, "revoked_reason": "keyCompromise"},
            )
            events = await client.call(
                "event.query",
                [["certificate_id", "=", leaf["id"]]],
                {"order_by": ["id"]},
            )
            assert [e["kind"] for e in events] == [
                "certificate.issued",
                "certificate.revoked",
            ]
            assert events[1]["data"]["reason"] == "keyCompromise"
            plan = await client.call("certificate.renewal_plan")
            mine = next(p for p in plan if p["id"] == leaf["id"])
            assert mine["reason"] == "revoked"
