"""_acme-challenge names delegated by CNAME to another zone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from certd.client import RpcError
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.integration.test_acme_issuance import issue
from tests.testbed import NamedServer, PebbleServer, start_named, start_pebble

RECORDS = {
    "example.test": [
        "_acme-challenge.alias IN CNAME _acme-challenge.alias.example.org.test.",
        "_acme-challenge.chain IN CNAME hop.example.test.",
        "hop IN CNAME final.example.org.test.",
        "_acme-challenge.loop IN CNAME loop-b.example.test.",
        "loop-b IN CNAME _acme-challenge.loop.example.test.",
    ]
}


@pytest.fixture(scope="module")
def delegating_bed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NamedServer, PebbleServer]]:
    with start_named(
        tmp_path_factory.mktemp("cname-named"), records=RECORDS, resolving=True
    ) as named:
        with start_pebble(
            tmp_path_factory.mktemp("cname-pebble"), named.port
        ) as pebble:
            yield named, pebble


@pytest.fixture
async def certd_delegating(
    tmp_path: Path, delegating_bed: tuple[NamedServer, PebbleServer]
) -> AsyncIterator[RunningDaemon]:
    named, pebble = delegating_bed
    # A short propagation timeout: one test waits for a value that never shows.
    config = make_config(
        tmp_path / "state", named=named, pebble=pebble, dns={"propagation_timeout": 2}
    )
    async with running_daemon(config) as daemon:
        yield daemon


def attributes(named: NamedServer) -> dict[str, Any]:
    return {
        "authenticator": "rfc2136",
        "server": named.host,
        "port": named.port,
        "tsig_key_name": named.tsig_name,
        "tsig_secret": named.tsig_secret,
    }


async def test_values_are_written_where_the_cname_chain_ends(
    certd_delegating: RunningDaemon, delegating_bed: tuple[NamedServer, PebbleServer]
) -> None:
    named, pebble = delegating_bed
    async with certd_delegating.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": attributes(named)},
        )
        assert authenticator["follow_cnames"] is True
        probe = await call_job(
            client,
            "acme.dns.authenticator.test",
            authenticator["id"],
            "chain.example.test",
        )
        assert probe["target"] == "final.example.org.test"
        assert probe["zone"] == "example.org.test"
        cert = await issue(
            client, pebble, authenticator["id"], "alias", ["alias.example.test"]
        )
        assert cert["san"] == ["DNS:alias.example.test"]
        assert named.query("_acme-challenge.alias.example.org.test") == []

        with pytest.raises(RpcError) as caught:
            await issue(
                client, pebble, authenticator["id"], "loop", ["loop.example.test"]
            )
        assert "CNAME loop" in caught.value.message


async def test_following_can_be_turned_off(
    certd_delegating: RunningDaemon, delegating_bed: tuple[NamedServer, PebbleServer]
) -> None:
    named, _ = delegating_bed
    async with certd_delegating.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "direct", "attributes": attributes(named), "follow_cnames": False},
        )
        assert authenticator["follow_cnames"] is False
        # Without following, the value goes on the CNAME's own name, where DNS
        # allows no other data: BIND ignores it and it never becomes visible.
        with pytest.raises(RpcError) as caught:
            await call_job(
                client,
                "acme.dns.authenticator.test",
                authenticator["id"],
                "alias.example.test",
            )
        assert "_acme-challenge.alias.example.test" in caught.value.message
        updated = await client.call(
            "acme.dns.authenticator.update",
            authenticator["id"],
            {"follow_cnames": True},
        )
        assert updated["follow_cnames"] is True
        probe = await call_job(
            client,
            "acme.dns.authenticator.test",
            authenticator["id"],
            "alias.example.test",
        )
        assert probe["zone"] == "example.org.test"
