"""Logging in with API keys: API_KEY_PLAIN, SCRAM-SHA-512, the unix socket, logout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from certd.api.scram import tls_server_end_point
from certd.store.models import ApiKey
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, WsClient, connect
from tests.websocket.conftest import Key, make_key, ws_url
from tests.websocket.scram_client import ScramClient
from tests.websocket.tls import https_config, insecure


async def assert_logged_out(client: WsClient) -> None:
    with pytest.raises(CallFailed) as caught:
        await client.call("certificate.query")
    assert caught.value.data is not None
    assert caught.value.data["error"] == 207


async def test_plain_login_with_either_form_of_the_key(
    certd: RunningDaemon, key: Key
) -> None:
    for secret in (key.raw, key.key):
        async with connect(ws_url(certd)) as client:
            reply = await client.login_plain("ci", secret)
            assert reply["response_type"] == "SUCCESS"
            assert reply["user_info"] == {"username": "ci", "readonly": False}
            assert await client.call("certificate.query") == []
            assert await client.call("auth.me") == {
                "username": "ci",
                "readonly": False,
                "caller": "apikey:ci",
            }


async def test_wrong_plain_credentials_are_a_result_not_an_error(
    certd: RunningDaemon, key: Key
) -> None:
    other = await make_key(certd, "other")
    await certd.daemon.api_keys.revoke("other")
    attempts = [
        ("ci", key.raw[:-1] + ("a" if key.raw[-1] != "a" else "b")),
        ("someone", key.raw),
        ("other", other.raw),
        ("ci", f"999-{key.secret}"),
        ("ci", "not a key"),
    ]
    async with connect(ws_url(certd)) as client:
        for username, secret in attempts:
            reply = await client.login_plain(username, secret)
            assert reply == {"response_type": "AUTH_ERR"}, username
            await assert_logged_out(client)


async def test_readonly_key_reads_but_may_not_change(certd: RunningDaemon) -> None:
    viewer = await make_key(certd, "viewer", readonly=True)
    async with connect(ws_url(certd)) as client:
        await client.login_plain("viewer", viewer.raw)
        assert await client.call("certificate.query") == []
        with pytest.raises(CallFailed) as caught:
            await client.call(
                "acme.dns.authenticator.create",
                {"name": "x", "attributes": {"authenticator": "rfc2136"}},
            )
    assert caught.value.code == -32001
    assert caught.value.data is not None
    assert caught.value.data["error"] == 13
    assert caught.value.data["errname"] == "EACCES"
    assert "read-only" in caught.value.data["reason"]


async def test_scram_login_proves_both_sides(certd: RunningDaemon, key: Key) -> None:
    scram = ScramClient("ci", key.id, key.secret)
    async with connect(ws_url(certd)) as client:
        first, final = await client.login_scram(scram)
        assert first["rfc_str"].split(",")[2] == "i=50000"
        assert final is not None
        assert final["response_type"] == "SCRAM_RESPONSE"
        assert final["scram_type"] == "SERVER_FINAL_RESPONSE"
        assert scram.check(final["rfc_str"])
        assert (await client.call("auth.me"))["caller"] == "apikey:ci"
    stored = {k["name"]: k for k in await certd.daemon.api_keys.list()}
    assert stored["ci"]["last_used_at"] is not None


@pytest.mark.parametrize(
    ("name", "key_id", "secret", "refused_at"),
    [
        ("ci", None, "wrong-secret", "final"),
        # Unknown keys are refused only at the end, as wrong secrets are.
        ("ci", 999, None, "final"),
        ("someone", None, None, "final"),
        # A username that names no key at all is refused at once.
        ("ci", -1, None, "first"),
    ],
)
async def test_scram_refusals(
    certd: RunningDaemon,
    key: Key,
    name: str,
    key_id: int | None,
    secret: str | None,
    refused_at: str,
) -> None:
    scram = ScramClient(name, key_id or key.id, secret or key.secret)
    async with connect(ws_url(certd)) as client:
        first, final = await client.login_scram(scram)
        if refused_at == "first":
            assert first == {"response_type": "AUTH_ERR"}
            assert final is None
        else:
            assert first["response_type"] == "SCRAM_RESPONSE"
            assert final == {"response_type": "AUTH_ERR"}
        await assert_logged_out(client)


def _salt_and_iterations(server_first: str) -> tuple[str, str]:
    attributes = dict(part.split("=", 1) for part in server_first.split(","))
    return attributes["s"], attributes["i"]


async def test_scram_first_answer_does_not_tell_whether_a_key_exists(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "state",
        server={"auth_failure_burst": 2, "auth_failure_refill_seconds": 3600},
    )
    async with running_daemon(config) as running:
        key = await make_key(running, "ci")
        async with connect(ws_url(running)) as client:
            answers = []
            for name, key_id in [("ci", key.id), ("ghost", 99), ("ghost", 99)]:
                first = await client.call(
                    "auth.login_ex",
                    {
                        "mechanism": "SCRAM",
                        "scram_type": "CLIENT_FIRST_MESSAGE",
                        "rfc_str": ScramClient(name, key_id, key.secret).first(),
                    },
                )
                assert first["response_type"] == "SCRAM_RESPONSE"
                assert first["scram_type"] == "SERVER_FIRST_RESPONSE"
                answers.append(_salt_and_iterations(first["rfc_str"]))
            real, ghost, ghost_again = answers
            # The same unknown name gets the same salt, as a real key does.
            assert ghost == ghost_again
            assert ghost[1] == real[1]
            assert len(ghost[0]) == len(real[0])

            # First messages cost nothing; each refused final takes a token
            # from the bucket of the key id the username names.
            for _ in range(2):
                _, final = await client.login_scram(ScramClient("ghost", 99, "x"))
                assert final == {"response_type": "AUTH_ERR"}
            with pytest.raises(CallFailed) as caught:
                await client.login_scram(ScramClient("ghost", 99, "x"))
            assert caught.value.data is not None
            assert caught.value.data["errname"] == "EAGAIN"
            scram = ScramClient("ci", key.id, key.secret)
            _, final = await client.login_scram(scram)
            assert final is not None and scram.check(final["rfc_str"])


async def test_scram_final_without_first_and_binding_without_tls(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        reply = await client.call(
            "auth.login_ex",
            {
                "mechanism": "SCRAM",
                "scram_type": "CLIENT_FINAL_MESSAGE",
                "rfc_str": "c=biws,r=" + "A" * 88 + ",p=" + "A" * 88,
            },
        )
        assert reply == {"response_type": "AUTH_ERR"}
        bound = ScramClient("ci", key.id, key.secret, channel_binding=b"\x01" * 32)
        first, _ = await client.login_scram(bound)
        assert first == {"response_type": "AUTH_ERR"}
        await assert_logged_out(client)


async def test_login_ex_checks_its_parameters(certd: RunningDaemon) -> None:
    async with connect(ws_url(certd)) as client:
        with pytest.raises(CallFailed) as caught:
            await client.call(
                "auth.login_ex",
                {"mechanism": "PASSWORD_PLAIN", "username": "u", "password": "p"},
            )
    assert caught.value.code == -32602
    assert caught.value.data is not None
    [(field, message, errno)] = caught.value.data["extra"]
    assert field == "data"
    assert "API_KEY_PLAIN" in message and "SCRAM" in message
    assert errno == 22


async def test_keys_made_before_scram_get_a_verifier_on_first_use(
    certd: RunningDaemon, key: Key
) -> None:
    async with certd.daemon.db.session() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(
                scram_salt=None,
                scram_iterations=None,
                scram_stored_key=None,
                scram_server_key=None,
            )
        )
    async with connect(ws_url(certd)) as client:
        _, final = await client.login_scram(ScramClient("ci", key.id, key.secret))
        assert final == {"response_type": "AUTH_ERR"}
        assert (await client.login_plain("ci", key.raw))["response_type"] == "SUCCESS"
    async with connect(ws_url(certd)) as client:
        scram = ScramClient("ci", key.id, key.secret)
        _, final = await client.login_scram(scram)
        assert final is not None and scram.check(final["rfc_str"])


async def test_unix_socket_peer_is_logged_in_from_the_start(
    certd: RunningDaemon,
) -> None:
    assert certd.config.server.unix_socket is not None
    async with connect(unix=certd.config.server.unix_socket) as client:
        assert await client.call("certificate.query") == []
        me = await client.call("auth.me")
        assert me["caller"].startswith("unix:uid=")


async def test_logout_ends_the_login_and_its_subscriptions(
    certd: RunningDaemon, key: Key
) -> None:
    async with connect(ws_url(certd)) as client:
        await client.login_plain("ci", key.raw)
        await client.call("core.subscribe", "core.get_jobs")
        assert await client.call("auth.logout") is True
        event = await client.next_event()
        assert event["method"] == "notify_unsubscribed"
        assert event["params"]["collection"] == "core.get_jobs"
        assert event["params"]["error"]["error"] == 207
        await assert_logged_out(client)


async def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", server={"auth_failure_burst": 2})
    async with running_daemon(config) as running:
        key = await make_key(running, "ci")
        async with connect(ws_url(running)) as client:
            for _ in range(2):
                reply = await client.login_plain("ci", f"{key.id}-wrong")
                assert reply == {"response_type": "AUTH_ERR"}
            with pytest.raises(CallFailed) as caught:
                await client.login_plain("ci", key.raw)
        assert caught.value.code == -32001
        assert caught.value.data is not None
        assert caught.value.data["errname"] == "EAGAIN"
        assert "Too many failed authentication attempts" in caught.value.data["reason"]


@pytest.fixture
async def tls_certd(tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, bytes]]:
    """A daemon serving its API over TLS with a stored ECDSA certificate."""
    config, served = await https_config(tmp_path / "state")
    async with running_daemon(config) as running:
        yield running, served


async def test_scram_over_wss_binds_to_the_served_certificate(
    tls_certd: tuple[RunningDaemon, bytes],
) -> None:
    running, served = tls_certd
    key = await make_key(running, "ci")
    url = f"wss://127.0.0.1:{running.daemon.http_port}/api/current"
    async with connect(url, ssl_context=insecure()) as client:
        peer = client.ws.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert peer == served
        binding = tls_server_end_point(peer)
        scram = ScramClient("ci", key.id, key.secret, channel_binding=binding)
        _, final = await client.login_scram(scram)
        assert final is not None and scram.check(final["rfc_str"])
        assert await client.call("certificate.query") != []
    async with connect(url, ssl_context=insecure()) as client:
        forged = ScramClient("ci", key.id, key.secret, channel_binding=b"\x00" * 32)
        _, final = await client.login_scram(forged)
        assert final == {"response_type": "AUTH_ERR"}
        # Unbound SCRAM (--no-channel-binding) and the plain key still work.
        unbound = ScramClient("ci", key.id, key.secret)
        _, final = await client.login_scram(unbound)
        assert final is not None and unbound.check(final["rfc_str"])
    async with connect(url, ssl_context=insecure()) as client:
        assert (await client.login_plain("ci", key.raw))["response_type"] == "SUCCESS"
