"""End to end through the daemon for every DNS provider, against pebble.

For the REST providers (Route 53 on moto, Cloudflare, DigitalOcean, PowerDNS
and deSEC on their fakes) pebble validates against a small DNS server of this
process that answers from the vendor's own record store, and certd's
propagation check asks the same server, so an order only succeeds if the
provider wrote the right value in the right zone. The server records every
TXT answer, which is how these tests see what a record set held while the
challenges were pending. RFC 2136 (test_acme_issuance) and the shell provider
write to BIND, which the session's pebble asks.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from certd.client import Client
from certd.dns.txt import parse_txt
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.fakes.cloudflare import CloudflareRecords, FakeCloudflare
from tests.fakes.desec import FakeDeSEC
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.dns_server import (
    CallbackRecords,
    FakeAuthoritativeDNS,
    RecordSource,
    serve_dns,
)
from tests.fakes.powerdns import FakePowerDNS
from tests.fakes.route53 import MotoRoute53Records, Route53Proxy
from tests.integration.orders import make_csr, order, order_certificate
from tests.testbed import NamedServer, PebbleServer, free_port, start_pebble

AWS_KEY_ID = "AKIDCERTDE2ETEST01"
AWS_SECRET = "certd-e2e-secret-access-key"
FOREIGN = "placed-there-by-someone-else"

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="module")
def fake_dns() -> Iterator[FakeAuthoritativeDNS]:
    with serve_dns() as server:
        yield server


@pytest.fixture(scope="module")
def dns_pebble(
    tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeAuthoritativeDNS
) -> Iterator[PebbleServer]:
    """pebble validating DNS-01 against the fake-backed DNS server."""
    with start_pebble(tmp_path_factory.mktemp("pebble-fake-dns"), fake_dns.port) as p:
        yield p


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def route53(moto_url: str, fake_dns: FakeAuthoritativeDNS) -> Any:
    """A boto3 client on a freshly reset moto whose zones the DNS server serves."""
    urllib3.request("POST", f"{moto_url}/moto-api/reset")
    client = boto3.client(
        "route53",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
    )
    fake_dns.source = MotoRoute53Records(client)
    fake_dns.served.clear()
    return client


@pytest.fixture
async def cloudflare(
    aiohttp_server: ServerFactory, fake_dns: FakeAuthoritativeDNS
) -> FakeCloudflare:
    """The Cloudflare fake with three zones, served to pebble over DNS."""
    fake = FakeCloudflare()
    for zone in ("example.co.uk", "testexample.org", "example.org"):
        fake.add_zone(zone)
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    fake_dns.source = CloudflareRecords(fake)
    fake_dns.served.clear()
    return fake


@pytest.fixture
async def certd(
    tmp_path: Path, fake_dns: FakeAuthoritativeDNS, dns_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        pebble=dns_pebble,
        dns={
            "resolvers": [fake_dns.address],
            "nameserver_port": fake_dns.port,
            "propagation_timeout": 10,
        },
    )
    async with running_daemon(config) as daemon:
        yield daemon


def create_zone(route53: Any, name: str) -> str:
    reply = route53.create_hosted_zone(Name=name, CallerReference=name)
    return str(reply["HostedZone"]["Id"]).removeprefix("/hostedzone/")


def txt_sets(route53: Any, zone_id: str) -> dict[str, list[str]]:
    """Every TXT set of the zone: name (no dot) to sorted raw values."""
    sets = route53.list_resource_record_sets(HostedZoneId=zone_id)
    return {
        rrset["Name"].rstrip("."): sorted(r["Value"] for r in rrset["ResourceRecords"])
        for rrset in sets["ResourceRecordSets"]
        if rrset["Type"] == "TXT"
    }


def put_txt(route53: Any, zone_id: str, fqdn: str, value: str) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": fqdn + ".",
                        "Type": "TXT",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": f'"{value}"'}],
                    },
                }
            ]
        },
    )


async def route53_authenticator(client: Client, endpoint_url: str) -> int:
    created = await client.call(
        "acme.dns.authenticator.create",
        {
            "name": "aws",
            "attributes": {
                "authenticator": "route53",
                "access_key_id": AWS_KEY_ID,
                "secret_access_key": AWS_SECRET,
                "endpoint_url": endpoint_url,
            },
        },
    )
    assert created["secrets_set"] == ["secret_access_key"]
    return int(created["id"])


# --- Route 53 -----------------------------------------------------------------


@pytest.mark.parametrize("leftover", [False, True], ids=["alone", "with-leftover"])
async def test_route53_wildcard_and_apex_share_one_record_set(
    certd: RunningDaemon,
    dns_pebble: PebbleServer,
    fake_dns: FakeAuthoritativeDNS,
    route53: Any,
    moto_url: str,
    leftover: bool,
) -> None:
    zone_id = create_zone(route53, "example.com")
    record = "_acme-challenge.example.com"
    if leftover:
        put_txt(route53, zone_id, record, FOREIGN)

    async with certd.client() as client:
        authenticator = await route53_authenticator(client, moto_url)
        cert = await order(
            client,
            dns_pebble.directory_url,
            authenticator,
            "aws-wild",
            ["example.com", "*.example.com"],
        )

    assert sorted(cert["san"]) == ["DNS:*.example.com", "DNS:example.com"]
    assert cert["issuer_dn"].startswith("CN=Pebble Intermediate CA")
    # Every answer, certd's checks and the CA's two validations alike, showed
    # one record set holding both challenge values (and the leftover).
    served = [set(values) for values in fake_dns.served_at(record)]
    assert len(served) >= 3
    ours = set.union(*served) - {FOREIGN}
    assert len(ours) == 2
    expected = ours | {FOREIGN} if leftover else ours
    assert all(values == expected for values in served)
    # Afterwards: ours gone, the set deleted unless someone else's value is left.
    remaining = txt_sets(route53, zone_id)
    if leftover:
        assert remaining == {record: [f'"{FOREIGN}"']}
    else:
        assert remaining == {}


async def test_many_orders_at_once_share_record_sets(
    certd: RunningDaemon,
    dns_pebble: PebbleServer,
    fake_dns: FakeAuthoritativeDNS,
    route53: Any,
    moto_url: str,
    aiohttp_server: ServerFactory,
) -> None:
    # Reads of a record set are held a moment, so that orders writing the
    # same name would overwrite each other's values if they did not take turns.
    proxy = Route53Proxy(moto_url, read_delay=0.25)
    proxy.url = str((await aiohttp_server(proxy.app())).make_url("")).rstrip("/")
    zone_id = create_zone(route53, "example.com")
    shared = "_acme-challenge.shared.example.com"
    put_txt(route53, zone_id, shared, FOREIGN)
    orders = {
        "shared-1": ["shared.example.com"],
        "shared-2": ["shared.example.com", "a.example.com"],
        "shared-wild": ["*.shared.example.com"],
        "apex-wild": ["example.com", "*.example.com"],
        "other": ["b.example.com"],
        "many": [f"host{i:02d}.example.com" for i in range(12)],
    }

    async with certd.client() as client:
        authenticator = await route53_authenticator(client, proxy.url)
        # CSRs first, so that the orders themselves start together.
        csrs = [await make_csr(client, name, san) for name, san in orders.items()]
        issued = await asyncio.gather(
            *(
                order_certificate(
                    client, dns_pebble.directory_url, authenticator, name, csr, san
                )
                for (name, san), csr in zip(orders.items(), csrs, strict=True)
            )
        )

    for (name, san), cert in zip(orders.items(), issued, strict=True):
        assert cert["name"] == name
        assert sorted(cert["san"]) == sorted(f"DNS:{d}" for d in san)
    # Three orders validated at the shared name, each with its own value.
    at_shared = set().union(*map(set, fake_dns.served_at(shared))) - {FOREIGN}
    assert len(at_shared) == 3
    assert txt_sets(route53, zone_id) == {shared: [f'"{FOREIGN}"']}


# --- Cloudflare ---------------------------------------------------------------


async def cloudflare_authenticator(
    client: Client, name: str, attributes: dict[str, str]
) -> int:
    created = await client.call(
        "acme.dns.authenticator.create",
        {"name": name, "attributes": {"authenticator": "cloudflare", **attributes}},
    )
    return int(created["id"])


def zone_lookups(fake: FakeCloudflare) -> list[tuple[str, int | None]]:
    return [(r.query["name"], r.status) for r in fake.requests if r.path == "/zones"]


def created_records(fake: FakeCloudflare) -> list[tuple[str, str]]:
    """(zone name, record name) of every TXT record certd created."""
    by_id = {zone.id: zone.name for zone in fake.zones.values()}
    return [
        (by_id[r.path.split("/")[2]], r.body["name"])
        for r in fake.requests
        if r.method == "POST" and r.status == 200
    ]


async def test_cloudflare_scoped_token_wildcard_lands_in_its_zone(
    certd: RunningDaemon,
    dns_pebble: PebbleServer,
    fake_dns: FakeAuthoritativeDNS,
    cloudflare: FakeCloudflare,
) -> None:
    cloudflare.add_token("scoped-token", zones=["example.co.uk"])
    record = "_acme-challenge.dev.example.co.uk"

    async with certd.client() as client:
        authenticator = await cloudflare_authenticator(
            client,
            "cf-token",
            {"api_token": "scoped-token", "api_url": cloudflare.base_url},
        )
        cert = await order(
            client,
            dns_pebble.directory_url,
            authenticator,
            "cf-wild",
            ["*.dev.example.co.uk"],
        )

    assert cert["san"] == ["DNS:*.dev.example.co.uk"]
    # The walk goes on past the names the token may not see.
    assert zone_lookups(cloudflare)[:3] == [
        (record, 403),
        ("dev.example.co.uk", 403),
        ("example.co.uk", 200),
    ]
    assert created_records(cloudflare) == [("example.co.uk", record)]
    # certd's check and the CA's validation both saw the value, and only it
    served = fake_dns.served_at(record)
    assert len(served) >= 2 and len(set(served)) == 1 and len(served[0]) == 1
    assert cloudflare.txt_values(record) == []
    assert all(
        r.headers.get("Authorization") == "Bearer scoped-token"
        and "X-Auth-Email" not in r.headers
        and "X-Auth-Key" not in r.headers
        for r in cloudflare.requests
    )


async def test_cloudflare_global_key_picks_the_longest_zone(
    certd: RunningDaemon,
    dns_pebble: PebbleServer,
    fake_dns: FakeAuthoritativeDNS,
    cloudflare: FakeCloudflare,
) -> None:
    cloudflare.add_global_key("admin@example.org", "0123456789abcdef")
    cloudflare.add_record(
        "testexample.org", "TXT", "_acme-challenge.www.testexample.org", FOREIGN
    )

    async with certd.client() as client:
        authenticator = await cloudflare_authenticator(
            client,
            "cf-key",
            {
                "cloudflare_email": "admin@example.org",
                "api_key": "0123456789abcdef",
                "api_url": cloudflare.base_url,
            },
        )
        cert = await order(
            client,
            dns_pebble.directory_url,
            authenticator,
            "cf-two-zones",
            ["www.testexample.org", "a.b.example.org"],
        )

    assert sorted(cert["san"]) == ["DNS:a.b.example.org", "DNS:www.testexample.org"]
    # www.testexample.org is never written to example.org, which is a suffix
    # of the name but not on a label boundary.
    assert sorted(created_records(cloudflare)) == [
        ("example.org", "_acme-challenge.a.b.example.org"),
        ("testexample.org", "_acme-challenge.www.testexample.org"),
    ]
    assert cloudflare.txt_values("_acme-challenge.www.testexample.org") == [FOREIGN]
    assert cloudflare.txt_values("_acme-challenge.a.b.example.org") == []
    assert all(
        r.headers.get("X-Auth-Email") == "admin@example.org"
        and r.headers.get("X-Auth-Key") == "0123456789abcdef"
        and "Authorization" not in r.headers
        for r in cloudflare.requests
    )


# --- propagation through resolvers ----------------------------------------------


async def test_propagation_checked_through_resolvers_only(
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
    rfc2136_attributes: dict[str, Any],
) -> None:
    # Nothing listens on the name servers' port: a check that asked the
    # zone's name servers directly could never see the value.
    config = make_config(
        tmp_path / "state",
        named=named,
        pebble=pebble,
        dns={
            "propagation": "resolvers",
            "nameserver_port": free_port(),
            "propagation_timeout": 3,
        },
    )
    record = "_acme-challenge.resolved.example.test"
    async with running_daemon(config) as certd, certd.client() as client:
        created = await client.call(
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": rfc2136_attributes},
        )
        cert = await order(
            client,
            pebble.directory_url,
            created["id"],
            "resolved",
            ["resolved.example.test"],
        )
        probe = await call_job(
            client, "acme.dns.authenticator.test", created["id"], "probe.example.test"
        )

    assert cert["san"] == ["DNS:resolved.example.test"]
    assert named.query(record) == []
    assert probe["servers"] == {named.address: probe["servers"][named.address]}
    assert probe["servers"][named.address]["seen_after"] is not None


# --- the other REST providers -------------------------------------------------


@dataclass
class RestProvider:
    """A vendor fake served on 127.0.0.1, its authenticator and its DNS view."""

    attributes: dict[str, Any]
    source: RecordSource
    add_foreign: Callable[[str, str], None]


def _owner(fqdn: str, zones: Iterable[str]) -> str | None:
    matches = [z for z in zones if fqdn == z or fqdn.endswith("." + z)]
    return max(matches, key=len) if matches else None


async def _digitalocean(
    serve: Callable[[web.Application], Awaitable[str]],
) -> RestProvider:
    fake = FakeDigitalOcean()
    fake.add_domain(ZONE)
    fake.tokens = {"rw-token": True}
    fake.base_url = await serve(fake.app())

    def txt(fqdn: str) -> list[str]:
        domain = _owner(fqdn, fake.domains)
        if domain is None:
            return []
        relative = "@" if fqdn == domain else fqdn.removesuffix("." + domain)
        return fake.txt(domain, relative)

    return RestProvider(
        {"digitalocean_token": "rw-token", "api_url": fake.base_url},
        CallbackRecords(lambda: list(fake.domains), txt),
        lambda fqdn, value: fake.add_record(
            ZONE, "TXT", fqdn.removesuffix("." + ZONE), value
        ),
    )


async def _powerdns(serve: Callable[[web.Application], Awaitable[str]]) -> RestProvider:
    fake = FakePowerDNS()
    fake.add_zone(ZONE)
    fake.base_url = await serve(fake.app())

    def zones() -> list[str]:
        return [zone.rstrip(".") for zone in fake.zones]

    def txt(fqdn: str) -> list[str]:
        zone = _owner(fqdn, zones())
        rrset = None if zone is None else fake.rrset(zone, fqdn)
        if rrset is None:
            return []
        return [
            parse_txt(record["content"]) or ""
            for record in rrset["records"]
            if not record.get("disabled")
        ]

    return RestProvider(
        {"api_url": fake.base_url, "api_key": fake.api_key},
        CallbackRecords(zones, txt),
        lambda fqdn, value: fake.put_rrset(
            ZONE, fqdn, 300, [{"content": f'"{value}"', "disabled": False}]
        ),
    )


async def _desec(serve: Callable[[web.Application], Awaitable[str]]) -> RestProvider:
    fake = FakeDeSEC()
    fake.add_domain(ZONE)
    fake.base_url = await serve(fake.app())

    def txt(fqdn: str) -> list[str]:
        domain = _owner(fqdn, fake.domains)
        if domain is None:
            return []
        subname = "" if fqdn == domain else fqdn.removesuffix("." + domain)
        return [parse_txt(v) or "" for v in fake.records(domain, subname) or []]

    return RestProvider(
        {"token": fake.token, "api_url": fake.base_url},
        CallbackRecords(lambda: list(fake.domains), txt),
        lambda fqdn, value: fake.put_rrset(
            ZONE, fqdn.removesuffix("." + ZONE), 3600, [f'"{value}"']
        ),
    )


ZONE = "example.net"
REST_PROVIDERS = {
    "digitalocean": _digitalocean,
    "powerdns": _powerdns,
    "desec": _desec,
}


@pytest.mark.parametrize("provider", sorted(REST_PROVIDERS))
async def test_rest_provider_wildcard_and_apex_keep_foreign_value(
    certd: RunningDaemon,
    dns_pebble: PebbleServer,
    fake_dns: FakeAuthoritativeDNS,
    aiohttp_server: ServerFactory,
    provider: str,
) -> None:
    async def serve(app: web.Application) -> str:
        return str((await aiohttp_server(app)).make_url("")).rstrip("/")

    vendor = await REST_PROVIDERS[provider](serve)
    fake_dns.source = vendor.source
    fake_dns.served.clear()
    record = f"_acme-challenge.{ZONE}"
    vendor.add_foreign(record, FOREIGN)

    async with certd.client() as client:
        created = await client.call(
            "acme.dns.authenticator.create",
            {
                "name": provider,
                "attributes": {"authenticator": provider, **vendor.attributes},
            },
        )
        cert = await order(
            client,
            dns_pebble.directory_url,
            created["id"],
            f"{provider}-wild",
            [ZONE, f"*.{ZONE}"],
        )

    assert sorted(cert["san"]) == [f"DNS:*.{ZONE}", f"DNS:{ZONE}"]
    served = [set(values) for values in fake_dns.served_at(record)]
    ours = set.union(*served) - {FOREIGN}
    assert len(ours) == 2
    assert all(values == ours | {FOREIGN} for values in served)
    assert vendor.source.txt(record) == [FOREIGN]


# --- a shell script -----------------------------------------------------------


@pytest.mark.skipif(shutil.which("nsupdate") is None, reason="needs bind9-dnsutils")
async def test_shell_script_driving_nsupdate(
    tmp_path: Path,
    named: NamedServer,
    pebble: PebbleServer,
) -> None:
    key = f"{named.tsig_algorithm}:{named.tsig_name}:{named.tsig_secret}"
    script = tmp_path / "hooks" / "nsupdate-hook"
    script.parent.mkdir(mode=0o700)
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in set) op=add;; unset) op=delete;; *) exit 2;; esac\n'
        "printf 'server %s %s\\nzone %s\\nupdate %s %s. 60 IN TXT \"%s\"\\nsend\\n' "
        f'{named.host} {named.port} "$CERTD_ZONE" "$op" "$2" "$3" '
        f"| nsupdate -y {key}\n"
    )
    script.chmod(0o700)
    config = make_config(tmp_path / "state", named=named, pebble=pebble)
    record = "_acme-challenge.scripted.example.test"
    named.add_txt(record, FOREIGN)
    try:
        async with running_daemon(config) as certd, certd.client() as client:
            created = await client.call(
                "acme.dns.authenticator.create",
                {
                    "name": "script",
                    "attributes": {"authenticator": "shell", "script": str(script)},
                },
            )
            cert = await order(
                client,
                pebble.directory_url,
                created["id"],
                "scripted",
                ["scripted.example.test", "*.scripted.example.test"],
            )
        assert sorted(cert["san"]) == [
            "DNS:*.scripted.example.test",
            "DNS:scripted.example.test",
        ]
        assert named.query(record) == [FOREIGN]
    finally:
        named.delete_txt(record, FOREIGN)
