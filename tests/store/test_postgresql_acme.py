"""ACME issuance and renewal through pebble and BIND, with the store on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon import call_job, make_config, running_daemon
from tests.integration.orders import order
from tests.store.postgres import PostgresServer
from tests.testbed import NamedServer, PebbleServer

pytestmark = pytest.mark.integration


async def _rows(
    postgres: PostgresServer, database: str, sql: str
) -> list[tuple[Any, ...]]:
    conn = await postgres.connect(database)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_a_certificate_is_ordered_renewed_and_its_records_cleaned_up(
    tmp_path: Path,
    postgres: PostgresServer,
    named: NamedServer,
    pebble: PebbleServer,
) -> None:
    database = await postgres.create_database("acme")
    config = make_config(
        tmp_path / "state",
        named=named,
        pebble=pebble,
        store={"database_url": postgres.url(database)},
    )
    async with running_daemon(config) as certd, certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": named.rfc2136_attributes()},
        )
        issued = await order(
            client,
            pebble.directory_url,
            authenticator["id"],
            "web",
            ["web.example.test"],
            renew_days=20,
        )
        renewed = await call_job(client, "certificate.renew", issued["id"])
        after = await client.call("certificate.get_instance", issued["id"])
        accounts = await client.call("acme.registration.query")

    assert issued["cert_type"] == "CERTIFICATE"
    assert issued["san"] == ["DNS:web.example.test"]
    assert renewed["serial"] == after["serial"] != issued["serial"]
    assert [a["directory"] for a in accounts] == [pebble.directory_url]
    assert named.query("_acme-challenge.web.example.test") == []
    # Every TXT record written was removed and its row with it.
    assert await _rows(postgres, database, "SELECT id FROM challenge_record") == []
    assert await _rows(
        postgres,
        database,
        "SELECT certificate_id, state, trigger, privatekey IS NULL"
        " FROM renewal_attempt",
    ) == [(issued["id"], "succeeded", "manual", True)]
    [(account_key, attributes)] = await _rows(
        postgres,
        database,
        "SELECT a.key_pem, d.attributes FROM acme_account a, dns_authenticator d",
    )
    assert account_key.startswith("enc:v1:")
    assert attributes.startswith("enc:v1:")
