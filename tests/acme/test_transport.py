"""Transport details pebble does not exercise: Retry-After, Link, problem mapping."""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable

import aiohttp
import josepy
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certd.acme import AcmeClient, PollPolicy
from certd.acme.transport import (
    Reply,
    _parse_links,
    problem_error,
    signature_algorithm,
)
from certd.errors import AcmeError
from certd.retry_after import parse_retry_after

NOW = datetime.datetime(2026, 12, 4, 15, 0, 0, tzinfo=datetime.UTC)

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


def test_parse_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Fri, 04 Dec 2026 15:01:30 GMT", NOW) == 90.0
    assert parse_retry_after("Fri, 04 Dec 2026 14:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_parse_links_resolves_and_splits_rels() -> None:
    header = (
        '</cert/1/alternate/1>;rel="alternate", '
        '<https://ca.test/dir>; rel="index", <../up>; rel="up next"'
    )

    assert _parse_links(header, "https://ca.test/cert/1") == [
        ("alternate", "https://ca.test/cert/1/alternate/1"),
        ("index", "https://ca.test/dir"),
        ("up", "https://ca.test/up"),
        ("next", "https://ca.test/up"),
    ]


def test_signature_algorithm_by_key_type() -> None:
    p256 = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    p384 = josepy.JWKEC(key=ec.generate_private_key(ec.SECP384R1()))
    rsa_key = josepy.JWKRSA(key=rsa.generate_private_key(65537, 2048))

    assert signature_algorithm(p256) is josepy.ES256
    assert signature_algorithm(p384) is josepy.ES384
    assert signature_algorithm(rsa_key) is josepy.RS256
    with pytest.raises(AcmeError, match="must be an RSA key or an EC private key"):
        signature_algorithm(p256.public_key())


def problem_reply(status: int, problem: dict[str, object], **headers: str) -> Reply:
    return Reply(
        url="https://ca.test/new-order",
        status=status,
        headers=headers,
        body=json.dumps(problem).encode(),
    )


def test_problem_error_rate_limited_is_retryable_with_retry_after() -> None:
    reply = problem_reply(
        429,
        {
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many certificates for example.test",
        },
        **{"Retry-After": "3600"},
    )

    error = problem_error(reply, "new order")

    assert error.message == (
        "new order failed: too many certificates for example.test (rateLimited)"
    )
    assert error.retryable
    assert error.retry_after == 3600.0


def test_problem_error_lists_subproblems_with_identifiers() -> None:
    reply = problem_reply(
        400,
        {
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "some identifiers were rejected",
            "subproblems": [
                {
                    "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                    "detail": "forbidden by policy",
                    "identifier": {"type": "dns", "value": "bad.example.test"},
                }
            ],
        },
    )

    error = problem_error(reply, "new order")

    assert error.message == (
        "new order failed: some identifiers were rejected (rejectedIdentifier); "
        "bad.example.test: forbidden by policy (rejectedIdentifier)"
    )
    assert not error.retryable


def test_problem_error_without_problem_document() -> None:
    reply = Reply(url="https://ca.test/x", status=502, headers={}, body=b"<html>")

    error = problem_error(reply, "polling")

    assert (
        error.message == "polling failed: the CA answered HTTP 502 at https://ca.test/x"
    )
    assert error.retryable
    assert error.problem_type is None


def test_poll_wait_honours_retry_after_up_to_deadline() -> None:
    policy = PollPolicy(initial=0.02, factor=1.5, maximum=2.0, timeout=300)

    assert policy.next_interval(0.02) == pytest.approx(0.03)
    assert policy.next_interval(1.9) == 2.0
    assert policy.wait(0.5, None, 100.0) == 0.5
    assert policy.wait(0.5, 30.0, 100.0) == 30.0
    assert policy.wait(0.5, 300.0, 100.0) == 100.0
    assert policy.wait(0.5, None, -1.0) == 0.0


def test_the_first_wait_grows_with_the_polls_under_way() -> None:
    policy = PollPolicy(initial=0.005, factor=1.5, maximum=2.0, timeout=300)

    assert policy.first_interval(0) == policy.first_interval(1) == 0.005
    assert policy.first_interval(50) == pytest.approx(0.25)
    assert policy.first_interval(10_000) == 2.0


def overloaded_ca() -> web.Application:
    """A directory whose newAccount answers 503 with a Retry-After date."""

    async def directory(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.json_response(
            {
                "newNonce": f"{base}/nonce",
                "newAccount": f"{base}/account",
                "newOrder": f"{base}/order",
            }
        )

    async def nonce(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"Replay-Nonce": "bm9uY2U"})

    async def account(request: web.Request) -> web.Response:
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return web.Response(
            status=503,
            content_type="application/problem+json",
            headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")},
            text=json.dumps(
                {
                    "type": "urn:ietf:params:acme:error:serverInternal",
                    "detail": "down for maintenance",
                }
            ),
        )

    app = web.Application()
    app.router.add_get("/dir", directory)
    app.router.add_route("HEAD", "/nonce", nonce)
    app.router.add_post("/account", account)
    return app


async def test_unavailable_ca_error_is_retryable_with_delay(
    aiohttp_server: ServerFactory,
) -> None:
    server = await aiohttp_server(overloaded_ca())
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))

    async with aiohttp.ClientSession() as http:
        acme = await AcmeClient.open(str(server.make_url("/dir")), key, session=http)
        with pytest.raises(AcmeError) as caught:
            await acme.register(contact_email=None, terms_of_service_agreed=True)

    assert caught.value.message == (
        "account registration failed: down for maintenance (serverInternal)"
    )
    assert caught.value.retryable
    assert caught.value.retry_after is not None
    assert 3500 < caught.value.retry_after <= 3600


async def test_unreachable_ca_is_retryable(unused_tcp_port: int) -> None:
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    url = f"http://127.0.0.1:{unused_tcp_port}/dir"

    async with aiohttp.ClientSession() as http:
        with pytest.raises(AcmeError) as caught:
            await AcmeClient.open(url, key, session=http)

    assert caught.value.message.startswith(f"cannot reach the ACME server at {url}: ")
    assert caught.value.retryable
