"""probe_provider: the full write, wait, remove cycle against BIND."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from certd.dns.probe import probe_provider
from certd.dns.resolve import PropagationSettings
from certd.dns.rfc2136 import RFC2136Provider
from certd.errors import DNSPropagationError
from tests.dns.conftest import unique_label
from tests.testbed import NamedServer, free_port

MakeProvider = Callable[..., RFC2136Provider]


async def test_probe_reports_steps_and_cleans_up(
    named: NamedServer, make_rfc2136: MakeProvider, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"

    result = await probe_provider(make_rfc2136(), name, propagation)

    assert (result["fqdn"], result["target"], result["zone"]) == (
        name,
        name,
        "example.test",
    )
    assert set(result["timings"]) == {
        "follow_cname",
        "find_zone",
        "add_txt",
        "propagation",
        "remove_txt",
    }
    assert list(result["servers"]) == [f"127.0.0.1:{named.port}"]
    assert named.query(name) == []


async def test_probe_writes_at_cname_target(
    named: NamedServer, make_rfc2136: MakeProvider, propagation: PropagationSettings
) -> None:
    label = unique_label()
    name = f"_acme-challenge.{label}.example.test"
    target = f"{label}.challenges.example.org.test"
    named.update("example.test", add=[(name + ".", "CNAME", target + ".")])

    result = await probe_provider(make_rfc2136(), name, propagation)

    assert (result["target"], result["zone"]) == (target, "example.org.test")


async def test_probe_removes_value_when_propagation_fails(
    named: NamedServer, make_rfc2136: MakeProvider, propagation: PropagationSettings
) -> None:
    name = f"_acme-challenge.{unique_label()}.example.test"
    # the provider writes to BIND but the check asks a port nobody serves
    settings = dataclasses.replace(
        propagation, nameserver_port=free_port(), timeout=0.2, query_timeout=0.1
    )

    with pytest.raises(DNSPropagationError):
        await probe_provider(make_rfc2136(), name, settings)

    assert named.query(name) == []
