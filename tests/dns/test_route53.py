"""Route53Provider against moto's Route 53, with a proxy for throttling and sync."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from certd.dns.base import parse_attributes
from certd.dns.route53 import Route53Attributes, Route53Provider
from certd.errors import DNSProviderError, ValidationError
from tests.dns.conftest import AWS_KEY_ID, AWS_SECRET, TEST_CONTEXT
from tests.fakes.route53 import Route53Proxy

MakeProvider = Callable[..., Route53Provider]
NAME = "_acme-challenge.example.com"


def create_zone(route53: Any, name: str, *, private: bool = False) -> str:
    extra: dict[str, Any] = {}
    if private:
        extra = {
            "HostedZoneConfig": {"PrivateZone": True, "Comment": "inside only"},
            "VPC": {"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789"},
        }
    reply = route53.create_hosted_zone(
        Name=name, CallerReference=f"{name}-{private}", **extra
    )
    return str(reply["HostedZone"]["Id"]).removeprefix("/hostedzone/")


@pytest.fixture
def zones(route53: Any) -> dict[str, str]:
    """example.com, sub.example.com and a private zone inside example.com."""
    return {
        "example.com": create_zone(route53, "example.com"),
        "sub.example.com": create_zone(route53, "sub.example.com"),
        "private": create_zone(route53, "private.example.com", private=True),
    }


def txt_set(route53: Any, zone_id: str, name: str) -> tuple[int, list[str]] | None:
    """(TTL, sorted raw values) of the TXT set at name, or None."""
    for rrset in route53.list_resource_record_sets(HostedZoneId=zone_id)[
        "ResourceRecordSets"
    ]:
        if rrset["Name"] == name + "." and rrset["Type"] == "TXT":
            return rrset["TTL"], sorted(r["Value"] for r in rrset["ResourceRecords"])
    return None


def put_foreign(route53: Any, zone_id: str, name: str, ttl: int = 300) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": name + ".",
                        "Type": "TXT",
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": '"foreign" "part two"'}],
                    },
                }
            ]
        },
    )


# --- attributes ---------------------------------------------------------------


def test_attributes_check_key_endpoint_and_zone_id() -> None:
    attrs = parse_attributes(
        Route53Attributes,
        {
            "access_key_id": AWS_KEY_ID,
            "secret_access_key": AWS_SECRET,
            "hosted_zone_id": "/hostedzone/Z123",
        },
    )
    assert (attrs.region, attrs.hosted_zone_id) == ("us-east-1", "Z123")

    with pytest.raises(ValidationError) as caught:
        parse_attributes(
            Route53Attributes,
            {
                "access_key_id": "AKID WITH SPACE!",
                "secret_access_key": AWS_SECRET,
                "endpoint_url": "http://route53.example.com",
            },
        )
    fields = {e.field: e.message for e in caught.value.errors}
    assert fields == {
        "attributes.access_key_id": "must be letters and digits only, like AKIA...",
        "attributes.endpoint_url": "must be an https:// URL",
    }


# --- zone choice --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fqdn", "zone"),
    [
        ("_acme-challenge.example.com", "example.com"),
        ("_acme-challenge.www.sub.example.com", "sub.example.com"),
        ("_acme-challenge.sub.example.com", "sub.example.com"),
        ("_acme-challenge.host.private.example.com", "example.com"),
        ("_acme-challenge.notsub.example.com", "example.com"),
    ],
)
async def test_find_zone_most_specific_public(
    zones: dict[str, str], make_route53: MakeProvider, fqdn: str, zone: str
) -> None:
    assert await make_route53().find_zone(fqdn) == zone


async def test_find_zone_without_match_fails(
    zones: dict[str, str], make_route53: MakeProvider
) -> None:
    with pytest.raises(DNSProviderError, match="no public hosted zone contains"):
        await make_route53().find_zone("_acme-challenge.example.net")


async def test_find_zone_pages_through_zones(
    route53: Any, make_route53: MakeProvider
) -> None:
    for i in range(105):
        create_zone(route53, f"filler{i:03d}.example.net")
    create_zone(route53, "zzz-last.example.org")

    assert await make_route53().find_zone("_acme-challenge.zzz-last.example.org") == (
        "zzz-last.example.org"
    )


async def test_find_zone_refuses_to_guess_between_twins(
    route53: Any, make_route53: MakeProvider
) -> None:
    first = create_zone(route53, "twin.example")
    second = route53.create_hosted_zone(Name="twin.example", CallerReference="again")
    second_id = second["HostedZone"]["Id"].removeprefix("/hostedzone/")

    with pytest.raises(DNSProviderError) as caught:
        await make_route53().find_zone("_acme-challenge.twin.example")
    assert "2 public hosted zones are named twin.example" in str(caught.value)
    assert first in str(caught.value) and second_id in str(caught.value)

    chosen = make_route53(hosted_zone_id=second_id)
    assert await chosen.find_zone("_acme-challenge.twin.example") == "twin.example"


async def test_hosted_zone_id_must_contain_name(
    zones: dict[str, str], make_route53: MakeProvider
) -> None:
    provider = make_route53(hosted_zone_id=zones["sub.example.com"])

    with pytest.raises(
        DNSProviderError, match=r"is zone sub\.example\.com, which has no"
    ):
        await provider.find_zone(NAME)


async def test_unknown_hosted_zone_id_names_the_field(
    zones: dict[str, str], make_route53: MakeProvider
) -> None:
    provider = make_route53(hosted_zone_id="ZDOESNOTEXIST")

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone(NAME)
    assert "no such hosted zone; check hosted_zone_id" in str(caught.value)


# --- records ------------------------------------------------------------------


async def test_add_merges_with_foreign_value_and_remove_keeps_it(
    route53: Any, zones: dict[str, str], make_route53: MakeProvider
) -> None:
    zone_id = zones["example.com"]
    put_foreign(route53, zone_id, NAME, ttl=300)
    provider = make_route53()

    await provider.add_txt("example.com", NAME, "ours")
    merged = txt_set(route53, zone_id, NAME)
    await provider.remove_txt("example.com", NAME, "ours")

    assert merged == (300, ['"foreign" "part two"', '"ours"'])
    assert txt_set(route53, zone_id, NAME) == (300, ['"foreign" "part two"'])


async def test_wildcard_and_apex_values_at_once_then_set_deleted(
    route53: Any, zones: dict[str, str], make_route53: MakeProvider
) -> None:
    zone_id = zones["sub.example.com"]
    name = "_acme-challenge.sub.example.com"
    provider = make_route53()
    zone = await provider.find_zone(name)

    await asyncio.gather(
        provider.add_txt(zone, name, "apex"), provider.add_txt(zone, name, "wildcard")
    )
    both = txt_set(route53, zone_id, name)
    await provider.remove_txt(zone, name, "apex")
    one = txt_set(route53, zone_id, name)
    await provider.remove_txt(zone, name, "wildcard")

    assert both == (60, ['"apex"', '"wildcard"'])
    assert one == (60, ['"wildcard"'])
    assert txt_set(route53, zone_id, name) is None


async def test_add_is_idempotent_and_remove_of_absent_is_fine(
    route53: Any, zones: dict[str, str], make_route53: MakeProvider
) -> None:
    provider = make_route53()

    await provider.add_txt("example.com", NAME, "same")
    await provider.add_txt("example.com", NAME, "same")
    await provider.remove_txt("example.com", NAME, "other")
    await provider.remove_txt("example.com", "_acme-challenge.none.example.com", "x")

    assert txt_set(route53, zones["example.com"], NAME) == (60, ['"same"'])


async def test_value_needing_quotes_round_trips(
    route53: Any, zones: dict[str, str], make_route53: MakeProvider
) -> None:
    provider = make_route53()
    value = 'with "quotes" and \\ and ' + "x" * 260

    await provider.add_txt("example.com", NAME, value)
    stored = txt_set(route53, zones["example.com"], NAME)
    await provider.remove_txt("example.com", NAME, value)

    assert stored is not None
    assert stored[1][0].startswith('"with \\"quotes\\" and \\\\ and xxx')
    assert txt_set(route53, zones["example.com"], NAME) is None


# --- throttling and change sync -----------------------------------------------


async def test_throttling_is_retried(
    zones: dict[str, str], route53_proxy: Route53Proxy, make_route53: MakeProvider
) -> None:
    provider = make_route53(endpoint_url=route53_proxy.url)
    route53_proxy.fail_next("Throttling")
    route53_proxy.fail_next("PriorRequestNotComplete")

    await provider.add_txt("example.com", NAME, "v")

    assert (
        route53_proxy.calls.count(
            f"POST /2013-04-01/hostedzone/{zones['example.com']}/rrset/"
        )
        == 1
    )
    assert len(route53_proxy.calls) >= 4


async def test_throttling_that_persists_is_reported(
    zones: dict[str, str], route53_proxy: Route53Proxy, make_route53: MakeProvider
) -> None:
    provider = make_route53(endpoint_url=route53_proxy.url)
    route53_proxy.fail_next("Throttling", times=10)

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone(NAME)
    assert caught.value.retryable is True
    assert "Throttling" in str(caught.value)
    assert len(route53_proxy.calls) == TEST_CONTEXT.max_attempts


async def test_waits_for_insync(
    zones: dict[str, str], route53_proxy: Route53Proxy, make_route53: MakeProvider
) -> None:
    provider = make_route53(endpoint_url=route53_proxy.url)
    await provider.find_zone(NAME)
    route53_proxy.pending_reports = 3  # the change reply and two GetChange polls

    await provider.add_txt("example.com", NAME, "v")

    polls = [c for c in route53_proxy.calls if c.startswith("GET /2013-04-01/change/")]
    assert len(polls) == 3


async def test_change_never_insync_times_out(
    zones: dict[str, str], route53_proxy: Route53Proxy, make_route53: MakeProvider
) -> None:
    context = dataclasses.replace(TEST_CONTEXT, change_timeout=0.1)
    provider = make_route53(context=context, endpoint_url=route53_proxy.url)
    await provider.find_zone(NAME)
    route53_proxy.pending_reports = 10_000

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.com", NAME, "v")
    assert "still PENDING after 0.1 s" in str(caught.value)
    assert caught.value.retryable is True
