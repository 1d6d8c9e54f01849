"""RFC2136Provider against a real BIND."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from certd.dns.base import parse_attributes
from certd.dns.rfc2136 import RFC2136Attributes, RFC2136Provider
from certd.errors import DNSProviderError, ValidationError
from tests.dns.conftest import unique_label
from tests.testbed import NamedServer, free_port

MakeProvider = Callable[..., RFC2136Provider]


def test_attributes_normalize_algorithm_and_zone() -> None:
    attrs = parse_attributes(
        RFC2136Attributes,
        {
            "server": "127.0.0.1",
            "tsig_key_name": "acme-key.",
            "tsig_secret": base64.b64encode(b"k" * 32).decode(),
            "tsig_algorithm": "HMAC-SHA512.",
            "zone": "Example.Test.",
        },
    )
    assert attrs.tsig_algorithm == "hmac-sha512"
    assert attrs.zone == "example.test"
    assert attrs.tsig_key_name == "acme-key"
    assert attrs.port == 53


def test_attributes_reject_bad_secret_algorithm_and_server() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_attributes(
            RFC2136Attributes,
            {
                "server": "not a host",
                "tsig_key_name": "acme-key",
                "tsig_secret": "not base64!",
                "tsig_algorithm": "hmac-sha3",
            },
        )
    fields = {e.field: e.message for e in caught.value.errors}
    assert fields["attributes.server"] == "must be a host name or an IP address"
    assert (
        fields["attributes.tsig_secret"] == "must be base64, as tsig-keygen prints it"
    )
    assert "hmac-sha256" in fields["attributes.tsig_algorithm"]
    assert "not base64!" not in str(caught.value)


async def test_find_zone_for_deep_name(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136()

    deep = await provider.find_zone("_acme-challenge.a.b.c.example.test")
    apex = await provider.find_zone("example.org.test")
    other = await provider.find_zone("_acme-challenge.www.example.org.test")

    assert (deep, apex, other) == (
        "example.test",
        "example.org.test",
        "example.org.test",
    )


async def test_find_zone_outside_server_fails(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136()

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.example.net")
    assert "authoritative for no zone containing _acme-challenge.example.net" in str(
        caught.value
    )


async def test_configured_zone_must_contain_name(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136(zone="example.org.test")

    assert await provider.find_zone("_acme-challenge.example.org.test") == (
        "example.org.test"
    )
    with pytest.raises(DNSProviderError, match="not in the configured zone"):
        await provider.find_zone("_acme-challenge.example.test")


async def test_add_two_values_remove_one(
    named: NamedServer, make_rfc2136: MakeProvider
) -> None:
    provider = make_rfc2136()
    name = f"_acme-challenge.{unique_label()}.example.test"
    zone = await provider.find_zone(name)

    await provider.add_txt(zone, name, "apex-value")
    await provider.add_txt(zone, name, "wildcard-value")
    both = sorted(named.query(name))
    await provider.remove_txt(zone, name, "apex-value")

    assert both == ["apex-value", "wildcard-value"]
    assert named.query(name) == ["wildcard-value"]


async def test_remove_keeps_foreign_value(
    named: NamedServer, make_rfc2136: MakeProvider
) -> None:
    provider = make_rfc2136()
    name = f"_acme-challenge.{unique_label()}.example.org.test"
    named.add_txt(name, "foreign")

    await provider.add_txt("example.org.test", name, "ours")
    await provider.remove_txt("example.org.test", name, "ours")
    await provider.remove_txt("example.org.test", name, "never-added")

    assert named.query(name) == ["foreign"]


async def test_long_value_is_split_and_joined(
    named: NamedServer, make_rfc2136: MakeProvider
) -> None:
    provider = make_rfc2136()
    name = f"{unique_label()}.example.test"
    value = "v" * 300

    await provider.add_txt("example.test", name, value)
    stored = named.query(name)
    await provider.remove_txt("example.test", name, value)

    assert stored == [value]
    assert named.query(name) == []


async def test_bad_tsig_secret_names_the_fields(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136(tsig_secret=base64.b64encode(b"wrong" * 8).decode())

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.test", "_acme-challenge.example.test", "v")
    assert str(caught.value) == (
        f"rfc2136: TSIG key rejected by {provider.attributes.server}:"
        f"{provider.attributes.port} (BADSIG): "
        "check tsig_key_name/tsig_secret/tsig_algorithm"
    )


@pytest.mark.parametrize(
    "override", [{"tsig_key_name": "other-key"}, {"tsig_algorithm": "hmac-sha512"}]
)
async def test_unknown_key_or_algorithm_is_badkey(
    make_rfc2136: MakeProvider, override: dict[str, str]
) -> None:
    provider = make_rfc2136(**override)

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.example.test")
    assert "(BADKEY): check tsig_key_name/tsig_secret/tsig_algorithm" in str(
        caught.value
    )


async def test_zone_not_served_is_notauth(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136(zone="example.net")

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.net", "_acme-challenge.example.net", "v")
    assert "NOTAUTH" in str(caught.value)
    assert "not authoritative for example.net" in str(caught.value)


async def test_closed_port_is_retryable(make_rfc2136: MakeProvider) -> None:
    provider = make_rfc2136(port=free_port())

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.test", "_acme-challenge.example.test", "v")
    assert caught.value.retryable is True
    assert "cannot reach 127.0.0.1:" in str(caught.value)
