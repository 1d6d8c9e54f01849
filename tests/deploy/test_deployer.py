"""Deployments through a running daemon: targets, hooks, retries and events."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import delete

from certd.client import RpcError
from certd.deploy.deployer import spec_digest
from certd.store.models import Certificate, Deployment
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki_api.conftest import issue, make_root
from tests.renewal.factory import make_chain, store_certificate, wait_until


class WebhookSink:
    """A local HTTP endpoint that records posted events; fails as told."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink.url = f"http://127.0.0.1:{port}/hook"
    yield sink
    await runner.cleanup()


@pytest.fixture
async def certd(tmp_path: Path, sink: WebhookSink) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        renewal={"enabled": True, "tick_interval": 0.05},
        deploy={"retry_base": 0.05, "retry_max": 0.2, "hook_retries": 2},
        events={
            "webhooks": [
                {
                    "url": sink.url,
                    "kinds": ["certificate.deployed", "certificate.deploy_failed"],
                    "retry_base": 0.01,
                    "headers": {"X-Token": "t"},
                }
            ]
        },
    )
    async with running_daemon(config) as daemon:
        yield daemon


def _hook(script: str) -> dict[str, Any]:
    return {"argv": [sys.executable, "-c", script], "timeout": 10}


async def _state(client: Any, cid: int) -> dict[str, Any]:
    return await client.call("certificate.get_deploy", cid)


async def test_deploy_writes_files_runs_hook_and_raises_events(
    certd: RunningDaemon, tmp_path: Path, sink: WebhookSink
) -> None:
    chain = make_chain(["www.example.test"])
    cid = await store_certificate(certd.daemon, "www", chain)
    live = tmp_path / "live"
    marker = tmp_path / "marker.json"
    script = (
        "import json, os; "
        f"json.dump({{k: v for k, v in os.environ.items()}}, open({str(marker)!r}, 'w'))"
    )
    subscription = certd.daemon.events.subscribe(["certificate.deployed"])

    async with certd.client() as client:
        entry = await client.call(
            "certificate.set_deploy",
            cid,
            {
                "targets": [
                    {"directory": str(live), "pkcs12_passphrase": "pw", "mode": "644"}
                ],
                "hooks": [_hook(script)],
            },
        )
        assert entry["deploy"]["targets"][0]["pkcs12_passphrase_set"] is True
        assert "pkcs12_passphrase" not in entry["deploy"]["targets"][0]
        # modes read back as ls and chmod show them
        assert entry["deploy"]["targets"][0]["mode"] == "0644"
        assert entry["deploy"]["targets"][0]["key_mode"] is None

        state = await wait_until(lambda: _ok_state(client, cid), timeout=10)
        events = await client.call("event.query", [["certificate_id", "=", cid]])

    assert state["files"]["fullchain"] == str(live / "fullchain.pem")
    assert (live / "fullchain.pem").read_text() == chain.fullchain_pem
    assert (live / "privkey.pem").stat().st_mode & 0o777 == 0o600
    env = json.loads(marker.read_text())
    assert env["CERTD_CERT_NAME"] == "www"
    assert env["CERTD_FULLCHAIN_PATH"] == str(live / "fullchain.pem")
    assert env["CERTD_KEY_PATH"] == str(live / "privkey.pem")
    assert env["CERTD_DOMAINS"] == "www.example.test"
    assert env["CERTD_REASON"] == "configured"
    assert "CERTD_API_KEY" not in env and "HOME" not in env
    assert [e["kind"] for e in events] == ["certificate.issued", "certificate.deployed"]
    delivered = subscription.queue.get_nowait()
    assert delivered["kind"] == "certificate.deployed"
    assert delivered["certificate_id"] == cid
    await wait_until(lambda: sink.received)
    assert sink.received[0]["kind"] == "certificate.deployed"
    assert sink.received[0]["subject"] == "www"


async def _ok_state(client: Any, cid: int) -> dict[str, Any] | None:
    state = (await _state(client, cid))["state"]
    return state if state.get("ok") else None


