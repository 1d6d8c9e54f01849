"""Job methods over the WebSocket: events first, the call's answer when the job ends."""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon import RunningDaemon
from tests.websocket.client import CallFailed, WsClient, connect
from tests.websocket.conftest import Key, Probe, ws_url

CSR = {
    "name": "web",
    "create_type": "CERTIFICATE_CREATE_CSR",
    "key_type": "EC",
    "san": ["www.example.test"],
}


def job_events(client: WsClient, job_id: int) -> list[dict[str, Any]]:
    return [
        m["params"]
        for m in client.received
        if m.get("method") == "collection_update"
        and m["params"]["collection"] == "core.get_jobs"
        and m["params"]["id"] == job_id
    ]


def position(client: WsClient, predicate: Any) -> int:
    return next(i for i, m in enumerate(client.received) if predicate(m))


async def logged_in(client: WsClient, key: Key, follow_jobs: bool = True) -> None:
    await client.login_plain(key.name, key.raw)
    if follow_jobs:
        await client.call("core.subscribe", "core.get_jobs")


async def test_csr_job_announces_itself_then_reports_then_answers(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await logged_in(client, key)
        request_id, pending = await client.start("certificate.create", CSR)
        entry = await pending

        assert entry["name"] == "web"
        assert entry["san"] == ["DNS:www.example.test"]
        events = job_events(client, events_job_id(client, request_id))
        assert [e["msg"] for e in events] == ["added"] + ["changed"] * (len(events) - 1)
        assert all(e["fields"]["message_ids"] == [request_id] for e in events)
        percents = [e["fields"]["progress"]["percent"] for e in events]
        assert percents == sorted(percents)
        assert {2.0, 10.0, 70.0, 100.0} <= set(percents)
        assert events[0]["fields"]["state"] == "RUNNING"
        last = events[-1]["fields"]
        assert last["state"] == "SUCCESS"
        assert last["result"] == entry
        assert last["method"] == "certificate.create"
        assert last["arguments"]["data"]["name"] == entry["name"]
        assert last["arguments"]["data"].get("privatekey") is None
        assert set(last["progress"]) == {"percent", "description", "extra"}
        assert isinstance(last["time_started"]["$date"], int)
        assert isinstance(last["time_finished"]["$date"], int)

        # The announcement names the call before anything else answers it.
        answer = position(client, lambda m: m.get("id") == request_id)
        assert (
            position(client, lambda m: m.get("method") == "collection_update") < answer
        )
        assert (
            position(
                client,
                lambda m: (
                    m.get("method") == "collection_update"
                    and m["params"]["msg"] == "changed"
                    and m["params"]["fields"]["state"] == "SUCCESS"
                ),
            )
            < answer
        )


def events_job_id(client: WsClient, request_id: str) -> int:
    added = next(
        m["params"]
        for m in client.received
        if m.get("method") == "collection_update"
        and request_id in m["params"]["fields"]["message_ids"]
    )
    return int(added["id"])


async def test_without_following_jobs_the_answer_is_the_result(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await logged_in(client, key, follow_jobs=False)
        entry = await client.call("certificate.create", CSR)
        assert entry["name"] == "web"
        assert [m for m in client.received if "method" in m] == []


@pytest.mark.parametrize(
    ("outcome", "code", "errno", "kind", "extra"),
    [
        (
            "invalid",
            -32602,
            22,
            "VALIDATION",
            [["data.name", "must be lower case", 22]],
        ),
        ("missing", -32001, 2, "NotFoundError", None),
    ],
)
async def test_failed_job_reports_its_error_in_both_shapes(
    certd: RunningDaemon,
    key: Key,
    probe: Probe,
    outcome: str,
    code: int,
    errno: int,
    kind: str,
    extra: list[list[Any]] | None,
) -> None:
    async with connect(ws_url(certd)) as client:
        await logged_in(client, key)
        request_id, pending = await client.start("probe.work", outcome)
        with pytest.raises(CallFailed) as caught:
            await pending
        last = job_events(client, events_job_id(client, request_id))[-1]
    fields = last["fields"]
    assert last["msg"] == "changed"
    assert fields["state"] == "FAILED"
    assert fields["exc_info"]["type"] == kind
    assert fields["exc_info"]["errno"] == errno
    assert fields["exc_info"]["extra"] == extra
    assert fields["exception"].splitlines()[-1].endswith(fields["error"])
    assert fields["exc_info"]["repr"]

    assert caught.value.code == code
    data = caught.value.data
    assert data is not None
    assert data["error"] == errno
    assert data["extra"] == extra
    if outcome == "missing":
        assert data["reason"] == "certificate 42 does not exist"
        assert data["errname"] == "ENOENT"
    else:
        assert data["reason"] == "[EINVAL] data.name: must be lower case"


async def test_legacy_jobs_answer_with_the_job_id_at_once(
    certd: RunningDaemon, key: Key, probe: Probe
) -> None:
    probe.gate.clear()
    async with connect(ws_url(certd), handshake=False) as client:
        options = await client.call("core.set_options", {"legacy_jobs": True})
        assert options["legacy_jobs"] is True
        await logged_in(client, key)
        job_id = await client.call("probe.work")
        assert isinstance(job_id, int)
        probe.gate.set()
        while True:
            event = await client.next_event("core.get_jobs")
            if event["params"]["fields"]["state"] == "SUCCESS":
                break
        assert event["params"]["id"] == job_id
        assert event["params"]["fields"]["result"] == {"outcome": "ok"}


async def test_jobs_started_elsewhere_reach_followers_only(
    certd: RunningDaemon, key: Key
) -> None:
    async with (
        connect(ws_url(certd)) as follower,
        connect(ws_url(certd)) as bystander,
        connect(ws_url(certd)) as anonymous,
    ):
        await logged_in(follower, key)
        await logged_in(bystander, key, follow_jobs=False)
        async with certd.client() as http:
            job_id = await http.call("certificate.create", CSR)
            await http.wait_job(job_id)
        while True:
            event = await follower.next_event("core.get_jobs")
            if event["params"]["fields"]["state"] == "SUCCESS":
                break
        events = job_events(follower, job_id)
        assert events[0]["msg"] == "added"
        assert all(e["fields"]["message_ids"] == [] for e in events)
        # The bystander's and anonymous connection's next message is their own.
        assert await bystander.call("core.ping") == "pong"
        assert await anonymous.call("core.ping") == "pong"
        assert [m for m in bystander.received if "method" in m] == []
        assert [m for m in anonymous.received if "method" in m] == []


async def test_an_aborted_job_answers_with_ecanceled(
    certd: RunningDaemon, key: Key, probe: Probe
) -> None:
    probe.gate.clear()
    async with connect(ws_url(certd)) as client:
        await logged_in(client, key)
        request_id, pending = await client.start("probe.work")
        while True:
            event = await client.next_event("core.get_jobs")
            if event["params"]["fields"]["progress"]["percent"] == 25:
                break
        await client.call("core.job_abort", event["params"]["id"])
        with pytest.raises(CallFailed) as caught:
            await pending
        last = job_events(client, event["params"]["id"])[-1]["fields"]
    assert last["state"] == "ABORTED"
    assert last["message_ids"] == [request_id]
    assert caught.value.code == -32001
    assert caught.value.data is not None
    assert caught.value.data["errname"] == "ECANCELED"
    assert caught.value.data["reason"] == "aborted by request"
