"""The test bed fixtures themselves: BIND answers and accepts updates, pebble serves."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.testbed import NamedServer, PebbleServer, TestbedError, start_named


def test_named_serves_zone_apex(named: NamedServer) -> None:
    assert named.query("example.test", "A") == ["127.0.0.1"]
    assert named.query("ns1.example.org.test", "A") == ["127.0.0.1"]


def test_named_add_txt_keeps_other_values(named: NamedServer) -> None:
    fqdn = "_acme-challenge.testbed.example.test"
    named.add_txt(fqdn, "one")
    named.add_txt(fqdn, "two")
    assert sorted(named.query(fqdn)) == ["one", "two"]

    named.delete_txt(fqdn, "one")
    assert named.query(fqdn) == ["two"]
    named.delete_txt(fqdn, "two")
    assert named.query(fqdn) == []


def test_named_static_records_and_cname_updates(tmp_path: Path) -> None:
    records = {
        "example.test": ["_acme-challenge.www IN CNAME delegated.example.org.test."]
    }
    with start_named(tmp_path, records=records) as server:
        assert server.query("_acme-challenge.www.example.test", "CNAME") == [
            "delegated.example.org.test."
        ]
        server.update(
            "example.test",
            add=[("alias.example.test.", "CNAME", "target.example.org.test.")],
        )
        assert server.query("alias.example.test", "CNAME") == [
            "target.example.org.test."
        ]


def test_named_rejects_records_for_unknown_zone(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="not served"):
        with start_named(tmp_path, records={"other.test": ["x IN A 127.0.0.1"]}):
            pass


def test_pebble_directory_and_issuer(pebble: PebbleServer) -> None:
    with urllib.request.urlopen(
        pebble.directory_url, context=pebble.ssl_context(), timeout=5
    ) as response:
        directory = json.load(response)
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    assert pebble.issuer_root_pem().startswith("-----BEGIN CERTIFICATE-----")
    assert pebble.issuer_intermediate_pem().startswith("-----BEGIN CERTIFICATE-----")
