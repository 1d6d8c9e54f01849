"""A daemon whose store is PostgreSQL does the API's work and keeps it across restarts.

Each test starts an in-process daemon on a new database of the session's
PostgreSQL cluster and checks what it stored with plain SQL through asyncpg.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from cryptography import x509

from certd.cli import main as certd_main
from certd.client import RpcError
from certd.config import Config
from certd.deploy.events import hook_digest
from certd.store.crypto import hook_key, key_id
from certd.store.masterkey import KeySource, read_key_file
from tests.daemon import make_config, running_daemon
from tests.pki_api.conftest import issue, make_intermediate, make_root
from tests.renewal.factory import wait_until
from tests.store.postgres import PostgresServer


@pytest.fixture
async def database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A new, empty database's name."""
    return await postgres.create_database(request.node.name)


def _config(
    state: Path,
    postgres: PostgresServer,
    database: str,
    store: dict[str, Any] | None = None,
    **sections: Any,
) -> Config:
    return make_config(
        state,
        store={"database_url": postgres.url(database), **(store or {})},
        **sections,
    )


async def _rows(
    postgres: PostgresServer, database: str, sql: str, *args: Any
) -> list[tuple[Any, ...]]:
    conn = await postgres.connect(database)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def _master_key(config: Config) -> bytes:
    return read_key_file(KeySource(config.store.state_dir / "master.key", "state"))


