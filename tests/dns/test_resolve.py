"""CNAME following, name server discovery and propagation waits against BIND."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from certd.dns.resolve import (
    PropagationSettings,
    authoritative_servers,
    follow_cname,
    wait_for_txt,
)
from certd.errors import DNSLookupError, DNSPropagationError
from tests.dns.conftest import unique_label
from tests.testbed import NamedServer


def add_cname(named: NamedServer, name: str, target: str) -> None:
    named.update(named.zone_of(name), add=[(name + ".", "CNAME", target + ".")])


async def test_follow_cname_without_cname_returns_name(
    propagation: PropagationSettings,
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"

    assert await follow_cname(name + ".", propagation) == name


async def test_follow_cname_chain_across_zones(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    label = unique_label()
    start = f"_acme-challenge.{label}.example.test"
    middle = f"{label}-hop.example.test"
    end = f"{label}.acme.example.org.test"
    add_cname(named, start, middle)
    add_cname(named, middle, end)

    assert await follow_cname(start, propagation) == end


async def test_follow_cname_loop_is_named(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    label = unique_label()
    first = f"_acme-challenge.{label}.example.test"
    second = f"{label}.example.org.test"
    add_cname(named, first, second)
    add_cname(named, second, first)

    with pytest.raises(DNSLookupError) as caught:
        await follow_cname(first, propagation)
    assert (
        str(caught.value) == f"CNAME loop at {second}: {first} -> {second} -> {first}"
    )


async def test_authoritative_servers_use_configured_port(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    assert await authoritative_servers("example.test", propagation) == [
        ("127.0.0.1", named.port)
    ]


async def test_authoritative_servers_of_unknown_zone_fail(
    propagation: PropagationSettings,
) -> None:
    with pytest.raises(DNSLookupError, match=r"NS records of example\.net"):
        await authoritative_servers("example.net", propagation)


async def test_wait_for_txt_sees_every_value(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"
    named.add_txt(name, "one")
    named.add_txt(name, "two")

    result = await wait_for_txt("example.test", name, {"one", "two"}, propagation)

    server = f"127.0.0.1:{named.port}"
    assert set(result["servers"]) == {server}
    assert result["servers"][server]["queries"] >= 1
    assert result["servers"][server]["seen_after"] is not None
    assert (result["zone"], result["fqdn"], result["mode"]) == (
        "example.test",
        name,
        "authoritative",
    )


async def test_wait_for_txt_waits_for_a_late_value(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"
    waiting = asyncio.create_task(
        wait_for_txt("example.test", name, {"late"}, propagation)
    )
    await asyncio.sleep(0.2)
    await asyncio.to_thread(named.add_txt, name, "late")

    result = await waiting

    assert result["servers"][f"127.0.0.1:{named.port}"]["seen_after"] is not None


async def test_wait_for_txt_in_resolver_mode(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.org.test"
    named.add_txt(name, "via-resolver")
    settings = dataclasses.replace(propagation, mode="resolvers")

    result = await wait_for_txt("example.org.test", name, {"via-resolver"}, settings)

    assert list(result["servers"]) == [f"127.0.0.1:{named.port}"]


async def test_wait_for_txt_timeout_names_server_and_gap(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"
    named.add_txt(name, "present")
    settings = dataclasses.replace(propagation, timeout=0.3)

    with pytest.raises(DNSPropagationError) as caught:
        await wait_for_txt("example.test", name, {"present", "absent"}, settings)

    server = f"127.0.0.1:{named.port}"
    assert caught.value.servers == (server,)
    assert caught.value.fqdn == name
    assert f"on {server} (missing 1 of 2 values)" in str(caught.value)
    assert caught.value.retryable is True


async def test_wait_for_txt_timeout_reports_nxdomain(
    named: NamedServer, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"
    settings = dataclasses.replace(propagation, timeout=0.2)

    with pytest.raises(DNSPropagationError) as caught:
        await wait_for_txt("example.test", name, {"never"}, settings)

    assert "(missing 1 of 1 values, last answer: NXDOMAIN)" in str(caught.value)