async def test_failing_hook_is_retried_alone(
    certd: RunningDaemon, tmp_path: Path, sink: WebhookSink
) -> None:
    cid = await store_certificate(certd.daemon, "api", make_chain(["api.example.test"]))
    live = tmp_path / "live"
    counter = tmp_path / "runs"
    # fails on its first run, succeeds on the second
    script = (
        "import sys; from pathlib import Path; "
        f"p = Path({str(counter)!r}); n = len(p.read_text()) if p.exists() else 0; "
        "p.write_text('x' * (n + 1)); sys.exit(0 if n else 1)"
    )
    sink.statuses = [500]  # the first webhook delivery fails and is retried

    async with certd.client() as client:
        await client.call(
            "certificate.set_deploy",
            cid,
            {
                "targets": [{"directory": str(live), "files": ["cert"]}],
                "hooks": [_hook(script)],
            },
        )
        await wait_until(lambda: (live / "cert.pem").exists())
        inode = (live / "cert.pem").stat().st_ino
        state = await wait_until(lambda: _ok_state(client, cid), timeout=10)
        kinds = [
            e["kind"]
            for e in await client.call("event.query", [["certificate_id", "=", cid]])
        ]

    assert counter.read_text() == "xx"
    assert state["attempts"] == 2
    assert state["hooks"][0]["attempts"] == 2
    assert (live / "cert.pem").stat().st_ino == inode  # files were not rewritten
    assert kinds == [
        "certificate.issued",
        "certificate.deploy_failed",
        "certificate.deployed",
    ]
    await wait_until(lambda: len(sink.received) == 3)
    first, retried, second = sink.received
    assert first == retried  # the same event, posted again after HTTP 500
    assert first["kind"] == "certificate.deploy_failed"
    assert second["kind"] == "certificate.deployed"


async def test_hook_that_keeps_failing_gives_up(certd: RunningDaemon) -> None:
    chain = make_chain(["db.example.test"])
    cid = await store_certificate(certd.daemon, "db", chain)

    async with certd.client() as client:
        await client.call(
            "certificate.set_deploy", cid, {"hooks": [_hook("raise SystemExit(2)")]}
        )

        async def given_up() -> dict[str, Any] | None:
            entry = await _state(client, cid)
            state = entry["state"]
            done = state.get("attempts") == 3 and entry["next_attempt_at"] is None
            return state if done else None

        state = await wait_until(given_up, timeout=10)
        failures = await client.call(
            "event.query", [["kind", "=", "certificate.deploy_failed"]]
        )
        cert = await client.call("certificate.get_instance", cid)

    assert state["ok"] is False
    assert state["hooks"][0]["returncode"] == 2
    assert [e["severity"] for e in failures] == ["warning", "warning", "error"]
    assert failures[-1]["message"].endswith("giving up")
    assert cert["certificate"] == chain.fullchain_pem  # never rolled back