async def test_a_pki_is_built_queried_changed_and_found_again_after_a_restart(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    config = _config(tmp_path / "state", postgres, database)
    async with running_daemon(config) as certd, certd.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(client, root["id"])
        web1 = await issue(client, inter["id"], "web1")
        web2 = await issue(client, inter["id"], "web2", san=["two.example.com"])
        other = await issue(client, root["id"], "other")

        by_ca = await client.call(
            "certificate.query",
            [["signedby", "=", inter["id"]]],
            {"order_by": ["-name"]},
        )
        counted = await client.call("certificate.query", [], {"count": True})
        one = await client.call(
            "certificate.query", [["name", "=", "web2"]], {"get": True}
        )

        changed = await client.call("certificate.update", web1["id"], {"renew_days": 7})
        revoked = await client.call(
            "certificate.update",
            other["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        renamed = await client.call("certificate.update", web2["id"], {"name": "www"})
        assert await client.call("certificate.delete", web1["id"]) is True
        authority = await client.call("certificateauthority.get_instance", root["id"])
        with pytest.raises(RpcError):
            await client.call("certificate.get_instance", web1["id"])

        jobs = await client.call(
            "core.get_jobs", [["method", "=", "certificate.create"]]
        )
        events = await client.call("event.query", [["certificate_id", "=", web2["id"]]])
        listed = await client.call("certificate.query", [], {"select": ["id", "name"]})

    assert [c["name"] for c in by_ca] == ["web2", "web1"]
    assert counted == 3
    assert one["id"] == web2["id"]
    assert one["san"] == ["DNS:two.example.com"]
    assert changed["renew_days"] == 7
    assert (revoked["revoked"], revoked["revoked_reason"]) == (True, "keyCompromise")
    assert renamed["name"] == "www"
    assert [j["state"] for j in jobs] == ["SUCCESS"] * 3
    assert sorted(j["result"]["name"] for j in jobs) == ["other", "web1", "web2"]
    assert [(e["kind"], e["subject"]) for e in events] == [
        ("certificate.issued", "web2")
    ]
    crl = x509.load_pem_x509_crl(authority["crl"].encode())
    assert [entry.serial_number for entry in crl] == [int(other["serial"], 16)]

    # What the database holds: ids from sequences, secrets sealed.
    stored = await _rows(
        postgres,
        database,
        "SELECT id, name, renew_days, revoked, privatekey FROM certificate ORDER BY id",
    )
    assert [r[:4] for r in stored] == [
        (web2["id"], "www", None, False),
        (other["id"], "other", None, True),
    ]
    assert all(r[4].startswith("enc:v1:") for r in stored)
    assert await _rows(
        postgres, database, "SELECT serial, reason, subject FROM revocation"
    ) == [(other["serial"], "keyCompromise", "other")]

    # A new daemon on the same store and master key finds everything, and
    # the CAs' keys still sign.
    async with running_daemon(config) as certd, certd.client() as client:
        again = await client.call("certificate.query", [], {"select": ["id", "name"]})
        newer = await issue(client, inter["id"], "web3")
        jobs_after = await client.call(
            "core.get_jobs", [["id", "in", [j["id"] for j in jobs]]]
        )
        [inter_after] = await client.call(
            "certificateauthority.query", [["id", "=", inter["id"]]]
        )
    assert again == listed
    assert [(c["id"], c["name"]) for c in listed] == [
        (web2["id"], "www"),
        (other["id"], "other"),
    ]
    # A deleted id is never handed out again.
    assert newer["id"] == other["id"] + 1 > web1["id"]
    leaf = x509.load_pem_x509_certificate(newer["certificate"].encode())
    assert (
        leaf.issuer
        == x509.load_pem_x509_certificate(inter_after["certificate"].encode()).subject
    )
    assert sorted(j["state"] for j in jobs_after) == ["SUCCESS"] * 3


async def test_api_keys_are_stored_checked_and_revoked(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    config = _config(tmp_path / "state", postgres, database)
    async with running_daemon(config) as certd:
        entry, key = await certd.daemon.api_keys.create("reader", readonly=True)
        async with certd.client(key) as reader:
            assert await reader.call("core.ping") == "pong"
            with pytest.raises(RpcError):
                await reader.call(
                    "certificateauthority.create",
                    {"name": "x", "create_type": "CA_CREATE_INTERNAL"},
                )
        listed = await certd.daemon.api_keys.list()
        await certd.daemon.api_keys.revoke("reader")
        async with certd.client(key) as revoked:
            with pytest.raises(RpcError):
                await revoked.call("core.ping")
        duplicate: Exception | None = None
        try:
            await certd.daemon.api_keys.create("reader")
        except Exception as exc:
            duplicate = exc

    assert entry["readonly"] is True
    assert [k["name"] for k in listed if k["name"] == "reader"] == ["reader"]
    assert duplicate is not None and "already exists" in str(duplicate)
    rows = await _rows(
        postgres,
        database,
        "SELECT name, readonly, revoked, last_used_at IS NOT NULL,"
        " scram_stored_key IS NOT NULL FROM api_key WHERE name = 'reader'",
    )
    assert rows == [("reader", True, True, True, True)]


async def test_a_job_called_with_a_key_of_the_longest_name_is_stored(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    # PostgreSQL holds a VARCHAR to its length, where SQLite stores any text.
    name = "k" * 120
    config = _config(tmp_path / "state", postgres, database)
    async with running_daemon(config) as certd:
        _, key = await certd.daemon.api_keys.create(name)
        async with certd.client(key) as client:
            root = await make_root(client)
            leaf = await issue(client, root["id"])
    rows = await _rows(postgres, database, "SELECT caller, state, method FROM job")
    assert rows == [(f"apikey:{name}", "SUCCESS", "certificate.create")]
    assert leaf["name"] == "leaf"


async def test_a_webhook_delivery_row_is_written_with_its_event_and_deleted_once_posted(
    tmp_path: Path, postgres: PostgresServer, database: str, receiver: Receiver
) -> None:
    receiver.hold = asyncio.Event()
    config = _config(
        tmp_path / "state",
        postgres,
        database,
        events={"webhooks": [{"url": receiver.url, "retry_base": 0.05, "timeout": 5}]},
    )
    query = "SELECT event_id, hook, attempts FROM webhook_delivery ORDER BY id"
    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish(
            "certificate.expiring", "web expires soon", data={"seconds_left": 60}
        )
        # The post is held open: the row is in the store meanwhile.
        await wait_until(lambda: bool(receiver.posts))
        during = await _rows(postgres, database, query)
        receiver.hold.set()

        async def gone() -> bool:
            return await _rows(postgres, database, query) == []

        for _ in range(200):
            if await gone():
                break
            await asyncio.sleep(0.05)
        after = await _rows(postgres, database, query)
        stored_event = await _rows(
            postgres,
            database,
            "SELECT kind, message FROM event WHERE id = $1",
            entry["id"],
        )

    digest = hook_digest(receiver.url, hook_key(_master_key(config)))
    assert during == [(entry["id"], digest, 0)]
    assert receiver.posts == [entry]
    assert after == []
    assert stored_event == [("certificate.expiring", "web expires soon")]


async def test_a_delivery_left_by_a_stopped_daemon_is_posted_by_the_next(
    tmp_path: Path, postgres: PostgresServer, database: str, receiver: Receiver
) -> None:
    # The failed post is retried a second later: the first daemon stops
    # meanwhile, with no claim on the row.
    hook = {"url": receiver.url, "retry_base": 1.0, "timeout": 5}
    await receiver.stop()  # nobody listens: the first daemon cannot deliver
    config = _config(
        tmp_path / "state", postgres, database, events={"webhooks": [hook]}
    )
    query = "SELECT event_id, attempts, last_error IS NOT NULL FROM webhook_delivery"
    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish("certificate.expiring", "left over")
        # Stopped once the failed post is recorded (a stop between a claim
        # and its post would leave the claim to lapse, 15 seconds later).
        for _ in range(200):
            if await _rows(postgres, database, query) != [(entry["id"], 0, False)]:
                break
            await asyncio.sleep(0.05)
    left = await _rows(postgres, database, query)
    assert left == [(entry["id"], 1, True)]

    await receiver.start()
    async with running_daemon(config):
        await wait_until(lambda: bool(receiver.posts))
        for _ in range(200):
            if not await _rows(postgres, database, "SELECT id FROM webhook_delivery"):
                break
            await asyncio.sleep(0.05)
        after = await _rows(postgres, database, "SELECT id FROM webhook_delivery")
    assert [post["id"] for post in receiver.posts] == [entry["id"]]
    assert after == []


async def test_the_master_key_is_rotated_on_a_postgresql_store(
    tmp_path: Path, postgres: PostgresServer, database: str, receiver: Receiver
) -> None:
    await receiver.stop()  # a delivery stays pending across the rotation
    config = _config(
        tmp_path / "state",
        postgres,
        database,
        events={"webhooks": [{"url": receiver.url, "retry_base": 0.05}]},
    )
    async with running_daemon(config) as certd, certd.client() as client:
        root = await make_root(client)
        leaf = await issue(client, root["id"])
        await certd.daemon.events.publish("certificate.expiring", "pending")
    old_key = _master_key(config)
    # (write_config cannot write a list of tables: the hooks are added here.)
    config_path = tmp_path / "certd.toml"
    config_path.write_text(
        f'[store]\nstate_dir = "{config.store.state_dir}"\n'
        f'database_url = "{config.store.database_url}"\n'
        f'[[events.webhooks]]\nurl = "{receiver.url}"\n'
    )

    umask = os.umask(0o077)  # certd's main sets it for the whole process
    # It configures logging for the whole process as well: a level filter
    # left in structlog would hide debug events from later tests' captures.
    logging_config = structlog.get_config()
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        status = await asyncio.to_thread(
            certd_main, ["rotate-master-key", "--config", str(config_path)]
        )
    finally:
        os.umask(umask)
        structlog.configure(**logging_config)
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)

    new_key = _master_key(config)
    assert status == 0
    assert new_key != old_key
    sealed = await _rows(
        postgres,
        database,
        "SELECT privatekey FROM certificate UNION ALL"
        " SELECT privatekey FROM certificate_authority",
    )
    assert len(sealed) == 2
    assert {value.split(":")[2] for (value,) in sealed} == {key_id(new_key)}
    hooks = await _rows(postgres, database, "SELECT hook FROM webhook_delivery")
    # The leaf's certificate.issued and the published event, both renamed.
    assert hooks == [(hook_digest(receiver.url, hook_key(new_key)),)] * 2

    async with running_daemon(config) as certd, certd.client() as client:
        exported = await client.call("certificate.get_instance", leaf["id"])
        newer = await issue(client, root["id"], "after-rotation")
    assert exported["name"] == "leaf"
    assert newer["cert_type"] == "CERTIFICATE"


async def test_a_second_daemon_on_the_same_store_sees_the_first_ones_work(
    tmp_path: Path, postgres: PostgresServer, database: str
) -> None:
    # Daemons sharing one inventory share the master key (a configured file).
    first = _config(tmp_path / "one", postgres, database)
    async with running_daemon(first) as one, one.client() as client:
        root = await make_root(client)
        key_file = tmp_path / "master.key"
        key_file.write_bytes((first.store.state_dir / "master.key").read_bytes())
        key_file.chmod(0o600)
        second = _config(
            tmp_path / "two", postgres, database, {"master_key_file": str(key_file)}
        )
        async with running_daemon(second) as two, two.client() as other:
            made = await issue(other, root["id"], "from-two")
            seen = await client.call("certificate.query", [["name", "=", "from-two"]])
            authorities = await other.call("certificateauthority.query")
    assert [c["id"] for c in seen] == [made["id"]]
    assert [a["name"] for a in authorities] == ["root"]


# --- a webhook endpoint -------------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records each post's JSON."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    await made.start()
    yield made
    if made.hold is not None:
        made.hold.set()
    await made.stop()
