"""A CA under a held, revoked or expired CA of ours: no signing, no renewal plan.

RFC 5280 6.1.3: a path through a revoked or expired CA does not validate, so
what an intermediate under one signs is of no use, however sound the
intermediate itself is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.client import Client, RpcError
from certd.pki.keys import hash_algorithm, load_private_key
from certd.renewal.planning import (
    CA_CANNOT_SIGN,
    SignerFacts,
    not_renewable_because,
    plan_row,
    signer_problem,
)
from certd.renewal.policy import PolicySettings
from certd.store.models import Certificate, CertificateAuthority, utcnow
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.pki_api.conftest import expect_error, fields, issue, make_intermediate
from tests.pki_api.conftest import make_root as _make_root
from tests.renewal.factory import make_chain
from tests.renewal.test_unusable_ca import (
    BLOCKED,
    _events,
    _plan_entry,
    _renew_jobs,
    _stored,
)

HOLD = {"revoked": True, "revoked_reason": "certificateHold"}
RELEASE = {"revoked": False}


@pytest.fixture
async def certd(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    # the loop is off: each test runs the tick and the scan itself
    async with running_daemon(make_config(tmp_path / "state")) as daemon:
        yield daemon


async def make_root(client: Client) -> Any:
    return await _make_root(client, lifetime=3650)


async def _authority_events(client: Client, kind: str) -> list[dict[str, Any]]:
    return await client.call("event.query", [["kind", "=", kind]])  # type: ignore[no-any-return]


async def _sign_with(client: Client, ca_id: int, name: str = "late") -> RpcError:
    """The error of a new certificate signed by ``ca_id``; fails if it is signed."""
    return await expect_error(
        client,
        "certificate.create",
        {
            "name": name,
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": ca_id,
            "common": f"{name}.example.test",
            "profile": "HTTPS ECC Certificate",
            "lifetime": 10,
        },
    )


async def _passes(certd: RunningDaemon) -> None:
    """What the loop would run: a tick, a scan and a tick."""
    engine = certd.daemon.renewal
    await engine.tick()
    await engine.scan()
    await engine.tick()


async def test_a_hold_on_the_root_stops_its_intermediate_until_released(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(client, root["id"])
        cert = await issue(client, inter["id"])
        planned = await _stored(certd, cert["id"])

        await client.call("certificateauthority.update", root["id"], HOLD)
        # replanned by the update itself, though the root signed it not
        held = await _stored(certd, cert["id"])
        entry = await _plan_entry(client, cert["id"])
        refused_leaf = await _sign_with(client, inter["id"])
        refused_ca = await expect_error(
            client,
            "certificateauthority.create",
            {
                "name": "below",
                "create_type": "CA_CREATE_INTERMEDIATE",
                "signedby": inter["id"],
                "common": "below",
            },
        )
        with pytest.raises(RpcError) as refused_renew:
            await client.call("certificate.renew", cert["id"])
        await _passes(certd)
        after_passes = await _stored(certd, cert["id"])
        jobs_held = await _renew_jobs(client)
        blocked = await _events(client, cert["id"], BLOCKED)
        revoked_events = await _authority_events(client, "authority.revoked")

        await client.call("certificateauthority.update", root["id"], RELEASE)
        released = await _stored(certd, cert["id"])
        entry_released = await _plan_entry(client, cert["id"])
        released_events = await _authority_events(client, "authority.released")
        signed = await issue(client, inter["id"], name="after")
        renewed = await call_job(client, "certificate.renew", cert["id"])
        blocked_after = await _events(client, cert["id"], BLOCKED)

    because = "its CA 'inter' cannot sign: its parent CA 'root' is on hold"
    assert planned[0] is not None and planned[1] != CA_CANNOT_SIGN
    assert held == after_passes == (None, CA_CANNOT_SIGN, 0, 0)
    assert (entry["renewable"], entry["next_attempt_at"], entry["reason"]) == (
        False,
        None,
        CA_CANNOT_SIGN,
    )
    # signing with the intermediate is refused, naming the root
    assert fields(refused_leaf) == fields(refused_ca) == ["data.signedby"]
    assert refused_leaf.message == refused_ca.message
    assert (
        "certificate authority 'inter' cannot sign: its parent CA 'root' is on hold"
        in refused_leaf.message
    )
    assert refused_renew.value.code == -32602
    assert f"certificate 'leaf' cannot be renewed: {because}" in str(
        refused_renew.value
    )
    assert jobs_held == []
    # told once, however many passes ran
    assert [(e["severity"], e["data"]["because"]) for e in blocked] == [
        ("warning", because)
    ]
    assert blocked[0]["data"]["ca_id"] == inter["id"]
    assert [
        (e["severity"], e["subject"], e["certificate_id"], e["data"])
        for e in revoked_events
    ] == [
        (
            "warning",
            "root",
            None,
            {"reason": "certificateHold", "ca_id": root["id"], "name": "root"},
        )
    ]
    assert "CA root was put on hold" in revoked_events[0]["message"]
    # released: planned as before, signs and renews again
    assert released == planned
    assert (entry_released["renewable"], entry_released["reason"]) == (
        True,
        planned[1],
    )
    assert [(e["severity"], e["subject"], e["data"]) for e in released_events] == [
        ("info", "root", {"ca_id": root["id"], "name": "root"})
    ]
    assert signed["signedby"] == inter["id"]
    assert renewed["serial"] != cert["serial"]
    assert len(blocked_after) == 1


async def test_a_revoked_root_stops_its_intermediate_for_good(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(client, root["id"])
        cert = await issue(client, inter["id"])
        await client.call(
            "certificateauthority.update",
            root["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        revoked = await _stored(certd, cert["id"])
        entry = await _plan_entry(client, cert["id"])
        refused_leaf = await _sign_with(client, inter["id"])
        with pytest.raises(RpcError) as refused_renew:
            await client.call("certificate.renew", cert["id"])
        not_lifted = await expect_error(
            client, "certificateauthority.update", root["id"], RELEASE
        )
        await _passes(certd)
        after_passes = await _stored(certd, cert["id"])
        blocked = await _events(client, cert["id"], BLOCKED)
        revoked_events = await _authority_events(client, "authority.revoked")
        released_events = await _authority_events(client, "authority.released")
        jobs = await _renew_jobs(client)

    because = "its CA 'inter' cannot sign: its parent CA 'root' is revoked"
    assert revoked == after_passes == (None, CA_CANNOT_SIGN, 0, 0)
    assert (entry["renewable"], entry["reason"]) == (False, CA_CANNOT_SIGN)
    assert fields(refused_leaf) == ["data.signedby"]
    assert (
        "certificate authority 'inter' cannot sign: its parent CA 'root' is revoked"
        in refused_leaf.message
    )
    assert because in str(refused_renew.value)
    assert fields(not_lifted) == ["data.revoked"]
    assert [e["data"]["because"] for e in blocked] == [because]
    assert [(e["data"], e["severity"]) for e in revoked_events] == [
        ({"reason": "keyCompromise", "ca_id": root["id"], "name": "root"}, "warning")
    ]
    assert "CA root was revoked (keyCompromise)" in revoked_events[0]["message"]
    assert released_events == []
    assert jobs == []


async def test_a_hold_two_levels_up_names_the_held_ancestor(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(
            client,
            root["id"],
            cert_extensions={"BasicConstraints": {"path_length": 1}},
        )
        issuing = await make_intermediate(client, inter["id"], name="issuing")
        cert = await issue(client, issuing["id"])
        await client.call("certificateauthority.update", root["id"], HOLD)
        held = await _stored(certd, cert["id"])
        refused = await _sign_with(client, issuing["id"])
        blocked = await _events(client, cert["id"], BLOCKED)
        # a hold nearer to it is named first
        await client.call("certificateauthority.update", inter["id"], HOLD)
        nearer = await _sign_with(client, issuing["id"])
        # lifting one hold is not enough while the other stays
        await client.call("certificateauthority.update", root["id"], RELEASE)
        still = await _stored(certd, cert["id"])
        await client.call("certificateauthority.update", inter["id"], RELEASE)
        lifted = await _stored(certd, cert["id"])

    assert held[:2] == (None, CA_CANNOT_SIGN)
    assert (
        "certificate authority 'issuing' cannot sign: its ancestor CA 'root' is on "
        "hold" in refused.message
    )
    assert [e["data"]["because"] for e in blocked] == [
        "its CA 'issuing' cannot sign: its ancestor CA 'root' is on hold"
    ]
    assert "its parent CA 'inter' is on hold" in nearer.message
    assert still[:2] == (None, CA_CANNOT_SIGN)
    assert lifted[0] is not None and lifted[1] != CA_CANNOT_SIGN


def _expired_copy(ca_row: CertificateAuthority) -> tuple[str, dt.datetime]:
    """A root's certificate made again with its name and key, expired a day ago."""
    assert ca_row.privatekey is not None
    key = load_private_key(ca_row.privatekey)
    old = x509.load_pem_x509_certificate(ca_row.certificate.encode())
    now = dt.datetime.now(dt.UTC)
    not_after = (now - dt.timedelta(days=1)).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(not_after)
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(key, hash_algorithm(None, key))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode(), not_after