async def test_set_deploy_checks_its_input(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    cid = await store_certificate(certd.daemon, "x", make_chain(["x.example.test"]))

    async with certd.client() as client:
        with pytest.raises(RpcError) as bad_owner:
            await client.call(
                "certificate.set_deploy",
                cid,
                {"targets": [{"directory": str(tmp_path), "owner": "no-such-user"}]},
            )
        with pytest.raises(RpcError) as relative:
            await client.call(
                "certificate.set_deploy", cid, {"targets": [{"directory": "tls"}]}
            )
        with pytest.raises(RpcError) as nothing:
            await call_job(client, "certificate.deploy", cid)
        with pytest.raises(RpcError) as missing:
            await client.call("certificate.get_deploy", 999)

    assert bad_owner.value.data["errors"][0]["field"] == "deploy.targets.0.owner"
    assert relative.value.data["errors"][0]["field"] == "deploy.targets.0.directory"
    assert "has no deploy targets" in nothing.value.message
    assert missing.value.message == "certificate 999 does not exist"


async def test_deploy_job_on_request(certd: RunningDaemon, tmp_path: Path) -> None:
    cid = await store_certificate(certd.daemon, "y", make_chain(["y.example.test"]))
    live = tmp_path / "y"

    async with certd.client() as client:
        await client.call(
            "certificate.set_deploy", cid, {"targets": [{"directory": str(live)}]}
        )
        await wait_until(lambda: _ok_state(client, cid))
        (live / "cert.pem").unlink()
        state = await call_job(client, "certificate.deploy", cid)

    assert state["ok"] is True
    assert state["reason"] == "manual"
    assert (live / "cert.pem").exists()


async def test_set_deploy_deploys_without_the_scheduler(tmp_path: Path) -> None:
    live = tmp_path / "live"
    async with running_daemon(make_config(tmp_path / "state")) as certd:
        cid = await store_certificate(certd.daemon, "z", make_chain(["z.example.test"]))
        async with certd.client() as client:
            await client.call(
                "certificate.set_deploy", cid, {"targets": [{"directory": str(live)}]}
            )
            state = await wait_until(lambda: _ok_state(client, cid))
            jobs = await client.call(
                "core.get_jobs", [["method", "=", "certificate.deploy"]]
            )

    assert certd.daemon.renewal.running is False
    assert state["reason"] == "configured"
    assert [j["state"] for j in jobs] == ["SUCCESS"]
    assert sorted(p.name for p in live.iterdir()) == [
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "privkey.pem",
    ]


async def test_set_deploy_refuses_ids_out_of_range(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    cid = await store_certificate(certd.daemon, "ids", make_chain(["i.example.test"]))

    async with certd.client() as client:
        with pytest.raises(RpcError) as error:
            await client.call(
                "certificate.set_deploy",
                cid,
                {
                    "targets": [
                        {
                            "directory": str(tmp_path / "live"),
                            "owner": "99999999999999999",
                            "group": "4294967295",
                        }
                    ]
                },
            )
        entry = await client.call("certificate.get_deploy", cid)

    assert [(e["field"], e["message"]) for e in error.value.data["errors"]] == [
        (
            "deploy.targets.0.owner",
            "99999999999999999: a numeric id must be between 0 and 4294967294",
        ),
        (
            "deploy.targets.0.group",
            "4294967295: a numeric id must be between 0 and 4294967294",
        ),
    ]
    assert entry["deploy"] == {"targets": [], "hooks": []}
    assert not (tmp_path / "live").exists()


async def test_allowed_directories_hold_through_symbolic_links(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    (root / "real").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    (root / "current").symlink_to(root / "real")
    config = make_config(
        tmp_path / "state",
        deploy={"allowed_directories": [str(root)], "hook_retries": 0},
    )

    async with running_daemon(config) as certd, certd.client() as client:
        cid = await store_certificate(certd.daemon, "s", make_chain(["s.example.test"]))
        with pytest.raises(RpcError) as refused:
            await client.call(
                "certificate.set_deploy",
                cid,
                {"targets": [{"directory": str(root / "link")}]},
            )
        await client.call(
            "certificate.set_deploy",
            cid,
            {"targets": [{"directory": str(root / "current"), "files": ["cert"]}]},
        )
        first = await wait_until(lambda: _ok_state(client, cid))
        # the link is pointed outside after it was accepted
        (root / "current").unlink()
        (root / "current").symlink_to(elsewhere)
        with pytest.raises(RpcError) as failed:
            await call_job(client, "certificate.deploy", cid)
        later = (await _state(client, cid))["state"]

    assert [e["field"] for e in refused.value.data["errors"]] == [
        "deploy.targets.0.directory"
    ]
    assert refused.value.data["errors"][0]["message"] == (
        f"{elsewhere} is not under deploy.allowed_directories of the daemon's config"
    )
    assert first["files"] == {"cert": str(root / "current" / "cert.pem")}
    assert [p.name for p in (root / "real").iterdir()] == ["cert.pem"]
    assert later["ok"] is False
    assert later["files_error"] == (
        f"{root / 'current'}: resolves to {elsewhere}, "
        "outside deploy.allowed_directories"
    )
    assert failed.value.message == (
        f"s: deployment failed: {root / 'current'}: resolves to {elsewhere}, "
        "outside deploy.allowed_directories"
    )
    assert list(elsewhere.iterdir()) == []


async def test_a_deploy_job_whose_deployment_failed_fails(tmp_path: Path) -> None:
    live = tmp_path / "missing" / "live"
    async with running_daemon(make_config(tmp_path / "state")) as certd:
        cid = await store_certificate(certd.daemon, "f", make_chain(["f.example.test"]))
        async with certd.client() as client:
            await client.call(
                "certificate.set_deploy", cid, {"targets": [{"directory": str(live)}]}
            )
            with pytest.raises(RpcError) as failed:
                await call_job(client, "certificate.deploy", cid)
            jobs = await client.call(
                "core.get_jobs", [["method", "=", "certificate.deploy"]]
            )
            started_by_set = await client.call("core.job_wait", jobs[0]["id"], 30)
            entry = await _state(client, cid)

    error = (
        f"f: deployment failed: {live}: the parent directory "
        f"{live.parent} does not exist; retrying at {entry['next_attempt_at']}"
    )
    assert failed.value.message == error
    assert failed.value.data["type"] == "DeployError"
    # set_deploy started one itself (retry), then ours (manual)
    assert len(jobs) == 2
    assert (jobs[-1]["state"], jobs[-1]["error"], jobs[-1]["result"]) == (
        "FAILED",
        error,
        None,
    )
    # the scheduler's own deploy jobs fail the same way
    assert started_by_set["caller"] == "scheduler"
    assert started_by_set["state"] == "FAILED"
    assert started_by_set["error"].startswith(
        f"f: deployment failed: {live}: the parent directory "
    )
    assert entry["state"]["ok"] is False
    assert entry["state"]["reason"] == "manual"
    assert entry["state"]["files_error"] == (
        f"{live}: the parent directory {live.parent} does not exist"
    )
    assert not live.parent.exists()


async def test_a_deploy_job_with_a_failed_hook_fails(certd: RunningDaemon) -> None:
    cid = await store_certificate(certd.daemon, "h", make_chain(["h.example.test"]))

    async with certd.client() as client:
        await client.call(
            "certificate.set_deploy", cid, {"hooks": [_hook("raise SystemExit(3)")]}
        )
        with pytest.raises(RpcError) as failed:
            await call_job(client, "certificate.deploy", cid)

    assert failed.value.message.startswith(
        f"h: deployment failed: {sys.executable} exited with status 3"
    )


async def test_a_renewal_whose_deployment_failed_still_succeeds(
    tmp_path: Path,
) -> None:
    live = tmp_path / "missing" / "live"
    async with running_daemon(make_config(tmp_path / "state")) as certd:
        async with certd.client() as client:
            root = await make_root(client)
            cert = await issue(client, root["id"])
            await client.call(
                "certificate.set_deploy",
                cert["id"],
                {"targets": [{"directory": str(live)}]},
            )
            result = await call_job(client, "certificate.renew", cert["id"])
            after = await client.call("certificate.get_instance", cert["id"])
            entry = await _state(client, cert["id"])
            failures = await client.call(
                "event.query",
                [
                    ["certificate_id", "=", cert["id"]],
                    ["kind", "=", "certificate.deploy_failed"],
                ],
            )

    # the new certificate is stored and in use: the renewal is not undone nor
    # failed; its result, the deploy state and an event say the files were not
    assert result["serial"] == after["serial"] != cert["serial"]
    assert result["deployed"] is False
    assert entry["state"]["ok"] is False
    assert entry["state"]["reason"] == "renewed"
    assert entry["state"]["serial"] == after["serial"]
    assert entry["next_attempt_at"] is not None
    assert failures[-1]["data"]["errors"] == [
        f"{live}: the parent directory {live.parent} does not exist"
    ]


async def test_set_deploy_takes_modes_as_octal_text_only(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    cid = await store_certificate(certd.daemon, "m", make_chain(["m.example.test"]))
    live = str(tmp_path / "live")

    async with certd.client() as client:
        with pytest.raises(RpcError) as number:
            await client.call(
                "certificate.set_deploy",
                cid,
                {"targets": [{"directory": live, "mode": 444, "key_mode": 416}]},
            )
        entry = await client.call("certificate.get_deploy", cid)

    assert [(e["field"], e["message"]) for e in number.value.data["errors"]] == [
        (
            "deploy.targets.0.mode",
            "give the mode as octal text like '0640', a string: the "
            "number 444 is read in decimal, which is 0674 in octal",
        ),
        (
            "deploy.targets.0.key_mode",
            "give the mode as octal text like '0640', a string: the "
            "number 416 is read in decimal, which is 0640 in octal",
        ),
    ]
    assert entry["deploy"] == {"targets": [], "hooks": []}


async def test_a_spec_stored_with_numeric_modes_still_deploys(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    async with running_daemon(make_config(tmp_path / "state")) as certd:
        cid = await store_certificate(certd.daemon, "o", make_chain(["o.example.test"]))
        async with certd.daemon.db.session() as session:
            row = await session.get(Certificate, cid)
            assert row is not None
            # as a daemon stored it before modes were kept as text
            row.deploy = {
                "targets": [
                    {
                        "directory": str(live),
                        "files": ["cert", "privkey"],
                        "mode": 0o604,
                        "key_mode": 0o440,
                    }
                ],
                "hooks": [],
            }
        async with certd.client() as client:
            entry = await client.call("certificate.get_deploy", cid)
            state = await call_job(client, "certificate.deploy", cid)

    target = entry["deploy"]["targets"][0]
    assert (target["mode"], target["key_mode"]) == ("0604", "0440")
    assert state["ok"] is True
    assert (live / "cert.pem").stat().st_mode & 0o7777 == 0o604
    assert (live / "privkey.pem").stat().st_mode & 0o7777 == 0o440


@pytest.mark.parametrize("owner", ["²", "١٢", "x\0y"])
async def test_set_deploy_refuses_owners_that_are_no_user(
    certd: RunningDaemon, tmp_path: Path, owner: str
) -> None:
    cid = await store_certificate(certd.daemon, "u", make_chain(["u.example.test"]))

    async with certd.client() as client:
        with pytest.raises(RpcError) as error:
            await client.call(
                "certificate.set_deploy",
                cid,
                {"targets": [{"directory": str(tmp_path), "owner": owner}]},
            )

    [field_error] = error.value.data["errors"]
    assert field_error["field"] == "deploy.targets.0.owner"
    assert field_error["message"] in (
        f"{owner}: no such user",
        "a user or group name cannot contain NUL",
    )


async def test_a_certificate_without_its_key_is_not_deployed(
    certd: RunningDaemon, tmp_path: Path
) -> None:
    cid = await store_certificate(certd.daemon, "k", make_chain(["k.example.test"]))

    async with certd.client() as client:
        await client.call(
            "certificate.set_deploy",
            cid,
            {"targets": [{"directory": str(tmp_path / "k"), "files": ["cert"]}]},
        )
        await wait_until(lambda: _ok_state(client, cid))
        async with certd.daemon.db.session() as session:
            row = await session.get(Certificate, cid)
            assert row is not None
            row.privatekey = None
        with pytest.raises(RpcError) as refused:
            await call_job(client, "certificate.deploy", cid)

    assert refused.value.data["errors"] == [
        {
            "field": "id",
            "message": "'k' has no certificate and private key to deploy",
            "errno": 22,
        }
    ]


async def test_a_deploy_state_kept_per_certificate_becomes_this_hosts(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "state")
    runs = tmp_path / "runs"
    script = f"open({str(runs)!r}, 'a').write('x')"
    async with running_daemon(config) as certd:
        cid = await store_certificate(certd.daemon, "v", make_chain(["v.example.test"]))
        async with certd.client() as client:
            await client.call("certificate.set_deploy", cid, {"hooks": [_hook(script)]})
            deployed = await wait_until(lambda: _ok_state(client, cid))
        node = certd.daemon.node
        # As a daemon from before deployments per host left the store.
        async with certd.daemon.db.session() as session:
            row = await session.get(Certificate, cid)
            assert row is not None
            row.deploy_state, row.deploy_next_attempt_at = deployed, None
            await session.execute(delete(Deployment))

    async with running_daemon(config) as certd:
        async with certd.client() as client:
            entry = await _state(client, cid)
        again = await certd.daemon.deployer.adopt()
        async with certd.daemon.db.session() as session:
            row = await session.get(Certificate, cid)
            mine = await session.get(Deployment, (cid, node))
    assert row is not None and mine is not None

    assert certd.daemon.node == node
    assert entry["state"] == deployed
    assert entry["next_attempt_at"] is None
    assert list(entry["nodes"]) == [node]
    assert again == 0
    assert row.deploy_state == {}
    # asked again of every host, and answered here already
    assert row.deploy_next_attempt_at is not None
    assert mine.requested_at == row.deploy_next_attempt_at
    assert runs.read_text() == "x"  # this host was not deployed again


def test_the_spec_digest_is_keyed_so_its_secrets_cannot_be_guessed_from_it() -> None:
    stored = {"targets": [{"directory": "/srv/tls", "pkcs12_passphrase": "hunter2"}]}
    plain = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()

    digest = spec_digest(stored, b"k" * 32)

    assert digest == spec_digest(dict(stored), b"k" * 32)
    assert digest not in (plain, spec_digest(stored, b"x" * 32))
    assert digest != spec_digest({"targets": []}, b"k" * 32)
