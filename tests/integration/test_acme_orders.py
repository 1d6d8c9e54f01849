"""ACME orders through the daemon when the CA misbehaves, and chain preference.

A proxy in front of pebble answers chosen requests with problem documents
(``badNonce``, ``rateLimited``) and records every exchange, so the tests can
tell what the daemon sent, in which order and with which nonce.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from certd.acme.client import AcmeClient
from certd.client import Client, RpcError
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.fakes.acme_proxy import (
    BAD_NONCE,
    RATE_LIMITED,
    AcmeProxy,
    Exchange,
    serve_acme_proxy,
)
from tests.fakes.dns_server import StaticRecords, serve_dns
from tests.integration.orders import order
from tests.testbed import NamedServer, PebbleServer, start_pebble

FOREIGN = "someone-elses-value"


@pytest.fixture
async def proxy(pebble: PebbleServer) -> AsyncIterator[AcmeProxy]:
    async with serve_acme_proxy(pebble) as served:
        yield served


async def bind_authenticator(client: Client, attributes: dict[str, Any]) -> int:
    created = await client.call(
        "acme.dns.authenticator.create", {"name": "bind", "attributes": attributes}
    )
    return int(created["id"])


# --- nonces -------------------------------------------------------------------


async def test_first_nonce_rejected_is_retried_with_the_fresh_one(
    certd: RunningDaemon,
    proxy: AcmeProxy,
    rfc2136_attributes: dict[str, Any],
) -> None:
    proxy.reject_nonces(1)

    async with certd.client() as client:
        authenticator = await bind_authenticator(client, rfc2136_attributes)
        cert = await order(
            client, proxy.directory_url, authenticator, "nonce", ["nonce.example.test"]
        )

    assert cert["san"] == ["DNS:nonce.example.test"]
    first, retried, *rest = proxy.signed_posts()
    assert first.injected and first.status == 400
    assert first.reply["type"] == BAD_NONCE
    # The same request again, signed with the nonce the error carried.
    assert (retried.path, retried.injected) == (first.path, False)
    assert retried.nonce == first.handed_nonce != first.nonce
    assert retried.status == 201  # the account was created
    assert not any(e.injected for e in rest)


async def test_a_challenge_answered_valid_leaves_its_authorization_unpolled(
    certd: RunningDaemon,
    proxy: AcmeProxy,
    rfc2136_attributes: dict[str, Any],
) -> None:
    proxy.challenges_answer_valid = True

    async with certd.client() as client:
        authenticator = await bind_authenticator(client, rfc2136_attributes)
        cert = await order(
            client,
            proxy.directory_url,
            authenticator,
            "at-once",
            ["at-once.example.test"],
        )

    assert cert["san"] == ["DNS:at-once.example.test"]
    # No poll is left counted once the order is done (the first waits of
    # later polls grow with this count).
    assert AcmeClient.polling == 0
    posts = proxy.signed_posts()
    answered = [
        n
        for n, e in enumerate(posts)
        if isinstance(e.reply, dict) and e.reply.get("type") == "dns-01"
    ]
    assert len(answered) == 1
    authz = {e.path for e in posts if "/authZ/" in e.path}
    after = [e.path for e in posts[answered[0] + 1 :]]
    # The authorization was read once, before the answer, and not polled.
    assert len(authz) == 1
    assert not authz & set(after)
    assert any("/finalize-order/" in path for path in after)


async def test_every_nonce_rejected_fails_after_four_tries(
    certd: RunningDaemon,
    proxy: AcmeProxy,
    rfc2136_attributes: dict[str, Any],
) -> None:
    proxy.reject_nonces(100)

    async with certd.client() as client:
        authenticator = await bind_authenticator(client, rfc2136_attributes)
        with pytest.raises(RpcError) as caught:
            await order(
                client,
                proxy.directory_url,
                authenticator,
                "no-nonce",
                ["no-nonce.example.test"],
            )

    error = caught.value
    assert "account registration failed: the CA rejected 4 nonces in a row" in (
        error.message
    )
    assert error.data["problem_type"] == BAD_NONCE
    assert error.data["retryable"] is True
    tries = proxy.signed_posts()
    assert len(tries) == 4 and proxy.nonces_to_reject == 96
    assert len({t.path for t in tries}) == 1
    # each retry used the nonce handed back by the rejection before it
    assert [t.nonce for t in tries[1:]] == [t.handed_nonce for t in tries[:-1]]


# --- rate limits --------------------------------------------------------------


async def test_rate_limit_surfaces_retry_after_and_is_not_hammered(
    certd: RunningDaemon,
    named: NamedServer,
    proxy: AcmeProxy,
    rfc2136_attributes: dict[str, Any],
) -> None:
    new_order = await proxy.resource_path("newOrder")
    detail = "too many new orders for example.test in the last 3 hours"
    proxy.fail_next(
        new_order,
        status=429,
        problem_type=RATE_LIMITED,
        detail=detail,
        retry_after="3600",
    )

    async with certd.client() as client:
        authenticator = await bind_authenticator(client, rfc2136_attributes)
        with pytest.raises(RpcError) as caught:
            await order(
                client,
                proxy.directory_url,
                authenticator,
                "limited",
                ["limited.example.test"],
            )

    error = caught.value
    assert detail in error.message
    assert error.data["problem_type"] == RATE_LIMITED
    assert error.data["retry_after"] == 3600.0
    assert error.data["retryable"] is True
    assert [e.status for e in proxy.exchanges if e.path == new_order] == [429]
    assert named.query("_acme-challenge.limited.example.test") == []


# --- invalid authorizations ---------------------------------------------------


@pytest.fixture(scope="module")
def blind_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A pebble whose DNS knows example.test but none of the values we write."""
    with serve_dns(StaticRecords({"example.test"})) as dns_server:
        with start_pebble(tmp_path_factory.mktemp("blind"), dns_server.port) as p:
            yield p


