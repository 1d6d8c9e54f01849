"""Fixtures for provider tests: vendor fakes served on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
import urllib3
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from certd.dns.base import DNSProvider, ProviderContext, parse_attributes
from certd.dns.cloudflare import CloudflareProvider
from certd.dns.resolve import PropagationSettings
from certd.dns.rfc2136 import RFC2136Provider
from certd.dns.route53 import Route53Provider
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.route53 import Route53Proxy
from tests.testbed import NamedServer

# Short timeouts and retry delays keep failure paths fast in tests.
TEST_CONTEXT = ProviderContext(
    request_timeout=5.0,
    retry_base_delay=0.01,
    retry_max_delay=0.05,
    change_timeout=10.0,
    change_poll_interval=0.01,
)

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def provider_context() -> ProviderContext:
    return TEST_CONTEXT


@pytest.fixture
async def opened_providers() -> AsyncIterator[list[DNSProvider]]:
    """Providers made by a test; closed at teardown."""
    providers: list[DNSProvider] = []
    yield providers
    for provider in providers:
        await provider.aclose()


@pytest.fixture
async def cloudflare_fake(aiohttp_server: ServerFactory) -> FakeCloudflare:
    """The Cloudflare fake with zones example.co.uk, testexample.org, example.org."""
    fake = FakeCloudflare()
    for zone in ("example.co.uk", "testexample.org", "example.org"):
        fake.add_zone(zone)
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_cloudflare(
    cloudflare_fake: FakeCloudflare, opened_providers: list[DNSProvider]
) -> Callable[..., CloudflareProvider]:
    """Build a provider pointed at the fake from attribute keywords."""

    def make(**attributes: Any) -> CloudflareProvider:
        attributes.setdefault("api_url", cloudflare_fake.base_url)
        parsed = parse_attributes(CloudflareProvider.Attributes, attributes)
        provider = CloudflareProvider(parsed, TEST_CONTEXT)
        opened_providers.append(provider)
        return provider

    return make


def unique_label() -> str:
    """A fresh label so tests sharing the session BIND never see each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def make_rfc2136(
    named: NamedServer, opened_providers: list[DNSProvider]
) -> Callable[..., RFC2136Provider]:
    """Build an RFC 2136 provider for the session BIND; keywords override."""

    def make(**overrides: Any) -> RFC2136Provider:
        attributes: dict[str, Any] = {
            "server": named.host,
            "port": named.port,
            "tsig_key_name": named.tsig_name,
            "tsig_secret": named.tsig_secret,
            "tsig_algorithm": named.tsig_algorithm,
            **overrides,
        }
        parsed = parse_attributes(RFC2136Provider.Attributes, attributes)
        provider = RFC2136Provider(parsed, TEST_CONTEXT)
        opened_providers.append(provider)
        return provider

    return make


@pytest.fixture
def propagation(named: NamedServer) -> PropagationSettings:
    """Settings that ask only the session BIND, on its port."""
    return PropagationSettings(
        timeout=5.0,
        resolvers=((named.host, named.port),),
        nameserver_port=named.port,
    )


AWS_KEY_ID = "AKIDCERTDTESTKEY01"
AWS_SECRET = "certd-test-secret-access-key"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server on a free 127.0.0.1 port, shared by the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def route53(moto_url: str) -> Any:
    """A boto3 Route 53 client on a freshly reset moto, for arranging zones."""
    urllib3.request("POST", f"{moto_url}/moto-api/reset")
    return boto3.client(
        "route53",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
    )


@pytest.fixture
async def route53_proxy(
    moto_url: str, route53: Any, aiohttp_server: ServerFactory
) -> Route53Proxy:
    """A throttling, slow-to-sync proxy in front of the reset moto."""
    proxy = Route53Proxy(moto_url)
    server = await aiohttp_server(proxy.app())
    proxy.url = str(server.make_url("")).rstrip("/")
    return proxy


@pytest.fixture
def make_route53(
    moto_url: str, opened_providers: list[DNSProvider]
) -> Callable[..., Route53Provider]:
    """Build a Route 53 provider pointed at moto; keywords override attributes."""

    def make(
        context: ProviderContext = TEST_CONTEXT, **overrides: Any
    ) -> Route53Provider:
        attributes: dict[str, Any] = {
            "access_key_id": AWS_KEY_ID,
            "secret_access_key": AWS_SECRET,
            "endpoint_url": moto_url,
            **overrides,
        }
        parsed = parse_attributes(Route53Provider.Attributes, attributes)
        provider = Route53Provider(parsed, context)
        opened_providers.append(provider)
        return provider

    return make
