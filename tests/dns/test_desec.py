"""DeSECProvider against the local deSEC API fake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from certd.dns.base import DNSProvider, parse_attributes
from certd.dns.desec import DeSECAttributes, DeSECProvider
from certd.errors import DNSProviderError
from tests.dns.conftest import TEST_CONTEXT, ServerFactory
from tests.fakes.desec import FakeDeSEC

MakeProvider = Callable[..., DeSECProvider]
NAME = "_acme-challenge.example.dedyn.io"


@pytest.fixture
async def fake(aiohttp_server: ServerFactory) -> FakeDeSEC:
    fake = FakeDeSEC()
    fake.add_domain("example.dedyn.io")
    fake.add_domain("sub.example.dedyn.io")
    fake.base_url = str((await aiohttp_server(fake.app())).make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_provider(fake: FakeDeSEC, opened_providers: list[DNSProvider]) -> MakeProvider:
    def make(**attributes: Any) -> DeSECProvider:
        attributes = {"api_url": fake.base_url, "token": fake.token, **attributes}
        provider = DeSECProvider(
            parse_attributes(DeSECAttributes, attributes), TEST_CONTEXT
        )
        opened_providers.append(provider)
        return provider

    return make


async def test_find_zone_asks_owns_qname(make_provider: MakeProvider) -> None:
    provider = make_provider()

    assert await provider.find_zone("_acme-challenge.a.sub.example.dedyn.io") == (
        "sub.example.dedyn.io"
    )
    with pytest.raises(DNSProviderError, match="no domain of this account contains"):
        await provider.find_zone("_acme-challenge.example.org")


async def test_values_merge_with_minimum_ttl_then_set_deleted(
    fake: FakeDeSEC, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    zone = await provider.find_zone(NAME)

    await asyncio.gather(
        provider.add_txt(zone, NAME, "apex"), provider.add_txt(zone, NAME, "wildcard")
    )
    both = fake.domains[zone][("_acme-challenge", "TXT")]
    await provider.remove_txt(zone, NAME, "apex")
    one = fake.records(zone, "_acme-challenge")
    await provider.remove_txt(zone, NAME, "wildcard")

    assert sorted(both["records"]) == ['"apex"', '"wildcard"']
    assert both["ttl"] == 3600
    assert one == ['"wildcard"']
    assert fake.records(zone, "_acme-challenge") is None


async def test_foreign_value_and_ttl_survive(
    fake: FakeDeSEC, make_provider: MakeProvider
) -> None:
    fake.put_rrset("example.dedyn.io", "_acme-challenge", 7200, ['"foreign"'])
    provider = make_provider()

    await provider.add_txt("example.dedyn.io", NAME, "ours")
    await provider.remove_txt("example.dedyn.io", NAME, "ours")

    rrset = fake.domains["example.dedyn.io"][("_acme-challenge", "TXT")]
    assert (rrset["ttl"], rrset["records"]) == (7200, ['"foreign"'])


async def test_apex_is_read_through_at(
    fake: FakeDeSEC, make_provider: MakeProvider
) -> None:
    provider = make_provider()

    await provider.add_txt("sub.example.dedyn.io", "sub.example.dedyn.io", "apex-value")
    await provider.add_txt("sub.example.dedyn.io", "sub.example.dedyn.io", "apex-value")

    assert fake.records("sub.example.dedyn.io", "") == ['"apex-value"']
    assert ("GET", "/domains/sub.example.dedyn.io/rrsets/@/TXT/") in fake.requests


async def test_throttling_is_retried(
    fake: FakeDeSEC, make_provider: MakeProvider
) -> None:
    fake.throttled = 2

    await make_provider().add_txt("example.dedyn.io", NAME, "v")

    assert fake.records("example.dedyn.io", "_acme-challenge") == ['"v"']


async def test_bad_token_is_named(make_provider: MakeProvider) -> None:
    with pytest.raises(DNSProviderError) as caught:
        await make_provider(token="wrong").find_zone(NAME)
    assert "the token was rejected: check token" in str(caught.value)
    assert "Invalid token." in str(caught.value)
