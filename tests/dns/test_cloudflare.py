"""CloudflareProvider against the local Cloudflare fake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from certd.dns.base import parse_attributes
from certd.dns.cloudflare import CloudflareAttributes, CloudflareProvider
from certd.errors import DNSProviderError, ValidationError
from tests.fakes.cloudflare import FakeCloudflare

MakeProvider = Callable[..., CloudflareProvider]

TOKEN = "tok3nForExampleCoUk"
EMAIL = "owner@example.org"
KEY = "0123456789abcdef0123456789abcdef01234"


def txt_values(fake: FakeCloudflare, zone: str, name: str) -> list[str]:
    return sorted(
        r["content"]
        for r in fake.records(zone)
        if r["type"] == "TXT" and r["name"] == name
    )


# --- attributes ---------------------------------------------------------------


def test_attributes_reject_token_with_key() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_attributes(
            CloudflareAttributes,
            {"api_token": "t", "cloudflare_email": EMAIL, "api_key": KEY},
        )
    assert [(e.field, e.message) for e in caught.value.errors] == [
        (
            "attributes.api_token",
            "give either api_token or cloudflare_email with api_key, not both",
        )
    ]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {},
            "attributes.api_token",
            "give api_token, or cloudflare_email with api_key",
        ),
        (
            {"cloudflare_email": EMAIL},
            "attributes.api_key",
            "required with cloudflare_email",
        ),
        ({"api_key": KEY}, "attributes.cloudflare_email", "required with api_key"),
        (
            {"api_token": "", "api_key": KEY},
            "attributes.cloudflare_email",
            "required with api_key",
        ),
        (
            {"api_token": "t", "api_url": "http://api.example.org"},
            "attributes.api_url",
            "must be an https:// URL",
        ),
    ],
)
def test_attributes_name_the_field(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_attributes(CloudflareAttributes, data)
    assert [(e.field, e.message) for e in caught.value.errors] == [(field, message)]


def test_attributes_keep_secrets_out_of_repr() -> None:
    attrs = parse_attributes(CloudflareAttributes, {"api_token": "very-secret"})
    assert "very-secret" not in repr(attrs)
    assert "very-secret" not in str(attrs.model_dump())


# --- zone lookup --------------------------------------------------------------


async def test_find_zone_walks_past_403_with_scoped_token(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN, zones=["example.co.uk"])
    provider = make_cloudflare(api_token=TOKEN)

    zone = await provider.find_zone("_acme-challenge.dev.example.co.uk")

    assert zone == "example.co.uk"
    looked_up = [
        r.query["name"] for r in cloudflare_fake.requests if r.path == "/zones"
    ]
    assert looked_up == [
        "_acme-challenge.dev.example.co.uk",
        "dev.example.co.uk",
        "example.co.uk",
    ]


async def test_find_zone_wildcard_name_lands_in_registered_domain(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN, zones=["example.co.uk"])
    provider = make_cloudflare(api_token=TOKEN)

    zone = await provider.find_zone("_acme-challenge.dev.example.co.uk")
    await provider.add_txt(zone, "_acme-challenge.dev.example.co.uk", "wild")

    assert txt_values(
        cloudflare_fake, "example.co.uk", "_acme-challenge.dev.example.co.uk"
    ) == ["wild"]


async def test_find_zone_never_matches_a_label_suffix(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_global_key(EMAIL, KEY)
    provider = make_cloudflare(cloudflare_email=EMAIL, api_key=KEY)

    assert (
        await provider.find_zone("_acme-challenge.www.testexample.org")
        == "testexample.org"
    )
    assert await provider.find_zone("_acme-challenge.a.b.example.org") == "example.org"


async def test_find_zone_with_zone_id_skips_lookup(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    zone_id = cloudflare_fake.zone("example.org").id
    cloudflare_fake.add_token(TOKEN, zones=["example.org"])
    provider = make_cloudflare(api_token=TOKEN, zone_id=zone_id)

    assert await provider.find_zone("_acme-challenge.example.org") == "example.org"
    assert [r.path for r in cloudflare_fake.requests] == [f"/zones/{zone_id}"]


async def test_find_zone_with_zone_id_of_other_zone_fails(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    zone_id = cloudflare_fake.zone("example.org").id
    cloudflare_fake.add_token(TOKEN)
    provider = make_cloudflare(api_token=TOKEN, zone_id=zone_id)

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.testexample.org")
    assert "zone_id" in str(caught.value)
    assert "example.org" in str(caught.value)


async def test_find_zone_outside_scope_explains_refusal(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN, zones=["example.co.uk"])
    provider = make_cloudflare(api_token=TOKEN)

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.example.org")
    message = str(caught.value)
    assert message.startswith(
        "cloudflare: no zone containing _acme-challenge.example.org"
    )
    assert "example.org were refused (403)" in message
    assert "zone_id" in message


# --- authentication -----------------------------------------------------------


async def test_token_mode_sends_only_bearer(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    provider = make_cloudflare(api_token=TOKEN)

    await provider.find_zone("_acme-challenge.example.org")

    headers = cloudflare_fake.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Auth-Email" not in headers
    assert "X-Auth-Key" not in headers


async def test_key_mode_sends_only_key_headers(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_global_key(EMAIL, KEY)
    provider = make_cloudflare(cloudflare_email=EMAIL, api_key=KEY)

    await provider.find_zone("_acme-challenge.example.org")

    headers = cloudflare_fake.requests[-1].headers
    assert headers["X-Auth-Email"] == EMAIL
    assert headers["X-Auth-Key"] == KEY
    assert "Authorization" not in headers


async def test_unknown_token_is_reported_at_once(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    provider = make_cloudflare(api_token="notKnown")

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.a.b.example.org")
    assert "the API token is invalid" in str(caught.value)
    assert "9109" in str(caught.value)
    # an invalid token is not a scope problem: the walk stops at the first answer
    assert len(cloudflare_fake.requests) == 1


async def test_malformed_token_names_the_header(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    provider = make_cloudflare(api_token="has space")

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.example.org")
    assert "Authorization header was rejected" in str(caught.value)
    assert "6111" in str(caught.value)


async def test_unknown_global_key_names_both_fields(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    provider = make_cloudflare(cloudflare_email=EMAIL, api_key="0badc0de")

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("_acme-challenge.example.org")
    assert "cloudflare_email/api_key" in str(caught.value)
    assert "9103" in str(caught.value)
    assert "0badc0de" not in str(caught.value)


# --- records ------------------------------------------------------------------


async def test_add_two_values_and_remove_one(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN, zones=["example.org"])
    provider = make_cloudflare(api_token=TOKEN)
    name = "_acme-challenge.example.org"
    zone = await provider.find_zone(name)

    await provider.add_txt(zone, name, "apex")
    await provider.add_txt(zone, name, "wildcard")
    await provider.remove_txt(zone, name, "apex")

    assert txt_values(cloudflare_fake, "example.org", name) == ["wildcard"]
    created = [r.body for r in cloudflare_fake.requests if r.method == "POST"]
    assert created[0] == {"type": "TXT", "name": name, "content": "apex", "ttl": 120}


async def test_remove_keeps_foreign_value(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN, zones=["example.org"])
    name = "_acme-challenge.example.org"
    cloudflare_fake.add_record("example.org", "TXT", name, "someone-else")
    cloudflare_fake.add_record("example.org", "TXT", "other.example.org", "ours")
    provider = make_cloudflare(api_token=TOKEN)

    await provider.add_txt("example.org", name, "ours")
    await provider.remove_txt("example.org", name, "ours")

    assert txt_values(cloudflare_fake, "example.org", name) == ["someone-else"]
    assert txt_values(cloudflare_fake, "example.org", "other.example.org") == ["ours"]


async def test_add_identical_value_twice_is_success(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    provider = make_cloudflare(api_token=TOKEN)
    name = "_acme-challenge.testexample.org"

    await provider.add_txt("testexample.org", name, "same")
    await provider.add_txt("testexample.org", name, "same")

    assert txt_values(cloudflare_fake, "testexample.org", name) == ["same"]


async def test_remove_missing_value_is_fine(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    provider = make_cloudflare(api_token=TOKEN)

    await provider.remove_txt("example.org", "_acme-challenge.example.org", "gone")

    assert not any(r.method == "DELETE" for r in cloudflare_fake.requests)


async def test_remove_pages_through_many_records(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    name = "_acme-challenge.example.org"
    for i in range(230):
        cloudflare_fake.add_record("example.org", "TXT", name, f"foreign-{i}")
    cloudflare_fake.add_record("example.org", "TXT", name, "ours")
    provider = make_cloudflare(api_token=TOKEN)

    await provider.remove_txt("example.org", name, "ours")

    values = txt_values(cloudflare_fake, "example.org", name)
    assert len(values) == 230
    assert "ours" not in values
    pages = [
        r.query["page"]
        for r in cloudflare_fake.requests
        if r.path.endswith("/dns_records")
    ]
    assert pages[-3:] == ["1", "2", "3"]


async def test_write_outside_token_scope_names_permission(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token("wide")
    cloudflare_fake.add_token(TOKEN, zones=["example.co.uk"])
    wide = make_cloudflare(api_token="wide")
    await wide.find_zone("example.org")
    narrow = make_cloudflare(api_token=TOKEN)
    # reuse the id the wide token saw, as a stale zone_id would
    narrow._zone_ids["example.org"] = cloudflare_fake.zone("example.org").id

    with pytest.raises(DNSProviderError) as caught:
        await narrow.add_txt("example.org", "_acme-challenge.example.org", "v")
    assert "may not do this on zone example.org" in str(caught.value)
    assert "DNS:Edit" in str(caught.value)


# --- retries ------------------------------------------------------------------


async def test_retries_429_then_succeeds(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    cloudflare_fake.fail_next(429, times=2, retry_after="0")
    provider = make_cloudflare(api_token=TOKEN)

    assert await provider.find_zone("example.org") == "example.org"
    assert len(cloudflare_fake.requests) == 3


async def test_gives_up_after_repeated_5xx_as_retryable(
    cloudflare_fake: FakeCloudflare, make_cloudflare: MakeProvider
) -> None:
    cloudflare_fake.add_token(TOKEN)
    cloudflare_fake.fail_next(503, times=10)
    provider = make_cloudflare(api_token=TOKEN)

    with pytest.raises(DNSProviderError) as caught:
        await provider.find_zone("example.org")
    assert caught.value.retryable is True
    assert "HTTP 503" in str(caught.value)
    assert len(cloudflare_fake.requests) == 4