async def test_an_expired_ca_or_ancestor_blocks_planning_and_signing(
    certd: RunningDaemon,
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(client, root["id"])
        direct = await issue(client, root["id"], name="direct")
        below = await issue(client, inter["id"], name="below")
        await certd.daemon.renewal.tick()
        planned = [await _stored(certd, c["id"]) for c in (direct, below)]

        # The root's certificate runs out: no API call tells the planner;
        # the next tick finds the planned certificates under it.
        async with certd.daemon.db.session() as session:
            row = await session.get(CertificateAuthority, root["id"])
            assert row is not None
            row.certificate, not_after = _expired_copy(row)
        await _passes(certd)
        stopped = [await _stored(certd, c["id"]) for c in (direct, below)]
        entries = [await _plan_entry(client, c["id"]) for c in (direct, below)]
        blocked = [await _events(client, c["id"], BLOCKED) for c in (direct, below)]
        refused_root = await _sign_with(client, root["id"])
        refused_inter = await _sign_with(client, inter["id"])
        with pytest.raises(RpcError) as refused_renew:
            await client.call("certificate.renew", below["id"])
        jobs = await _renew_jobs(client)

    expired_on = not_after.isoformat()
    assert all(p[0] is not None and p[1] != CA_CANNOT_SIGN for p in planned)
    assert stopped == [(None, CA_CANNOT_SIGN, 0, 0)] * 2
    assert [(e["renewable"], e["reason"]) for e in entries] == [
        (False, CA_CANNOT_SIGN)
    ] * 2
    assert [[e["data"]["because"] for e in events] for events in blocked] == [
        [f"its CA 'root' expired on {expired_on}"],
        [f"its CA 'inter' cannot sign: its parent CA 'root' expired on {expired_on}"],
    ]
    assert f"certificate authority 'root' expired on {expired_on}" in (
        refused_root.message
    )
    assert (
        "certificate authority 'inter' cannot sign: its parent CA 'root' expired "
        f"on {expired_on}" in refused_inter.message
    )
    assert f"its parent CA 'root' expired on {expired_on}" in str(refused_renew.value)
    assert jobs == []


# --- planning alone, on facts ---------------------------------------------------

_NOW = utcnow()
_PAST = _NOW - dt.timedelta(days=1)
_FUTURE = _NOW + dt.timedelta(days=365)
_LEAF = make_chain(["unit.example.test"]).fullchain_pem


def _row() -> Certificate:
    """A certificate row signed by CA 3, as planning reads it."""
    return Certificate(
        name="c",
        cert_type="CERTIFICATE",
        create_type="CERTIFICATE_CREATE_INTERNAL",
        certificate=_LEAF,
        revoked=False,
        acme_account_id=None,
        signedby_id=3,
        renew_days=None,
        failure_count=0,
        next_attempt_reason=None,
    )


def _ca(
    name: str,
    parent: int | None,
    *,
    reason: str | None = None,
    not_after: dt.datetime = _FUTURE,
) -> SignerFacts:
    """A CA with its key, signed by CA ``parent``, revoked for ``reason`` if any."""
    return SignerFacts(name, reason is not None, True, reason, not_after, parent)


@pytest.mark.parametrize(
    ("signers", "because"),
    [
        (
            {1: _ca("r", None), 2: _ca("i", 1), 3: _ca("s", 2)},
            None,
        ),
        (
            {
                1: _ca("r", None),
                2: _ca("i", 1),
                3: _ca("s", 2, reason="certificateHold"),
            },
            "its CA 's' is on hold",
        ),
        (
            {1: _ca("r", None), 2: _ca("i", 1), 3: _ca("s", 2, reason="superseded")},
            "its CA 's' is revoked and signs no more",
        ),
        (
            {1: _ca("r", None), 2: _ca("i", 1), 3: _ca("s", 2, not_after=_PAST)},
            f"its CA 's' expired on {_PAST.isoformat()}",
        ),
        (
            {
                1: _ca("r", None),
                2: _ca("i", 1, reason="certificateHold"),
                3: _ca("s", 2),
            },
            "its CA 's' cannot sign: its parent CA 'i' is on hold",
        ),
        (
            {
                1: _ca("r", None, not_after=_PAST),
                2: _ca("i", 1),
                3: _ca("s", 2),
            },
            f"its CA 's' cannot sign: its ancestor CA 'r' expired on {_PAST.isoformat()}",
        ),
        (
            {1: _ca("r", None, reason="cACompromise"), 2: _ca("i", 1), 3: _ca("s", 2)},
            "its CA 's' cannot sign: its ancestor CA 'r' is revoked",
        ),
        (
            {1: _ca("r", None), 3: _ca("s", 1)._replace(readable=False)},
            "its CA 's' holds a certificate that cannot be read",
        ),
        # an ancestor needs no key of its own to be sound
        (
            {1: _ca("r", None)._replace(has_key=False), 3: _ca("s", 1)},
            None,
        ),
        # a loop of parents (not made by certd) ends the walk
        ({2: _ca("i", 3), 3: _ca("s", 2)}, None),
    ],
)
def test_the_chain_decides_whether_a_certificate_is_planned(
    signers: dict[int, SignerFacts], because: str | None
) -> None:
    row = _row()
    result = plan_row(row, PolicySettings(), _NOW, signers)

    assert signer_problem(row, signers, _NOW) == because
    if because is None:
        assert result is not None and row.next_attempt_at == result.at
    else:
        assert (row.next_attempt_at, row.next_attempt_reason) == (None, CA_CANNOT_SIGN)
        assert not_renewable_because(row, signers, _NOW) == because


async def test_a_hold_landing_after_the_signature_keeps_the_old_certificate(
    certd: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with certd.client() as client:
        root = await make_root(client)
        cert = await issue(client, root["id"], lifetime=30)
        renewer = certd.daemon.renewal.renewer
        install = renewer._install

        async def held_before_install(*args: Any) -> Any:
            # Signed already; the hold commits before the install's transaction.
            await client.call("certificateauthority.update", root["id"], HOLD)
            return await install(*args)

        monkeypatch.setattr(renewer, "_install", held_before_install)
        job_id = await client.call("certificate.renew", cert["id"])
        job = await client.call("core.job_wait", job_id, 30)
        after = await client.call("certificate.get_instance", cert["id"])
        stored = await _stored(certd, cert["id"])
        failed = await _events(client, cert["id"], "certificate.renewal_failed")
        blocked = await _events(client, cert["id"], BLOCKED)

    assert job["state"] == "FAILED"
    assert "its CA 'root' is on hold" in job["error"]
    assert after["certificate"] == cert["certificate"]
    # A refusal found late, like one found before the job: nothing counted,
    # the attempt closed, the certificate blocked and the user told once.
    assert stored == (None, CA_CANNOT_SIGN, 0, 1)
    assert failed == []
    assert [e["data"]["because"] for e in blocked] == ["its CA 'root' is on hold"]
