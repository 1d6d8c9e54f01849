"""DigitalOceanProvider against the local DigitalOcean fake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from certd.dns.base import DNSProvider, parse_attributes
from certd.dns.digitalocean import DigitalOceanAttributes, DigitalOceanProvider
from certd.errors import DNSProviderError
from tests.dns.conftest import TEST_CONTEXT, ServerFactory
from tests.fakes.digitalocean import FakeDigitalOcean

MakeProvider = Callable[..., DigitalOceanProvider]


@pytest.fixture
async def fake(aiohttp_server: ServerFactory) -> FakeDigitalOcean:
    fake = FakeDigitalOcean()
    fake.add_domain("example.com")
    fake.add_domain("sub.example.com")
    fake.tokens = {"rw-token": True, "ro-token": False}
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_provider(
    fake: FakeDigitalOcean, opened_providers: list[DNSProvider]
) -> MakeProvider:
    def make(**attributes: Any) -> DigitalOceanProvider:
        attributes.setdefault("digitalocean_token", "rw-token")
        attributes.setdefault("api_url", fake.base_url)
        parsed = parse_attributes(DigitalOceanAttributes, attributes)
        provider = DigitalOceanProvider(parsed, TEST_CONTEXT)
        opened_providers.append(provider)
        return provider

    return make


async def test_find_zone_most_specific_domain(make_provider: MakeProvider) -> None:
    provider = make_provider()

    assert await provider.find_zone("_acme-challenge.www.sub.example.com") == (
        "sub.example.com"
    )
    assert await provider.find_zone("_acme-challenge.example.com") == "example.com"
    with pytest.raises(DNSProviderError, match="no domain of this account contains"):
        await provider.find_zone("_acme-challenge.example.org")


async def test_two_values_then_remove_one_keeps_other_and_foreign(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    fake.add_record("example.com", "TXT", "_acme-challenge", "foreign")
    provider = make_provider()
    name = "_acme-challenge.example.com"

    await provider.add_txt("example.com", name, "apex")
    await provider.add_txt("example.com", name, "wildcard")
    await provider.add_txt("example.com", name, "wildcard")
    both = fake.txt("example.com", "_acme-challenge")
    await provider.remove_txt("example.com", name, "apex")

    assert both == ["apex", "foreign", "wildcard"]
    assert fake.txt("example.com", "_acme-challenge") == ["foreign", "wildcard"]
    created = [r for r in fake.domains["example.com"] if r["data"] == "wildcard"]
    assert created[0]["ttl"] == 30


async def test_apex_record_uses_at(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    provider = make_provider()

    await provider.add_txt("sub.example.com", "sub.example.com", "at-apex")

    assert fake.txt("sub.example.com", "@") == ["at-apex"]


async def test_remove_pages_through_records(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    for i in range(450):
        fake.add_record("example.com", "TXT", "_acme-challenge", f"other-{i}")
    fake.add_record("example.com", "TXT", "_acme-challenge", "ours")

    await make_provider().remove_txt(
        "example.com", "_acme-challenge.example.com", "ours"
    )

    assert "ours" not in fake.txt("example.com", "_acme-challenge")
    assert len(fake.txt("example.com", "_acme-challenge")) == 450


async def test_bad_token_names_the_field(make_provider: MakeProvider) -> None:
    with pytest.raises(DNSProviderError) as caught:
        await make_provider(digitalocean_token="nope").find_zone("example.com")
    assert "the token was rejected: check digitalocean_token" in str(caught.value)
    assert "nope" not in str(caught.value)


async def test_read_only_token_names_the_scopes(make_provider: MakeProvider) -> None:
    provider = make_provider(digitalocean_token="ro-token")

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.com", "_acme-challenge.example.com", "v")
    assert "give it the domain read, create and delete scopes" in str(caught.value)


async def test_rate_limit_is_retried(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    fake.throttled = 2

    assert await make_provider().find_zone("example.com") == "example.com"
    assert len(fake.requests) == 3