@pytest.fixture
async def blind_proxy(blind_pebble: PebbleServer) -> AsyncIterator[AcmeProxy]:
    async with serve_acme_proxy(blind_pebble) as served:
        yield served


@pytest.fixture
async def certd_blind(
    tmp_path: Path, named: NamedServer, blind_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    config = make_config(tmp_path / "state", named=named, pebble=blind_pebble)
    async with running_daemon(config) as daemon:
        yield daemon


def _after(exchanges: list[Exchange], first: Exchange) -> list[Exchange]:
    return exchanges[exchanges.index(first) + 1 :]


async def test_invalid_authorization_is_not_polled_again_and_next_try_orders_anew(
    certd_blind: RunningDaemon,
    named: NamedServer,
    blind_proxy: AcmeProxy,
    rfc2136_attributes: dict[str, Any],
) -> None:
    domain = "refused.example.test"
    record = f"_acme-challenge.{domain}"
    named.add_txt(record, FOREIGN)
    new_order = await blind_proxy.resource_path("newOrder")
    try:
        async with certd_blind.client() as client:
            authenticator = await bind_authenticator(client, rfc2136_attributes)
            errors: list[RpcError] = []
            for attempt in range(2):
                with pytest.raises(RpcError) as caught:
                    await order(
                        client,
                        blind_proxy.directory_url,
                        authenticator,
                        f"refused-{attempt}",
                        [domain],
                    )
                errors.append(caught.value)
                assert named.query(record) == [FOREIGN]
    finally:
        named.delete_txt(record, FOREIGN)

    exchanges = blind_proxy.exchanges
    orders = [e for e in exchanges if e.path == new_order and e.status == 201]
    assert len(orders) == 2
    assert orders[0].location != orders[1].location  # a new order, not the old one
    authz_urls = [o.reply["authorizations"] for o in orders]
    assert len(authz_urls[0]) == 1 and authz_urls[0] != authz_urls[1]

    for made, urls, error in zip(orders, authz_urls, errors, strict=True):
        authz_path = urls[0].split("://", 1)[1].split("/", 1)[1]
        polls = [e for e in exchanges if e.path == "/" + authz_path]
        statuses = [p.reply["status"] for p in polls]
        # polled until it turned invalid, and never after that
        assert statuses[-1] == "invalid"
        assert set(statuses[:-1]) <= {"pending"}
        invalid = polls[-1]
        assert made.location is not None
        order_path = "/" + made.location.split("://", 1)[1].split("/", 1)[1]
        assert not [e for e in _after(exchanges, invalid) if e.path == order_path]
        # the error names the domain, the challenge and the CA's own detail
        problem = next(
            c["error"] for c in invalid.reply["challenges"] if c["type"] == "dns-01"
        )
        assert domain in error.message
        assert "dns-01 challenge failed" in error.message
        assert problem["detail"] in error.message
        assert error.data["problem_type"] == problem["type"]
        assert error.data["domain"] == domain


# --- preferred chain ----------------------------------------------------------


@pytest.fixture(scope="module")
def alternate_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """A pebble that offers every certificate under a second root as well."""
    with start_pebble(
        tmp_path_factory.mktemp("alternate"),
        named.port,
        env={"PEBBLE_ALTERNATE_ROOTS": "1"},
    ) as server:
        yield server


@pytest.fixture
async def certd_alternate(
    tmp_path: Path, named: NamedServer, alternate_pebble: PebbleServer
) -> AsyncIterator[RunningDaemon]:
    config = make_config(tmp_path / "state", named=named, pebble=alternate_pebble)
    async with running_daemon(config) as daemon:
        yield daemon


def _common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def top_issuer(fullchain: str) -> str:
    """The issuer CN of the topmost certificate of a PEM chain."""
    return _common_name(x509.load_pem_x509_certificates(fullchain.encode())[-1].issuer)


async def test_preferred_chain_is_chosen_and_kept_on_renewal(
    certd_alternate: RunningDaemon,
    alternate_pebble: PebbleServer,
    rfc2136_attributes: dict[str, Any],
) -> None:
    roots = [
        _common_name(
            x509.load_pem_x509_certificate(
                alternate_pebble.root_pem(i).encode()
            ).subject
        )
        for i in (0, 1)
    ]
    assert roots[0] != roots[1]
    directory = alternate_pebble.directory_url

    async with certd_alternate.client() as client:
        authenticator = await bind_authenticator(client, rfc2136_attributes)
        default = await order(
            client, directory, authenticator, "default", ["default.example.test"]
        )
        preferred = await order(
            client,
            directory,
            authenticator,
            "preferred",
            ["preferred.example.test"],
            preferred_chain=roots[1],
        )
        unknown = await order(
            client,
            directory,
            authenticator,
            "unknown",
            ["unknown.example.test"],
            preferred_chain="No Such Root CA",
        )
        assert top_issuer(default["certificate"]) == roots[0]
        assert top_issuer(preferred["certificate"]) == roots[1]
        assert top_issuer(unknown["certificate"]) == roots[0]

        await call_job(client, "certificate.renew", preferred["id"])
        renewed = await client.call("certificate.get_instance", preferred["id"])

    assert renewed["serial"] != preferred["serial"]
    assert top_issuer(renewed["certificate"]) == roots[1]
