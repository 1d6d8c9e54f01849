"""Orders that fail: records are cleaned, foreign values stay, errors are clear."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from certd.client import RpcError
from certd.store.models import ChallengeRecord
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.integration.test_acme_issuance import issue
from tests.testbed import NamedServer, PebbleServer, start_named, start_pebble


@pytest.fixture(scope="module")
def blind_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A pebble that validates against another BIND, which never sees our values."""
    with start_named(tmp_path_factory.mktemp("other-named")) as other:
        with start_pebble(tmp_path_factory.mktemp("blind"), other.port) as server:
            yield server


@pytest.fixture
async def certd_blind(
    tmp_path: Path, named: NamedServer, blind_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    config = make_config(tmp_path / "state", named=named, pebble=blind_pebble)
    async with running_daemon(config) as daemon:
        yield daemon


async def test_invalid_challenge_cleans_up_and_keeps_foreign_values(
    certd_blind: RunningDaemon,
    named: NamedServer,
    blind_pebble: PebbleServer,
    rfc2136_attributes: dict[str, Any],
) -> None:
    record = "_acme-challenge.invalid.example.test"
    named.add_txt(record, "someone-elses-value")
    try:
        async with certd_blind.client() as client:
            authenticator = await client.call(
                "acme.dns.authenticator.create",
                {"name": "bind", "attributes": rfc2136_attributes},
            )
            for attempt in range(2):
                with pytest.raises(RpcError) as caught:
                    await issue(
                        client,
                        blind_pebble,
                        authenticator["id"],
                        f"invalid-{attempt}",
                        ["invalid.example.test"],
                    )
                error = caught.value
                assert "invalid.example.test" in error.message
                assert "dns-01" in error.message
                assert error.data["problem_type"].startswith(
                    "urn:ietf:params:acme:error:"
                )
                assert error.data["domain"] == "invalid.example.test"
                # Ours is gone the moment the call returns; theirs is untouched.
                assert named.query(record) == ["someone-elses-value"]
            jobs = await client.call(
                "core.get_jobs",
                [["method", "=", "certificate.create"], ["state", "=", "FAILED"]],
            )
            assert len(jobs) == 2
            assert jobs[0]["error"] == jobs[1]["error"]
            assert (
                await client.call(
                    "certificate.query", [["cert_type", "=", "CERTIFICATE"]]
                )
                == []
            )
        async with certd_blind.daemon.db.session() as session:
            left = (await session.scalars(select(ChallengeRecord))).all()
        assert left == []  # nothing is waiting for a cleanup at the next start
    finally:
        named.delete_txt(record, "someone-elses-value")


async def test_values_left_by_a_crash_are_removed_at_start(
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
    rfc2136_attributes: dict[str, Any],
) -> None:
    config = make_config(tmp_path / "state", named=named, pebble=pebble)
    record = "_acme-challenge.crashed.example.test"
    async with running_daemon(config) as first:
        async with first.client() as client:
            authenticator = await client.call(
                "acme.dns.authenticator.create",
                {"name": "bind", "attributes": rfc2136_attributes},
            )
        # What an order had written when the process died: the store row, then
        # the value in DNS (and one row whose value never made it out).
        async with first.daemon.db.session() as session:
            session.add_all(
                [
                    ChallengeRecord(
                        authenticator_id=authenticator["id"],
                        zone="example.test",
                        fqdn=record.removesuffix("."),
                        value="left-by-crash",
                    ),
                    ChallengeRecord(
                        authenticator_id=authenticator["id"],
                        zone=None,
                        fqdn=record,
                        value="never-published",
                    ),
                ]
            )
        named.add_txt(record, "left-by-crash")
        named.add_txt(record, "not-ours")
    assert sorted(named.query(record)) == ["left-by-crash", "not-ours"]
    async with running_daemon(config) as second:
        async with second.daemon.db.session() as session:
            assert (await session.scalars(select(ChallengeRecord))).all() == []
    assert named.query(record) == ["not-ours"]
    named.delete_txt(record, "not-ours")
