"""PowerDNSProvider against the local PowerDNS API fake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from certd.dns.base import DNSProvider, parse_attributes
from certd.dns.powerdns import PowerDNSAttributes, PowerDNSProvider
from certd.errors import DNSProviderError
from tests.dns.conftest import TEST_CONTEXT, ServerFactory
from tests.fakes.powerdns import FakePowerDNS

MakeProvider = Callable[..., PowerDNSProvider]
NAME = "_acme-challenge.example.org"


@pytest.fixture
async def fake(aiohttp_server: ServerFactory) -> FakePowerDNS:
    fake = FakePowerDNS()
    fake.add_zone("example.org")
    fake.add_zone("lab.example.org")
    fake.base_url = str((await aiohttp_server(fake.app())).make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_provider(
    fake: FakePowerDNS, opened_providers: list[DNSProvider]
) -> MakeProvider:
    def make(**attributes: Any) -> PowerDNSProvider:
        attributes = {"api_url": fake.base_url, "api_key": fake.api_key, **attributes}
        provider = PowerDNSProvider(
            parse_attributes(PowerDNSAttributes, attributes), TEST_CONTEXT
        )
        opened_providers.append(provider)
        return provider

    return make


def contents(fake: FakePowerDNS, zone: str, name: str) -> list[str] | None:
    rrset = fake.rrset(zone, name)
    return None if rrset is None else sorted(r["content"] for r in rrset["records"])


def test_attributes_accept_http_and_strip_api_suffix() -> None:
    attrs = parse_attributes(
        PowerDNSAttributes,
        {"api_url": "http://ns1.example.org:8081/api/v1/", "api_key": "k"},
    )
    assert attrs.api_url == "http://ns1.example.org:8081"


async def test_find_zone_most_specific(make_provider: MakeProvider) -> None:
    provider = make_provider()

    assert (
        await provider.find_zone("_acme-challenge.x.lab.example.org")
        == "lab.example.org"
    )
    assert await provider.find_zone(NAME) == "example.org"
    with pytest.raises(DNSProviderError, match="no zone containing"):
        await provider.find_zone("_acme-challenge.example.net")


async def test_concurrent_values_merge_then_set_deleted(
    fake: FakePowerDNS, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    zone = await provider.find_zone(NAME)

    await asyncio.gather(
        provider.add_txt(zone, NAME, "apex"), provider.add_txt(zone, NAME, "wildcard")
    )
    both = contents(fake, zone, NAME)
    await provider.remove_txt(zone, NAME, "apex")
    one = contents(fake, zone, NAME)
    await provider.remove_txt(zone, NAME, "wildcard")

    assert both == ['"apex"', '"wildcard"']
    assert one == ['"wildcard"']
    assert fake.rrset(zone, NAME) is None
    assert fake.patches[-1] == {
        "rrsets": [{"name": NAME + ".", "type": "TXT", "changetype": "DELETE"}]
    }


async def test_foreign_records_keep_content_flags_and_ttl(
    fake: FakePowerDNS, make_provider: MakeProvider
) -> None:
    foreign = [
        {"content": '"foreign"', "disabled": False},
        {"content": '"parked" "in two"', "disabled": True},
    ]
    fake.put_rrset("example.org", NAME, 300, foreign)
    provider = make_provider()

    await provider.add_txt("example.org", NAME, "ours")
    await provider.remove_txt("example.org", NAME, "ours")

    assert fake.rrset("example.org", NAME) == {
        "name": NAME + ".",
        "type": "TXT",
        "ttl": 300,
        "records": foreign,
        "comments": [],
    }


async def test_long_value_is_split_into_quoted_strings(
    fake: FakePowerDNS, make_provider: MakeProvider
) -> None:
    value = "a" * 255 + "b" * 10

    await make_provider().add_txt("example.org", NAME, value)

    assert contents(fake, "example.org", NAME) == [f'"{"a" * 255}" "{"b" * 10}"']


async def test_wrong_key_and_server_id_are_named(make_provider: MakeProvider) -> None:
    with pytest.raises(DNSProviderError, match="API key was rejected: check api_key"):
        await make_provider(api_key="wrong").find_zone(NAME)
    with pytest.raises(DNSProviderError, match="not found: check server_id"):
        await make_provider(server_id="other").find_zone(NAME)
