"""Revoking internal certificates: the rules, the CRL, and what survives a delete."""

from __future__ import annotations

import datetime as dt

import aiohttp
from cryptography import x509

from certd.client import Client
from tests.daemon import RunningDaemon, call_job
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    make_root,
    snapshot,
)


def crl_serials(ca: dict) -> dict[int, str | None]:  # type: ignore[type-arg]
    crl = x509.load_pem_x509_crl(ca["crl"].encode())
    reasons: dict[int, str | None] = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason)
            reasons[entry.serial_number] = reason.value.reason.name
        except x509.ExtensionNotFound:
            reasons[entry.serial_number] = None
    return reasons


async def test_revocation_without_a_reason_and_a_held_certificate(
    client: Client,
) -> None:
    root = await make_root(client)
    plain = await issue(client, root["id"], "plain")
    held = await issue(client, root["id"], "held")

    await client.call("certificate.update", plain["id"], {"revoked": True})
    await client.call(
        "certificate.update",
        held["id"],
        {"revoked": True, "revoked_reason": "certificateHold"},
    )
    during = await client.call("certificateauthority.get_instance", root["id"])
    released = await client.call("certificate.update", held["id"], {"revoked": False})
    after = await client.call("certificateauthority.get_instance", root["id"])

    # RFC 5280 5.3.1: no reasonCode rather than "unspecified".
    assert crl_serials(during) == {
        int(plain["serial"], 16): None,
        int(held["serial"], 16): "certificate_hold",
    }
    assert (released["revoked"], released["revoked_reason"]) == (False, None)
    assert released["can_be_revoked"] is True
    assert crl_serials(after) == {int(plain["serial"], 16): None}
    assert (during["crl_number"], after["crl_number"]) == (3, 4)


async def test_a_hold_may_become_permanent_but_not_the_reverse(client: Client) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    await client.call(
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "certificateHold"},
    )
    first = await client.call("certificate.get_instance", leaf["id"])

    final = await client.call(
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "superseded"},
    )
    before = await snapshot(client)
    change = await expect_error(
        client,
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "keyCompromise"},
    )
    lift = await expect_error(
        client, "certificate.update", leaf["id"], {"revoked": False}
    )
    again = await client.call(
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "superseded"},
    )

    assert final["revoked_reason"] == "superseded"
    # The revocation date stays the one of the hold.
    assert final["revoked_at"] == first["revoked_at"]
    assert fields(change) == ["data.revoked_reason"]
    assert "already revoked (superseded)" in change.message
    assert fields(lift) == ["data.revoked"]
    assert "revocation is permanent" in lift.message
    assert again == final
    assert await snapshot(client) == before
    ca = await client.call("certificateauthority.get_instance", root["id"])
    assert crl_serials(ca) == {int(leaf["serial"], 16): "superseded"}


async def test_what_cannot_be_revoked_here(client: Client) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": "csr",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "san": ["csr.example"],
        },
    )
    external = await call_job(
        client,
        "certificate.create",
        {
            "name": "external",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": leaf["chain_list"][0],
            "csr_id": None,
            "privatekey": (await client.call("certificate.export", leaf["id"]))[
                "privatekey"
            ],
        },
    )
    await client.call("certificateauthority.delete", root["id"], True)
    before = await snapshot(client)

    on_csr = await expect_error(
        client, "certificate.update", csr["id"], {"revoked": True}
    )
    orphan = await expect_error(
        client, "certificate.update", external["id"], {"revoked": True}
    )
    reason_alone = await expect_error(
        client,
        "certificate.update",
        leaf["id"],
        {"revoked_reason": "keyCompromise"},
    )
    bad_reason = await expect_error(
        client,
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "removeFromCRL"},
    )

    assert external["signedby"] == root["id"]
    assert fields(on_csr) == ["data.revoked"]
    assert "a CSR is not a certificate" in on_csr.message
    assert fields(orphan) == ["data.revoked"]
    assert "only certificates signed by a local CA" in orphan.message
    assert fields(reason_alone) == ["data.revoked_reason"]
    assert fields(bad_reason) == ["data.revoked_reason"]
    assert await snapshot(client) == before


async def test_a_deleted_revoked_certificate_stays_on_the_crl(client: Client) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    await client.call(
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "keyCompromise"},
    )

    assert await client.call("certificate.delete", leaf["id"]) is True
    ca = await client.call("certificateauthority.get_instance", root["id"])

    assert crl_serials(ca) == {int(leaf["serial"], 16): "key_compromise"}
    assert [r["name"] for r in ca["revoked_certificates"]] == ["leaf"]


async def test_stale_crls_are_republished_with_the_next_number(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    publisher = certd.daemon.services["certificateauthority"].crls  # type: ignore[attr-defined]
    crl = x509.load_pem_x509_crl(root["crl"].encode())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=7)

    fresh = await publisher.refresh_stale(crl.last_update_utc + dt.timedelta(days=3))
    stale = await publisher.refresh_stale(crl.last_update_utc + dt.timedelta(days=4))
    after = await client.call("certificateauthority.get_instance", root["id"])

    assert (fresh, stale) == (0, 1)
    assert after["crl_number"] == 2
    renewed = x509.load_pem_x509_crl(after["crl"].encode())
    assert renewed.last_update_utc == crl.last_update_utc + dt.timedelta(days=4)


async def test_a_revoked_certificate_leaves_the_expiry_metrics(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    kept = await issue(client, root["id"], "kept")
    gone = await issue(client, root["id"], "gone")
    await client.call(
        "certificate.update",
        gone["id"],
        {"revoked": True, "revoked_reason": "superseded"},
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(certd.url + "/metrics") as response:
            metrics = await response.text()

    expiring = {
        line.split('"')[1]
        for line in metrics.splitlines()
        if line.startswith("certd_certificate_expiry_seconds{")
    }
    assert expiring == {kept["name"]}
