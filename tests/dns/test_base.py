"""The provider interface: registry, schemas, attribute parsing, name helpers."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from certd.dns.base import (
    DNSProvider,
    ProviderContext,
    attributes_schema,
    candidate_zones,
    in_zone,
    installed_providers,
    normalize_name,
    relative_name,
)
from certd.dns.http import check_api_url
from certd.retry_after import parse_retry_after

BUILTIN = {
    "cloudflare": "Cloudflare",
    "desec": "deSEC",
    "digitalocean": "DigitalOcean",
    "powerdns": "PowerDNS",
    "rfc2136": "RFC 2136 (nsupdate)",
    "route53": "Amazon Route 53",
    "shell": "Shell script",
}
SECRETS = {
    "cloudflare": {"api_token", "api_key"},
    "desec": {"token"},
    "digitalocean": {"digitalocean_token"},
    "powerdns": {"api_key"},
    "rfc2136": {"tsig_secret"},
    "route53": {"secret_access_key"},
    "shell": set(),
}


def test_installed_providers_include_every_builtin() -> None:
    providers = installed_providers()

    assert {name: providers[name].title for name in BUILTIN} == BUILTIN
    for name, cls in providers.items():
        assert issubclass(cls, DNSProvider)
        assert cls.name == name


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_schema_marks_exactly_the_secret_fields(name: str) -> None:
    schema = attributes_schema(installed_providers()[name].Attributes)

    marked = {
        field for field, prop in schema["properties"].items() if prop.get("secret")
    }
    assert marked == SECRETS[name]


def test_name_helpers() -> None:
    assert normalize_name(" WWW.Example.ORG. ") == "www.example.org"
    assert in_zone("a.example.org", "example.org.")
    assert in_zone("example.org", "example.org")
    assert not in_zone("testexample.org", "example.org")
    assert relative_name("_acme-challenge.www.example.org", "example.org") == (
        "_acme-challenge.www"
    )
    assert relative_name("Example.org.", "example.org") == ""
    with pytest.raises(ValueError, match="not in zone"):
        relative_name("example.net", "example.org")
    assert candidate_zones("_acme-challenge.a.example.co.uk") == [
        "_acme-challenge.a.example.co.uk",
        "a.example.co.uk",
        "example.co.uk",
        "co.uk",
    ]
    assert candidate_zones("a.lan", min_labels=1) == ["a.lan", "lan"]


def test_retry_delay_backs_off_and_caps() -> None:
    context = ProviderContext(retry_base_delay=0.5, retry_max_delay=3.0)

    assert [context.retry_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert context.retry_delay(1, retry_after=2.5) == 2.5
    assert context.retry_delay(1, retry_after=600) == 3.0


def test_retry_after_reads_seconds_and_dates() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)

    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(date, dt.datetime.fromtimestamp(now, dt.UTC)) == 7.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_check_api_url() -> None:
    assert check_api_url("https://api.example.org/v1/") == "https://api.example.org/v1"
    assert check_api_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert (
        check_api_url("http://ns1.lan:8081", allow_http=True) == "http://ns1.lan:8081"
    )
    with pytest.raises(ValueError, match="must be an https:// URL"):
        check_api_url("http://api.example.org")
    with pytest.raises(ValueError, match="must be a URL"):
        check_api_url("api.example.org")
