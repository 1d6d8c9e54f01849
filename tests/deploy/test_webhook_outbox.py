"""Webhook deliveries kept in the store: made once, retried, and never lost.

Every test posts to a real HTTP endpoint on 127.0.0.1 from a real daemon over
a real SQLite store, and reads the ``webhook_delivery`` table with sqlite3.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from certd.client import Client
from certd.config import Config
from certd.deploy.events import event_entry, hook_digest, hook_label
from certd.service import Daemon
from certd.store.crypto import hook_key
from certd.store.masterkey import KeySource, read_key_file, unlock_store
from certd.store.models import utcnow
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.renewal.factory import make_chain, wait_until

# The daemon's limit of posts under way to one hook.
PER_HOOK = 4


@dataclass
class Post:
    body: dict[str, Any]
    headers: dict[str, str]
    # The event's delivery row as the store held it when the post came in.
    row: tuple[Any, ...] | None


@dataclass
class Receiver:
    """A webhook endpoint: records each post and answers as told."""

    port: int
    posts: list[Post] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    # When given, each post waits for it before it is answered.
    hold: asyncio.Event | None = None
    store: Path | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        row = None
        if self.store is not None:
            found = _rows(self.store, body["id"])
            row = found[0][2:] if found else None
        self.posts.append(Post(body, dict(request.headers), row))
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """Make receivers: listening at once, or (``listening=False``) later."""
    made: list[Receiver] = []

    async def make(*, listening: bool = True) -> Receiver:
        receiver = Receiver(_free_port())
        made.append(receiver)
        if listening:
            await receiver.start()
        return receiver

    yield make
    for receiver in made:
        if receiver.hold is not None:
            receiver.hold.set()
        await receiver.stop()


def _store(config: Config) -> Path:
    return config.store.state_dir / "certd.db"


def _rows(store: Path, event_id: int | None = None) -> list[tuple[Any, ...]]:
    """Delivery rows: (event_id, hook, attempts, last_error)."""
    sql = "SELECT event_id, hook, attempts, last_error FROM webhook_delivery"
    params: tuple[Any, ...] = ()
    if event_id is not None:
        sql, params = sql + " WHERE event_id = ?", (event_id,)
    with contextlib.closing(sqlite3.connect(store)) as conn:
        return conn.execute(sql + " ORDER BY id", params).fetchall()


def _hook_key(config: Config) -> bytes:
    """The key the daemon names hooks under, from the master key it made."""
    master = config.store.state_dir / "master.key"
    return hook_key(read_key_file(KeySource(master, "state")))


def _digest(config: Config, url: str) -> str:
    return hook_digest(url, _hook_key(config))


def _plain(url: str) -> str:
    """How a release before keyed digests named a hook."""
    return hashlib.sha256(url.encode()).hexdigest()


def _config(state: Path, *hooks: dict[str, Any]) -> Config:
    return make_config(state, events={"webhooks": list(hooks)})


def _hook(url: str, **settings: Any) -> dict[str, Any]:
    return {"url": url, "retry_base": 0.05, "timeout": 5, **settings}


def _count(certd: RunningDaemon, result: str) -> float:
    value = certd.daemon.metrics.registry.get_sample_value(
        "certd_webhook_deliveries_total", {"result": result}
    )
    return value or 0.0


def _events(
    logs: list[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_an_event_is_posted_once_with_its_json(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    config = _config(
        tmp_path / "state", _hook(receiver.url, kinds=["certificate.expiring"])
    )

    async with running_daemon(config) as certd:
        events = certd.daemon.events
        ignored = await events.publish("certificate.renewed", "renewed web")
        # A kind the hook does not want gets no delivery at all.
        assert _rows(_store(config), ignored["id"]) == []
        entry = await events.publish(
            "certificate.expiring",
            "web expires soon",
            subject="web",
            data={"seconds_left": 3600},
        )
        await wait_until(lambda: receiver.posts and not _rows(_store(config)))
        delivered, failed = _count(certd, "delivered"), _count(certd, "failed")

    assert [post.body for post in receiver.posts] == [entry]
    assert entry["kind"] == "certificate.expiring"
    assert entry["data"] == {"seconds_left": 3600}
    assert receiver.posts[0].headers["Content-Type"] == "application/json"
    assert (delivered, failed) == (1, 0)


async def test_a_failing_hook_is_retried_and_each_attempt_recorded(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    receiver.statuses = [503, 503]
    config = _config(tmp_path / "state", _hook(receiver.url, retries=3))
    receiver.store = _store(config)

    with capture_logs() as logs:
        async with running_daemon(config) as certd:
            entry = await certd.daemon.events.publish(
                "certificate.renewal_failed", "renewing web failed", subject="web"
            )
            await wait_until(lambda: len(receiver.posts) == 3)
            await wait_until(lambda: not _rows(_store(config)))
            delivered, failed = _count(certd, "delivered"), _count(certd, "failed")

    assert [post.body for post in receiver.posts] == [entry] * 3
    # The row as each attempt found it: the failures before it recorded.
    assert [post.row for post in receiver.posts] == [
        (0, None),
        (1, "HTTP 503"),
        (2, "HTTP 503"),
    ]
    assert [e["attempt"] for e in _events(logs, "webhook_delivery_failed")] == [1, 2]
    assert [e["attempt"] for e in _events(logs, "webhook_delivered")] == [3]
    assert _events(logs, "webhook_given_up") == []
    assert (delivered, failed) == (1, 0)


async def test_a_refusal_is_given_up_at_once(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    receiver.statuses = [400]
    config = _config(tmp_path / "state", _hook(receiver.url, retries=5))

    with capture_logs() as logs:
        async with running_daemon(config) as certd:
            events = certd.daemon.events
            refused = await events.publish("certificate.expired", "web expired")
            await wait_until(lambda: receiver.posts and not _rows(_store(config)))
            # Posted after the refusal was recorded: had the refused event
            # been kept for a retry, it would come first.
            marker = await events.publish("certificate.renewed", "renewed web")
            await wait_until(lambda: len(receiver.posts) == 2)
            await wait_until(lambda: not _rows(_store(config)))
            failed = _count(certd, "failed")

    assert [post.body for post in receiver.posts] == [refused, marker]
    given_up = _events(logs, "webhook_given_up")
    assert [(e["event_id"], e["attempts"], e["error"]) for e in given_up] == [
        (refused["id"], 1, "HTTP 400")
    ]
    assert failed == 1


async def test_a_retryable_failure_is_given_up_after_the_retries(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    receiver.statuses = [503] * 10
    config = _config(tmp_path / "state", _hook(receiver.url, retries=2))

    async with running_daemon(config) as certd:
        await certd.daemon.events.publish("certificate.expired", "web expired")
        await wait_until(lambda: len(receiver.posts) == 3)
        await wait_until(lambda: not _rows(_store(config)))
        failed = _count(certd, "failed")

    assert len(receiver.posts) == 3
    assert failed == 1


async def test_a_pending_delivery_is_made_after_a_restart(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    config = _config(tmp_path / "state", _hook(receiver.url, retries=20))

    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish(
            "certificate.renewal_failed", "renewing web failed", subject="web"
        )
        await wait_until(lambda: _rows(_store(config))[0][2] >= 1)
    [(event_id, hook, attempts, error)] = _rows(_store(config))
    assert (event_id, hook) == (entry["id"], _digest(config, receiver.url))
    # Keyed: a guess of the URL cannot be checked against the store.
    assert hook != _plain(receiver.url)
    assert attempts >= 1 and "connect" in error.lower()

    receiver.hold = asyncio.Event()
    await receiver.start()
    async with running_daemon(config):
        await wait_until(lambda: receiver.posts)
        # The next start names the hook the same, or it would drop the row.
        restarted = _rows(_store(config))
        receiver.hold.set()
        await wait_until(lambda: not _rows(_store(config)))

    assert [row[1] for row in restarted] == [hook]
    assert [post.body for post in receiver.posts] == [entry]


async def test_an_event_committed_but_never_posted_is_posted_at_the_next_start(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    config = _config(tmp_path / "state", _hook(receiver.url))
    # The process commits an event in some change and dies before delivering
    # it: nothing but the store knows of it.
    daemon = Daemon(config)
    await daemon.db.migrate()
    try:
        await unlock_store(daemon.db, config.store.state_dir)
        async with daemon.db.session() as session:
            row = daemon.events.stage(
                session, "certificate.renewal_failed", "renewing web failed"
            )
            await session.flush()
            entry = event_entry(row)
    finally:
        await daemon.db.close()
    assert _rows(_store(config)) == [
        (entry["id"], _digest(config, receiver.url), 0, None)
    ]
    assert receiver.posts == []

    async with running_daemon(config):
        await wait_until(lambda: receiver.posts and not _rows(_store(config)))

    assert [post.body for post in receiver.posts] == [entry]


async def test_a_delivery_named_by_an_earlier_release_is_made_after_the_upgrade(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    removed = f"http://127.0.0.1:9/hooks/{secrets.token_hex(8)}"
    config = _config(tmp_path / "state", _hook(receiver.url, retries=20))
    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish("certificate.expired", "web")
        await wait_until(lambda: _rows(_store(config))[0][2] >= 1)
    # The rows as a release before keyed digests left them: one of the hook
    # still configured, and one of a hook since removed from the config.
    with contextlib.closing(sqlite3.connect(_store(config))) as conn, conn:
        conn.execute("UPDATE webhook_delivery SET hook = ?", (_plain(receiver.url),))
        conn.execute(
            "INSERT INTO webhook_delivery "
            "(event_id, hook, attempts, next_attempt_at, created_at) "
            "SELECT event_id, ?, 0, next_attempt_at, created_at FROM webhook_delivery",
            (_plain(removed),),
        )

    receiver.hold = asyncio.Event()
    await receiver.start()
    with capture_logs() as logs:
        async with running_daemon(config):
            await wait_until(lambda: receiver.posts)
            while_posting = _rows(_store(config))
            receiver.hold.set()
            await wait_until(lambda: not _rows(_store(config)))

    assert [post.body for post in receiver.posts] == [entry]
    # Renamed to the keyed digest; the removed hook's row was dropped as any
    # row of a hook no longer configured is.
    assert [row[:2] for row in while_posting] == [
        (entry["id"], _digest(config, receiver.url))
    ]
    assert [e["count"] for e in _events(logs, "webhook_deliveries_rekeyed")] == [1]
    dropped = _events(logs, "webhook_delivery_dropped")
    assert [(e["hook"], e["event_id"]) for e in dropped] == [
        (f"#{_plain(removed)[:8]}", entry["id"])
    ]


async def test_a_master_key_rotation_keeps_pending_deliveries(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    token = secrets.token_hex(16)
    hook = _hook(f"{receiver.url}?token={token}", retries=20)
    removed = _hook(f"http://127.0.0.1:9/hooks/{secrets.token_hex(8)}", retries=20)
    config = _config(tmp_path / "state", hook, removed)
    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish("certificate.expired", "web")
        await wait_until(
            lambda: [r[2] >= 1 for r in _rows(_store(config))] == [True, True]
        )
    old_key = _hook_key(config)
    assert {r[1] for r in _rows(_store(config))} == {
        hook_digest(hook["url"], old_key),
        hook_digest(removed["url"], old_key),
    }
    # The rotation reads a config without the second hook: its row is left
    # under the old key, and the next start drops it.
    config_path = _toml_config(tmp_path / "certd.toml", config, hook)

    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "certd", "--config", str(config_path)),
        "rotate-master-key",
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    rotated = stderr.decode()

    assert process.returncode == 0, rotated
    new_key = _hook_key(config)
    assert new_key != old_key
    assert sorted(r[1] for r in _rows(_store(config))) == sorted(
        [hook_digest(hook["url"], new_key), hook_digest(removed["url"], old_key)]
    )
    assert "1 pending webhook delivery(ies) renamed" in rotated
    assert "webhook_deliveries_not_rekeyed" in rotated
    assert token not in rotated

    await receiver.start()
    after = _config(tmp_path / "state", hook)
    with capture_logs() as logs:
        async with running_daemon(after):
            await wait_until(lambda: receiver.posts and not _rows(_store(config)))

    assert [post.body for post in receiver.posts] == [entry]
    assert [e["hook"] for e in _events(logs, "webhook_delivered")] == [
        hook_label(hook["url"], new_key)
    ]
    assert [e["hook"] for e in _events(logs, "webhook_delivery_dropped")] == [
        f"#{hook_digest(removed['url'], old_key)[:8]}"
    ]


def _toml_config(path: Path, config: Config, *hooks: dict[str, Any]) -> Path:
    """Just enough TOML for ``certd serve``: the tables tests set, and the hooks."""
    lines: list[str] = []
    for section in ("server", "store", "log", "renewal"):
        lines.append(f"[{section}]")
        values = getattr(config, section).model_dump(mode="json", exclude_none=True)
        for key, value in values.items():
            if key == "socket_mode":
                value = format(value, "o")
            lines.append(f"{key} = {json.dumps(value)}")
    for hook in hooks:
        lines.append("[[events.webhooks]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in hook.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _serving(config: Config, process: asyncio.subprocess.Process) -> None:
    async def ready() -> bool:
        assert process.returncode is None, "certd serve exited"
        assert config.server.unix_socket is not None
        connector = aiohttp.UnixConnector(path=str(config.server.unix_socket))
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.get("http://certd/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(ready, timeout=30)


async def test_a_delivery_left_by_a_killed_daemon_is_made_at_the_next_start(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    # The first failure puts the next attempt a second away: the kill comes
    # between attempts, not while a post holds the row (whose claim would
    # delay the next start's attempt by the hook's timeout and more).
    hook = _hook(receiver.url, retries=20, timeout=0.5, retry_base=1.0)
    config = _config(tmp_path / "state", hook)
    config_path = _toml_config(tmp_path / "certd.toml", config, hook)
    chain = make_chain(["web.example.test"])

    with (tmp_path / "certd.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "certd", "serve", "--config", str(config_path)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        await _serving(config, process)
        assert config.server.unix_socket is not None
        async with Client(socket=config.server.unix_socket) as client:
            stored = await call_job(
                client,
                "certificate.create",
                {
                    "name": "web",
                    "create_type": "CERTIFICATE_CREATE_IMPORTED",
                    "certificate": chain.fullchain_pem,
                    "privatekey": chain.key_pem,
                },
            )
        await wait_until(lambda: _rows(_store(config))[0][2] == 1)
    finally:
        process.kill()
        await process.wait()
    [(event_id, hook, attempts, _)] = _rows(_store(config))
    assert (hook, attempts) == (_digest(config, receiver.url), 1)

    await receiver.start()
    async with running_daemon(config):
        await wait_until(lambda: receiver.posts and not _rows(_store(config)))

    [post] = receiver.posts
    assert post.body["id"] == event_id
    assert post.body["kind"] == "certificate.issued"
    assert post.body["certificate_id"] == stored["id"]
    assert post.body["subject"] == "web"


async def test_a_delivery_to_a_hook_no_longer_configured_is_dropped(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    state = tmp_path / "state"
    config = _config(state, _hook(receiver.url, retries=20))
    async with running_daemon(config) as certd:
        entry = await certd.daemon.events.publish("certificate.expired", "web")
        await wait_until(lambda: _rows(_store(config))[0][2] >= 1)

    await receiver.start()
    with capture_logs() as logs:
        async with running_daemon(_config(state)):
            await wait_until(lambda: not _rows(_store(config)))

    dropped = _events(logs, "webhook_delivery_dropped")
    # The URL is no longer known, so the line names the hook by its digest.
    digest = _digest(config, receiver.url)[:8]
    assert [(e["hook"], e["event_id"]) for e in dropped] == [
        (f"#{digest}", entry["id"])
    ]
    assert hook_label(receiver.url, _hook_key(config)).endswith(f" #{digest}")
    assert receiver.posts == []


async def test_headers_are_sent_but_never_stored(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers()
    receiver.statuses = [503]
    token = f"Bearer {secrets.token_hex(16)}"
    config = _config(
        tmp_path / "state",
        _hook(receiver.url, headers={"Authorization": token}, retry_base=0.5),
    )

    def stored_bytes() -> bytes:
        return b"".join(
            path.read_bytes() for path in config.store.state_dir.glob("certd.db*")
        )

    async with running_daemon(config) as certd:
        await certd.daemon.events.publish("certificate.expired", "web expired")
        # A failed attempt is recorded and the row waits for its retry.
        await wait_until(lambda: [r[2] for r in _rows(_store(config))] == [1])
        pending = stored_bytes()
        await wait_until(lambda: len(receiver.posts) == 2)
        await wait_until(lambda: not _rows(_store(config)))

    assert [post.headers["Authorization"] for post in receiver.posts] == [token] * 2
    assert _digest(config, receiver.url).encode() in pending
    assert receiver.url.encode() not in pending
    assert token.encode() not in pending
    assert token.split()[1].encode() not in stored_bytes()


async def test_a_slow_hook_holds_up_only_its_own_deliveries(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    slow, fast = await receivers(), await receivers()
    slow.hold = asyncio.Event()
    config = _config(
        tmp_path / "state", _hook(slow.url, timeout=30), _hook(fast.url, timeout=30)
    )
    count = PER_HOOK + 2

    async with running_daemon(config) as certd:
        entries = [
            await certd.daemon.events.publish("certificate.expiring", f"cert {n}")
            for n in range(count)
        ]
        await wait_until(lambda: len(fast.posts) == count)
        await wait_until(
            lambda: (
                [r[1] for r in _rows(_store(config))]
                == [_digest(config, slow.url)] * count
            )
        )
        await wait_until(lambda: len(slow.posts) == PER_HOOK)
        # The fast hook has had every event while the slow one answered none,
        # and the slow one has no more posts under way than its limit.
        assert len(slow.posts) == PER_HOOK

        slow.hold.set()
        await wait_until(lambda: len(slow.posts) == count)
        await wait_until(lambda: not _rows(_store(config)))

    ids = sorted(entry["id"] for entry in entries)
    assert sorted(post.body["id"] for post in fast.posts) == ids
    assert sorted(post.body["id"] for post in slow.posts) == ids


async def test_pruned_events_take_their_deliveries_with_them(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(listening=False)
    config = _config(tmp_path / "state", _hook(receiver.url, retries=20))

    async with running_daemon(config) as certd:
        events = certd.daemon.events
        await events.publish("certificate.expired", "web expired")
        await wait_until(lambda: _rows(_store(config)))
        pruned = await events.prune(utcnow() + timedelta(days=2), retention_days=1)
        left = _rows(_store(config))

    assert pruned == 1
    assert left == []
    with contextlib.closing(sqlite3.connect(_store(config))) as conn:
        assert conn.execute("SELECT count(*) FROM event").fetchone() == (0,)


def test_a_hook_label_shows_its_origin_and_digest_only() -> None:
    token = secrets.token_hex(16)
    key = hook_key(secrets.token_bytes(32))
    urls = [
        f"https://hooks.example.test/services/{token}",
        f"https://hooks.example.test/notify?token={token}",
        f"https://certd:{token}@hooks.example.test:8443/basic",
        f"https://hooks.example.test:99999/{token}",
        f"https://[::1/{token}",
    ]

    labels = [hook_label(url, key) for url in urls]

    digests = [hook_digest(url, key)[:8] for url in urls]
    assert labels == [
        f"https://hooks.example.test/… #{digests[0]}",
        f"https://hooks.example.test/… #{digests[1]}",
        f"https://hooks.example.test:8443/… #{digests[2]}",
        # No host or port that does not parse is shown, in case it holds more.
        f"https://… #{digests[3]}",
        f"https://… #{digests[4]}",
    ]
    # Two hooks on one host are told apart, and one hook always looks the same.
    assert labels[0] != labels[1]
    assert hook_label(urls[0], key) == labels[0]
    assert hook_label("http://[::1]:8080/x", key) == (
        f"http://[::1]:8080/… #{hook_digest('http://[::1]:8080/x', key)[:8]}"
    )
    # The digest is keyed: not the URL's plain hash, and another key's differs.
    other = hook_key(secrets.token_bytes(32))
    for url, digest in zip(urls, digests, strict=True):
        assert not _plain(url).startswith(digest)
        assert hook_digest(url, key) != _plain(url)
        assert hook_digest(url, other) != hook_digest(url, key)
    assert len(hook_digest(urls[0], key)) == 64


@dataclass
class SecretHooks:
    """An endpoint for hooks whose token is in the path, query or password."""

    port: int
    # (path and query, Authorization header) of each post.
    posts: list[tuple[str, str | None]] = field(default_factory=list)
    failing: bool = True

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts.append((request.path_qs, request.headers.get("Authorization")))
        if request.path.startswith("/loop/"):
            # Back to itself: not followed, and not retried.
            raise web.HTTPTemporaryRedirect(request.path_qs)
        return web.Response(status=503 if self.failing else 200)

    def paths(self) -> set[str]:
        return {path for path, _ in self.posts}


def _stored_bytes(config: Config) -> bytes:
    return b"".join(
        path.read_bytes() for path in sorted(config.store.state_dir.glob("certd.db*"))
    )


async def _import(config: Config, name: str) -> None:
    assert config.server.unix_socket is not None
    chain = make_chain([f"{name}.example.test"])
    async with Client(socket=config.server.unix_socket) as client:
        await call_job(
            client,
            "certificate.create",
            {
                "name": name,
                "create_type": "CERTIFICATE_CREATE_IMPORTED",
                "certificate": chain.fullchain_pem,
                "privatekey": chain.key_pem,
            },
        )


def _log_entries(log_path: Path, name: str) -> list[dict[str, Any]]:
    entries = []
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                entries.append(entry)
    return entries


async def test_no_hook_secret_reaches_a_log_line_or_the_store(
    tmp_path: Path,
) -> None:
    tokens = {
        name: secrets.token_hex(16)
        for name in ("path", "query", "password", "loop", "port", "down")
    }
    endpoint = SecretHooks(_free_port())
    app = web.Application()
    app.router.add_post("/{tail:.*}", endpoint.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", endpoint.port).start()
    base = f"127.0.0.1:{endpoint.port}"
    urls = {
        "path": f"http://{base}/hooks/{tokens['path']}",
        "query": f"http://{base}/notify?token={tokens['query']}",
        "password": f"http://certd:{tokens['password']}@{base}/basic",
        "loop": f"http://{base}/loop/{tokens['loop']}",
        "port": f"http://127.0.0.1:99999/hooks/{tokens['port']}",
        # Nothing listens there: its delivery stays pending.
        "down": f"http://127.0.0.1:{_free_port()}/hooks/{tokens['down']}",
    }
    hooks = {
        name: _hook(url, retries=0 if name == "loop" else 20, retry_base=0.2)
        for name, url in urls.items()
    }
    config = _config(tmp_path / "state", *hooks.values())
    # Known once the daemon has made its master key.
    digests: dict[str, str] = {}
    labels: dict[str, str] = {}
    config_path = _toml_config(tmp_path / "certd.toml", config, *hooks.values())
    log_path = tmp_path / "certd.log"

    def pending() -> dict[str, tuple[int, str | None]]:
        by_digest = {digest: name for name, digest in digests.items()}
        return {by_digest[r[1]]: (r[2], r[3]) for r in _rows(_store(config))}

    with log_path.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "certd", "serve", "--config", str(config_path)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        await _serving(config, process)
        digests.update((n, _digest(config, url)) for n, url in urls.items())
        key = _hook_key(config)
        labels.update((n, hook_label(url, key)) for n, url in urls.items())
        await _import(config, "web")
        # Every reachable hook has failed once and waits for its retry; the
        # looping and the invalid one were given up.
        await wait_until(
            lambda: (
                set(pending()) == {"path", "query", "password", "down"}
                and all(attempts >= 1 for attempts, _ in pending().values())
            )
        )
        while_pending = _stored_bytes(config)
        errors = {name: error for name, (_, error) in pending().items()}
        assert config.server.unix_socket is not None
        async with Client(socket=config.server.unix_socket) as client:
            kinds = await client.call("event.kind_choices")

        endpoint.failing = False
        await wait_until(lambda: set(pending()) == {"down"})
        # The pending hook is removed from the config; the next event's
        # dispatch drops its row.
        _toml_config(config_path, config, *(h for n, h in hooks.items() if n != "down"))
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: _log_entries(log_path, "config_reloaded"))
        await _import(config, "mail")
        await wait_until(lambda: not pending())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 20)
        if process.returncode is None:
            process.kill()
            await process.wait()
        await runner.cleanup()

    output_bytes = log_path.read_bytes()
    stored = _stored_bytes(config)
    for name, token in tokens.items():
        assert token.encode() not in output_bytes, name
        assert token.encode() not in while_pending, name
        assert token.encode() not in stored, name
    # Nor anything a guess of a URL could be checked against offline.
    for name, url in urls.items():
        assert _plain(url)[:8].encode() not in output_bytes, name
        assert _plain(url).encode() not in while_pending + stored, name
    assert {digests[n].encode() in while_pending for n in errors} == {True}
    assert errors["path"] == errors["query"] == errors["password"] == "HTTP 503"
    assert errors["down"] is not None and "connect" in errors["down"].lower()

    # The hooks were posted to as configured, credentials and all.
    password = base64.b64encode(f"certd:{tokens['password']}".encode()).decode()
    assert ("/basic", f"Basic {password}") in endpoint.posts
    assert f"/hooks/{tokens['path']}" in endpoint.paths()
    assert f"/notify?token={tokens['query']}" in endpoint.paths()

    # Three hooks on one host and port, each with a label of its own.
    same_host = {labels[n] for n in ("path", "query", "password")}
    assert len(same_host) == 3
    assert {label.split(" #")[0] for label in same_host} == {f"http://{base}/…"}

    def named(event: str) -> dict[str, set[Any]]:
        found: dict[str, set[Any]] = {}
        for entry in _log_entries(log_path, event):
            found.setdefault(entry["hook"], set()).add(entry.get("error"))
        return found

    assert set(named("webhook_delivered")) == same_host
    assert named("webhook_given_up") == {
        labels["loop"]: {
            f"HTTP 307: the hook redirects to http://{base}; configure the URL "
            "it redirects to"
        },
        labels["port"]: {"the URL is not valid"},
    }
    assert labels["down"] in named("webhook_delivery_failed")
    assert named("webhook_delivery_dropped") == {f"#{digests['down'][:8]}": {None}}
    assert kinds["certificate.renewal_blocked"] == "warning"
    assert list(kinds).index("certificate.renewal_blocked") == (
        list(kinds).index("certificate.renewal_failing") + 1
    )


async def test_a_redirect_is_not_followed_and_is_given_up(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    # A 302 would turn the post into a GET without the event (and a redirect
    # to another origin would hand it the hook's headers).
    target = await receivers()
    seen: list[tuple[str, str, bytes]] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read()))
        raise web.HTTPFound(f"{target.url}?moved=1")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook = _hook(
        f"http://127.0.0.1:{port}/old", retries=5, headers={"X-Api-Key": "k-secret"}
    )
    config = _config(tmp_path / "state", hook)
    try:
        with capture_logs() as logs:
            async with running_daemon(config) as certd:
                entry = await certd.daemon.events.publish("certificate.expired", "x")
                await wait_until(lambda: seen and not _rows(_store(config)))
    finally:
        await runner.cleanup()

    assert [(method, path) for method, path, _ in seen] == [("POST", "/old")]
    assert json.loads(seen[0][2]) == entry
    assert target.posts == []
    given_up = _events(logs, "webhook_given_up")
    assert [(e["attempts"], e["error"]) for e in given_up] == [
        (
            1,
            f"HTTP 302: the hook redirects to http://127.0.0.1:{target.port}; "
            "configure the URL it redirects to",
        )
    ]


async def test_retry_after_is_honoured_and_the_user_agent_names_certd(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    busy: list[float] = []

    async def rate_limited(request: web.Request) -> web.Response:
        busy.append(asyncio.get_running_loop().time())
        if len(busy) == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", rate_limited)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver = await receivers()
    config = _config(
        tmp_path / "state",
        _hook(f"http://127.0.0.1:{port}/hook", retries=3),
        _hook(receiver.url),
    )
    try:
        async with running_daemon(config) as certd:
            await certd.daemon.events.publish("certificate.expired", "x")
            await wait_until(lambda: len(busy) == 1 and receiver.posts)
            [(attempts, error)] = [
                (row[2], row[3])
                for row in _rows(_store(config))
                if row[1] == _digest(config, f"http://127.0.0.1:{port}/hook")
            ]
            await wait_until(lambda: len(busy) == 2, timeout=10)
    finally:
        await runner.cleanup()

    assert (attempts, error) == (1, "HTTP 429")
    # retry_base alone would have retried after 0.05 s.
    assert busy[1] - busy[0] >= 1.9
    assert receiver.posts[0].headers["User-Agent"].startswith("certd/")


def test_delivery_ids_are_never_reused(tmp_path: Path) -> None:
    # A post that ends late deletes its row by id: a newer row must not have it.
    from sqlalchemy import create_engine

    from certd.store.models import Base

    engine = create_engine(f"sqlite:///{tmp_path / 'ids.db'}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO event (id, kind, severity, message, data, created_at) "
            "VALUES (1, 'certificate.expired', 'error', 'x', '{}', '2026-01-01')"
        )
        insert = (
            "INSERT INTO webhook_delivery "
            "(event_id, hook, attempts, next_attempt_at, created_at) "
            "VALUES (1, 'h', 0, '2026-01-01', '2026-01-01')"
        )
        first = conn.exec_driver_sql(insert).lastrowid
        conn.exec_driver_sql("DELETE FROM webhook_delivery")
        second = conn.exec_driver_sql(insert).lastrowid
    engine.dispose()
    assert second == first + 1
