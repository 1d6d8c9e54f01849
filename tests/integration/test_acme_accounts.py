"""ACME accounts, revocation and authenticator checks through the daemon's API."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import josepy
import pytest

from certd.client import RpcError
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.integration.test_acme_issuance import issue
from tests.testbed import NamedServer, PebbleServer, start_pebble

EAB_KID = "kid-daemon"
EAB_HMAC = secrets.token_bytes(32)


@pytest.fixture(scope="module")
def eab_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    config = {
        "externalAccountBindingRequired": True,
        "externalAccountMACKeys": {EAB_KID: josepy.b64encode(EAB_HMAC).decode()},
    }
    with start_pebble(
        tmp_path_factory.mktemp("eab"), named.port, config=config
    ) as server:
        yield server


@pytest.fixture
async def certd_two_cas(
    tmp_path: Path, named: NamedServer, pebble: PebbleServer, eab_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    bundle = tmp_path / "cas.pem"
    bundle.write_text(
        pebble.tls_ca_path.read_text() + eab_pebble.tls_ca_path.read_text()
    )
    config = make_config(
        tmp_path / "state", named=named, pebble=pebble, acme={"ca_bundle": str(bundle)}
    )
    async with running_daemon(config) as daemon:
        yield daemon


async def test_account_lifecycle(
    certd: RunningDaemon, pebble: PebbleServer, rfc2136_attributes: dict[str, Any]
) -> None:
    async with certd.client() as client:
        with pytest.raises(RpcError) as caught:
            await client.call(
                "acme.registration.create",
                {"acme_directory_uri": pebble.directory_url, "tos": False},
            )
        assert caught.value.data["errors"][0]["field"] == "data.tos"
        account = await call_job(
            client,
            "acme.registration.create",
            {
                "acme_directory_uri": pebble.directory_url,
                "tos": True,
                "contact_email": "admin@example.test",
            },
        )
        assert account["status"] == "valid"
        assert account["account_url"].startswith("https://127.0.0.1:")
        assert account["contact_email"] == "admin@example.test"
        assert "key_pem" not in account
        with pytest.raises(RpcError) as caught:
            await client.call(
                "acme.registration.create",
                {"acme_directory_uri": pebble.directory_url, "tos": True},
            )
        assert "already exists" in caught.value.message

        updated = await call_job(
            client,
            "acme.registration.update",
            account["id"],
            {"contact_email": "ops@example.test"},
        )
        assert updated["contact_email"] == "ops@example.test"
        rolled = await call_job(client, "acme.registration.key_rollover", account["id"])
        assert rolled["account_url"] == account["account_url"]

        # The rolled-over key still signs orders for this account.
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        cert = await issue(
            client, pebble, authenticator["id"], "after-roll", ["roll.example.test"]
        )
        assert cert["acme"]["account_id"] == account["id"]

        with pytest.raises(RpcError) as caught:
            await client.call("acme.registration.delete", account["id"])
        assert "after-roll" in caught.value.message

        deactivated = await call_job(
            client, "acme.registration.deactivate", account["id"]
        )
        assert deactivated["status"] == "deactivated"
        # The next order registers a fresh account at the same directory.
        again = await issue(
            client, pebble, authenticator["id"], "fresh", ["fresh.example.test"]
        )
        assert again["acme"]["account_id"] != account["id"]
        # A deactivated account also gives way to one registered up front.
        await call_job(
            client, "acme.registration.deactivate", again["acme"]["account_id"]
        )
        # A renewal does not agree to the CA's terms on the user's behalf.
        with pytest.raises(RpcError) as refused:
            await call_job(client, "certificate.renew", again["id"])
        assert refused.value.message.endswith(
            f"no valid ACME account for {pebble.directory_url} (it was deactivated"
            " or deleted): register one with acme.registration.create"
        )
        replaced = await call_job(
            client,
            "acme.registration.create",
            {"acme_directory_uri": pebble.directory_url, "tos": True},
        )
        assert replaced["status"] == "valid"
        assert replaced["id"] not in (account["id"], again["acme"]["account_id"])
        third = await issue(
            client, pebble, authenticator["id"], "third", ["third.example.test"]
        )
        assert third["acme"]["account_id"] == replaced["id"]
        # A certificate of a deactivated account renews with the current one.
        renewed = await call_job(client, "certificate.renew", again["id"])
        after = await client.call("certificate.get_instance", again["id"])
        assert renewed["serial"] == after["serial"] != again["serial"]
        assert after["acme"]["account_id"] == replaced["id"]


async def test_external_account_binding(
    certd_two_cas: RunningDaemon,
    eab_pebble: PebbleServer,
    rfc2136_attributes: dict[str, Any],
) -> None:
    async with certd_two_cas.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        # Without a binding the daemon refuses before sending anything bad.
        with pytest.raises(RpcError) as caught:
            await issue(
                client, eab_pebble, authenticator["id"], "no-eab", ["eab.example.test"]
            )
        assert "external account binding" in caught.value.message

        with pytest.raises(RpcError) as caught:
            await client.call(
                "acme.registration.create",
                {
                    "acme_directory_uri": eab_pebble.directory_url,
                    "tos": True,
                    "eab_kid": EAB_KID,
                },
            )
        assert caught.value.data["errors"][0]["field"] == "data.eab_hmac_key"
        with pytest.raises(RpcError) as caught:
            await client.call(
                "acme.registration.create",
                {
                    "acme_directory_uri": eab_pebble.directory_url,
                    "tos": True,
                    "eab_kid": EAB_KID,
                    "eab_hmac_key": "not base64 at all!",
                },
            )
        assert caught.value.data["errors"][0]["field"] == "data.eab_hmac_key"

        hmac_text = josepy.b64encode(EAB_HMAC).decode()
        account = await call_job(
            client,
            "acme.registration.create",
            {
                "acme_directory_uri": eab_pebble.directory_url,
                "tos": True,
                "eab_kid": EAB_KID,
                "eab_hmac_key": hmac_text,
            },
        )
        assert account["eab_kid"] == EAB_KID
        jobs = await client.call(
            "core.get_jobs", [["method", "=", "acme.registration.create"]]
        )
        assert hmac_text not in str(jobs)
        cert = await issue(
            client, eab_pebble, authenticator["id"], "bound", ["eab.example.test"]
        )
        assert cert["acme"]["account_id"] == account["id"]


async def test_revoke_and_choices(
    certd: RunningDaemon, pebble: PebbleServer, rfc2136_attributes: dict[str, Any]
) -> None:
    async with certd.client() as client:
        choices = await client.call("certificate.acme_server_choices")
        assert "https://acme-v02.api.letsencrypt.org/directory" in choices
        assert len(choices) >= 5
        reasons = await client.call("certificate.revocation_reason_choices")
        assert reasons["keyCompromise"] == 1
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        cert = await issue(
            client, pebble, authenticator["id"], "to-revoke", ["revoke.example.test"]
        )
        result = await call_job(
            client, "certificate.revoke", cert["id"], "KEY_COMPROMISE"
        )
        # The UPPER_SNAKE spelling is taken too; the RFC 5280 name is stored.
        assert result == {"id": cert["id"], "revoked": True, "reason": "keyCompromise"}
        stored = await client.call("certificate.get_instance", cert["id"])
        assert stored["revoked"] is True
        assert stored["revoked_reason"] == "keyCompromise"
        with pytest.raises(RpcError) as caught:
            await call_job(client, "certificate.revoke", cert["id"])
        assert "already revoked" in caught.value.message
        with pytest.raises(RpcError) as caught:
            await client.call("certificate.revoke", cert["id"], "CERTIFICATE_HOLD")
        assert caught.value.data["errors"][0]["field"] == "reason"


async def test_authenticator_test_reports_each_step(
    certd: RunningDaemon, named: NamedServer, rfc2136_attributes: dict[str, Any]
) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        report = await call_job(
            client,
            "acme.dns.authenticator.test",
            authenticator["id"],
            "probe.example.test",
        )
        assert report["fqdn"] == "_acme-challenge.probe.example.test"
        assert report["zone"] == "example.test"
        assert set(report["timings"]) >= {"add_txt", "propagation", "remove_txt"}
        assert named.query("_acme-challenge.probe.example.test") == []

        broken = await client.call(
            "acme.dns.authenticator.create",
            {
                "name": "wrong-key",
                "attributes": {
                    **rfc2136_attributes,
                    "tsig_secret": "d3Jvbmcta2V5LXdyb25nLWtleQ==",
                },
            },
        )
        with pytest.raises(RpcError) as caught:
            await call_job(
                client,
                "acme.dns.authenticator.test",
                broken["id"],
                "probe.example.test",
            )
        assert "tsig" in caught.value.message.lower()
