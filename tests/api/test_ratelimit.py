"""Failed authentication is limited per API key and address, and per address."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from certd.api.auth import _lookup
from certd.api.ratelimit import (
    ADDRESS_FACTOR,
    LOOPBACK,
    MAX_PROVEN,
    TOO_MANY_FAILURES,
    UNPARSEABLE,
    AuthFailureLimiter,
    Refusal,
    counted_address,
    refusal_message,
    row_key,
    token_key,
)
from tests.daemon import RunningDaemon, make_config, running_daemon
from tests.websocket.client import CallFailed, connect
from tests.websocket.conftest import make_key, ws_url
from tests.websocket.scram_client import ScramClient

PING = {"jsonrpc": "2.0", "method": "core.ping", "id": 1}
BURST = 3
REFILL = 3600.0
ADDRESS_BURST = BURST * ADDRESS_FACTOR


# The limiter on its own, with time as a parameter.


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("certd_abc123def456_secret", "key_id=abc123def456"),
        ("certd_abc123def456_sec_ret", "key_id=abc123def456"),
        ("certd_" + "a" * 100 + "_s", "key_id=" + "a" * 64),
        ("2-secret", "id=2"),
        ("0002-sec-ret", "id=2"),
        ("\u0662-secret", UNPARSEABLE),
        (f"{2**63}-secret", UNPARSEABLE),
        ("0-secret", UNPARSEABLE),
        ("2-sec ret", UNPARSEABLE),
        ("\u00b2-secret", UNPARSEABLE),
        ("2-", UNPARSEABLE),
        ("certd__secret", UNPARSEABLE),
        ("not-a-key", UNPARSEABLE),
        ("secret", UNPARSEABLE),
        ("1" * 5000 + "-secret", UNPARSEABLE),
    ],
)
def test_token_key_names_the_key_a_token_would_be_checked_against(
    token: str, expected: str
) -> None:
    assert token_key(token) == expected
    if len(token) > 1000:
        return
    # The same reading as the store lookup's, which cannot take the long one.
    found = _lookup(token)
    if expected == UNPARSEABLE:
        # Row ids that cannot exist are looked up, and not found, in the store.
        assert found is None or (found[0] == "id" and row_key(found[1]) == expected)
    else:
        assert found is not None
        assert f"{found[0]}={found[1]}"[: len("key_id=") + 64] == expected


def test_row_key_is_the_key_named_by_its_row_id() -> None:
    assert row_key(7) == "id=7" == token_key("7-secret")
    assert row_key(0) == UNPARSEABLE


def test_a_key_bucket_allows_a_burst_then_one_attempt_per_refill() -> None:
    limiter = AuthFailureLimiter(burst=3, refill_seconds=10)

    failures = [limiter.failed("a", "id=1", 0) for _ in range(3)]

    assert failures == [None, None, Refusal("key", "id=1", 10.0)]
    assert limiter.refusal("a", "id=1", 0) == Refusal("key", "id=1", 10.0)
    refused = limiter.refusal("a", "id=1", 4)
    assert refused is not None and refused.wait == pytest.approx(6)
    # Other keys from the same address, and the same key elsewhere, may try.
    assert limiter.refusal("a", "id=2", 4) is None
    assert limiter.refusal("a", UNPARSEABLE, 4) is None
    assert limiter.refusal("b", "id=1", 4) is None
    assert limiter.refusal("a", "id=1", 10) is None
    assert limiter.failed("a", "id=1", 10) == Refusal("key", "id=1", 10.0)
    # A long pause refills the bucket up to the burst, never beyond it.
    refilled = [limiter.failed("a", "id=1", 1000) for _ in range(3)]
    assert refilled == [None, None, Refusal("key", "id=1", 10.0)]


def test_the_address_bucket_slows_a_sweep_over_many_key_ids() -> None:
    limiter = AuthFailureLimiter(burst=2, refill_seconds=10)
    assert limiter.address_burst == 2 * ADDRESS_FACTOR
    assert limiter.address_refill_seconds == 10 / ADDRESS_FACTOR

    failures = [limiter.failed("a", f"id={n}", 0) for n in range(limiter.address_burst)]

    assert failures[:-1] == [None] * (limiter.address_burst - 1)
    last = f"id={limiter.address_burst - 1}"
    assert failures[-1] == Refusal("address", last, 10 / ADDRESS_FACTOR)
    assert limiter.refusal("a", "id=999", 0) == Refusal("address", "id=999", 2.0)
    assert limiter.refusal("a", UNPARSEABLE, 0) == Refusal("address", UNPARSEABLE, 2.0)
    assert limiter.refusal("b", "id=999", 0) is None
    # The address regains a token ADDRESS_FACTOR times as fast as a key does.
    assert limiter.refusal("a", "id=999", 2) is None


def test_a_key_that_authenticated_answers_only_to_its_own_bucket() -> None:
    limiter = AuthFailureLimiter(burst=2, refill_seconds=10)
    limiter.succeeded("a", "id=1", 0)
    limiter.succeeded("a", UNPARSEABLE, 0)
    for n in range(limiter.address_burst):
        limiter.failed("a", f"key_id={n}", 0)

    assert limiter.refusal("a", "key_id=new", 0) is not None
    assert limiter.refusal("a", UNPARSEABLE, 0) is not None
    assert limiter.refusal("a", "id=1", 0) is None
    # Guessing the proven key's secret still meets the key's own bucket.
    assert limiter.failed("a", "id=1", 0) is None
    assert limiter.failed("a", "id=1", 0) == Refusal("key", "id=1", 10.0)
    assert limiter.refusal("a", "id=1", 0) == Refusal("key", "id=1", 10.0)
    # From another address the key has proven nothing.
    sweep = [limiter.failed("b", f"key_id={n}", 0) for n in range(10)]
    assert sweep[-1] == Refusal("address", "key_id=9", 2.0)
    assert limiter.refusal("b", "id=1", 0) == Refusal("address", "id=1", 2.0)


def test_with_both_buckets_empty_the_longer_wait_is_given() -> None:
    limiter = AuthFailureLimiter(burst=2, refill_seconds=10)
    for n in range(limiter.address_burst - 2):
        limiter.failed("a", f"id={n + 100}", 0)
    assert limiter.failed("a", "id=1", 0) is None
    # This failure empties both: the key's (10 s to a token) and the address's
    # (2 s); the key may be tried again once both have a token.
    assert limiter.failed("a", "id=1", 0) == Refusal("key", "id=1", 10.0)
    assert limiter.refusal("a", "id=1", 0) == Refusal("key", "id=1", 10.0)
    assert limiter.refusal("a", "id=2", 0) == Refusal("address", "id=2", 2.0)
    assert limiter.refusal("a", "id=1", 5) == Refusal("key", "id=1", 5.0)
    assert limiter.refusal("a", "id=2", 5) is None


def test_the_table_forgets_the_least_recently_seen_buckets() -> None:
    limiter = AuthFailureLimiter(burst=1, refill_seconds=60, max_tracked=4)
    sizes = []
    for n in range(20):
        limiter.failed(f"10.0.0.{n}", f"id={n}", 0)
        limiter.succeeded("10.0.1.1", f"id={n}", 0)
        sizes.append(len(limiter))

    assert max(sizes) == 4
    assert limiter.refusal("10.0.0.0", "id=0", 1) is None
    kept = limiter.refusal("10.0.0.19", "id=19", 1)
    assert kept is not None and kept.bucket == "key"
    assert kept.wait == pytest.approx(59)


def test_refusal_messages_say_which_attempts_were_too_many() -> None:
    assert refusal_message("127.0.0.1", Refusal("address", "id=2", 0.2)) == (
        "Too many failed authentication attempts from 127.0.0.1; try again in 1 s"
    )
    assert refusal_message("::1", Refusal("key", "id=2", 59.5)) == (
        "Too many failed authentication attempts from ::1 for API key id=2; "
        "try again in 60 s"
    )
    assert refusal_message("::1", Refusal("key", UNPARSEABLE, 3)) == (
        "Too many failed authentication attempts from ::1 with malformed API "
        "keys; try again in 3 s"
    )


# A real daemon on 127.0.0.1, where every local client shares one address.


def test_every_loopback_source_counts_as_one_address() -> None:
    for address in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "::ffff:127.0.0.3"):
        assert counted_address(address) == LOOPBACK
    assert counted_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert counted_address("fe80::1%eth0") == "fe80::1"
    assert counted_address("uid:1000") == "uid:1000"

    limiter = AuthFailureLimiter(burst=2, refill_seconds=REFILL)
    limiter.failed("127.0.0.2", "id=4", 0.0)
    limiter.failed("127.0.0.3", "id=4", 0.0)
    refused = limiter.refusal("127.0.0.4", "id=4", 1.0)
    assert refused is not None and refused.bucket == "key"
    assert limiter.refusal("192.0.2.1", "id=4", 1.0) is None


def test_proven_tokens_are_remembered_by_digest_and_forgotten_on_failure() -> None:
    limiter = AuthFailureLimiter(burst=2, refill_seconds=REFILL)
    assert not limiter.proven("certd_abc_secret")
    limiter.prove("certd_abc_secret")
    assert limiter.proven("certd_abc_secret")
    assert not limiter.proven("certd_abc_other")
    assert "secret" not in repr(limiter._proven)
    limiter.disprove("certd_abc_secret")
    assert not limiter.proven("certd_abc_secret")
    # Bounded: the least recently used proof goes first.
    for n in range(MAX_PROVEN + 1):
        limiter.prove(f"token-{n}")
    assert not limiter.proven("token-0")
    assert limiter.proven("token-1") and limiter.proven(f"token-{MAX_PROVEN}")


async def test_turns_are_taken_one_at_a_time_and_leave_no_table_behind() -> None:
    limiter = AuthFailureLimiter(burst=2, refill_seconds=REFILL)
    inside: list[int] = []
    most = 0

    async def attempt(address: str) -> None:
        nonlocal most
        async with limiter.turn(address):
            inside.append(1)
            most = max(most, len(inside))
            await asyncio.sleep(0.001)
            inside.pop()

    await asyncio.gather(*(attempt(f"127.0.0.{n % 3 + 1}") for n in range(20)))
    assert most == 1
    assert limiter._turns == {}


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    config = make_config(
        tmp_path / "state",
        server={"auth_failure_burst": BURST, "auth_failure_refill_seconds": REFILL},
    )
    async with running_daemon(config) as running:
        yield running


async def post(
    running: RunningDaemon, authorization: str
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, reply) of a core.ping with this Authorization header."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{running.url}/rpc", json=PING, headers={"Authorization": authorization}
        ) as response:
            return response.status, dict(response.headers), await response.json()


def assert_refused(
    reply: tuple[int, dict[str, str], Any], *, saying: str
) -> dict[str, Any]:
    status, headers, body = reply
    assert status == 429
    assert body["error"]["code"] == TOO_MANY_FAILURES
    assert body["error"]["data"]["type"] == "RateLimited"
    message = body["error"]["message"]
    assert message.startswith(f"Too many failed authentication attempts {saying}; ")
    seconds = headers["Retry-After"]
    assert 0 < int(seconds) <= REFILL
    assert message.endswith(f"try again in {seconds} s")
    return body


async def test_wrong_secrets_for_one_key_do_not_lock_out_another(
    limited: RunningDaemon,
) -> None:
    _, key_a = await limited.daemon.api_keys.create("a")
    _, key_b = await limited.daemon.api_keys.create("b")
    key_id_a = key_a.split("_")[1]
    guesses = [f"certd_{key_id_a}_guess{n}" for n in range(BURST + 2)]

    with capture_logs() as logs:
        replies = [await post(limited, f"Bearer {guess}") for guess in guesses]
        with_b = await post(limited, f"Bearer {key_b}")
        with_a = await post(limited, f"Bearer {key_a}")
        with_first_key = await post(limited, f"Bearer {limited.api_key}")

    assert [status for status, _, _ in replies] == [401] * BURST + [429, 429]
    for reply in replies[BURST:]:
        assert_refused(reply, saying=f"from 127.0.0.1 for API key key_id={key_id_a}")
    assert with_b[0] == 200 and with_b[2]["result"] == "pong"
    assert with_first_key[2]["result"] == "pong"
    # Key A's own bucket refuses whatever the secret: a guesser learns nothing.
    assert_refused(with_a, saying=f"from 127.0.0.1 for API key key_id={key_id_a}")
    failed = [e for e in logs if e["event"] == "authentication_failed"]
    assert len(failed) == BURST
    assert {e["key_ref"] for e in failed} == {f"key_id={key_id_a}"}
    (limited_event,) = [e for e in logs if e["event"] == "authentication_rate_limited"]
    assert limited_event["bucket"] == "key"
    assert limited_event["key_ref"] == f"key_id={key_id_a}"
    assert limited_event["remote"] == "127.0.0.1"
    logged = repr(logs)
    for secret in [*guesses, key_a, key_b]:
        assert secret.split("_")[2] not in logged


async def test_malformed_keys_do_not_lock_out_a_valid_key(
    limited: RunningDaemon,
) -> None:
    headers = ["Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer 1-two words"]
    replies = [await post(limited, h) for h in [*headers, "Bearer 12345"]]

    assert [status for status, _, _ in replies] == [401] * BURST + [429]
    assert_refused(replies[-1], saying="from 127.0.0.1 with malformed API keys")
    status, _, body = await post(limited, f"Bearer {limited.api_key}")
    assert status == 200 and body["result"] == "pong"


async def test_a_sweep_over_many_key_ids_meets_the_address_bucket(
    limited: RunningDaemon,
) -> None:
    _, proven = await limited.daemon.api_keys.create("in-use")
    _, unused = await limited.daemon.api_keys.create("not-used-yet")
    assert (await post(limited, f"Bearer {proven}"))[0] == 200

    with capture_logs() as logs:
        sweep = [
            await post(limited, f"Bearer certd_{n:012x}_guess")
            for n in range(ADDRESS_BURST + 1)
        ]
        with_unused = await post(limited, f"Bearer {unused}")
        with_proven = await post(limited, f"Bearer {proven}")

    assert [status for status, _, _ in sweep] == [401] * ADDRESS_BURST + [429]
    assert_refused(sweep[-1], saying="from 127.0.0.1")
    # A key that never authenticated from here waits with the sweeper ...
    assert_refused(with_unused, saying="from 127.0.0.1")
    # ... one that did is held back by its own bucket only.
    assert with_proven[0] == 200 and with_proven[2]["result"] == "pong"
    (emptied,) = [e for e in logs if e["event"] == "authentication_rate_limited"]
    assert emptied["bucket"] == "address"
    assert emptied["key_ref"] == f"key_id={ADDRESS_BURST - 1:012x}"


async def test_websocket_logins_count_per_key_as_over_http(
    limited: RunningDaemon,
) -> None:
    key_a = await make_key(limited, "a")
    key_b = await make_key(limited, "b")
    wrong_a = f"{key_a.id}-wrong"
    # Two wrong secrets over HTTP and one over the WebSocket share A's bucket.
    for _ in range(BURST - 1):
        assert (await post(limited, f"Bearer {wrong_a}"))[0] == 401

    async with connect(ws_url(limited)) as client:
        assert await client.login_plain("a", wrong_a) == {"response_type": "AUTH_ERR"}
        with capture_logs() as logs:
            with pytest.raises(CallFailed) as plain:
                await client.login_plain("a", key_a.raw)
            with pytest.raises(CallFailed) as scram_a:
                await client.login_scram(ScramClient("a", key_a.id, key_a.secret))
        refusals = [plain.value.data, scram_a.value.data]
        # B logs in from the same address, with either mechanism.
        assert (await client.login_plain("b", key_b.raw))["response_type"] == "SUCCESS"
        scram = ScramClient("b", key_b.id, key_b.secret)
        _, final = await client.login_scram(scram)
        assert final is not None and scram.check(final["rfc_str"])

    for data in refusals:
        assert data is not None
        assert data["errname"] == "EAGAIN"
        assert re.fullmatch(
            f"Too many failed authentication attempts from 127.0.0.1 for API key "
            f"id={key_a.id}; try again in \\d+ s",
            data["reason"],
        )
    (refused,) = [
        e for e in logs if e["event"] == "authentication_refused_rate_limited"
    ]
    assert refused["bucket"] == "key"
    assert refused["key_ref"] == f"id={key_a.id}"


async def test_scram_failures_count_against_the_key_id_they_name(
    limited: RunningDaemon,
) -> None:
    key_a = await make_key(limited, "a")
    key_b = await make_key(limited, "b")
    async with connect(ws_url(limited)) as client:
        for _ in range(BURST):
            _, final = await client.login_scram(ScramClient("a", key_a.id, "wrong"))
            assert final == {"response_type": "AUTH_ERR"}
        with pytest.raises(CallFailed) as caught:
            await client.login_scram(ScramClient("a", key_a.id, key_a.secret))
        assert caught.value.data is not None
        assert caught.value.data["errname"] == "EAGAIN"
        # Over HTTP too, in the form naming the same row id.
        assert_refused(
            await post(limited, f"Bearer {key_a.raw}"),
            saying=f"from 127.0.0.1 for API key id={key_a.id}",
        )
        assert (await client.login_plain("b", key_b.raw))["response_type"] == "SUCCESS"


async def test_guesses_sent_at_once_are_each_counted_before_the_next(
    limited: RunningDaemon,
) -> None:
    _, key_a = await limited.daemon.api_keys.create("a")
    key_id_a = key_a.split("_")[1]
    # A has worked from this address before the guessing starts.
    assert (await post(limited, f"Bearer {key_a}"))[0] == 200

    async with aiohttp.ClientSession() as session:

        async def guess(n: int) -> int:
            async with session.post(
                f"{limited.url}/rpc",
                json=PING,
                headers={"Authorization": f"Bearer certd_{key_id_a}_guess{n}"},
            ) as response:
                return response.status

        statuses = await asyncio.gather(*(guess(n) for n in range(40)))
        working = await post(limited, f"Bearer {key_a}")

    assert sorted(statuses) == [401] * BURST + [429] * (40 - BURST)
    # The guesses emptied A's bucket, but A's own secret is known to work.
    assert working[0] == 200 and working[2]["result"] == "pong"


async def test_a_working_key_outlasts_a_flood_over_its_row_id_and_many_key_ids(
    limited: RunningDaemon,
) -> None:
    key = await make_key(limited, "victim")
    assert (await post(limited, f"Bearer {key.raw}"))[0] == 200
    for n in range(BURST + 1):
        await post(limited, f"Bearer {key.id}-wrong{n}")
    for n in range(ADDRESS_BURST + 1):
        await post(limited, f"Bearer certd_sweep{n:07d}_x")
    fresh = await make_key(limited, "fresh")

    status, _, body = await post(limited, f"Bearer {key.raw}")
    refused = await post(limited, f"Bearer {fresh.raw}")

    assert status == 200 and body["result"] == "pong"
    # A key that never worked here waits like any other attempt.
    assert_refused(refused, saying="from 127.0.0.1")


async def test_pipelined_websocket_logins_are_each_counted(
    limited: RunningDaemon,
) -> None:
    key = await make_key(limited, "a")
    async with connect(ws_url(limited)) as client:
        outcomes = await asyncio.gather(
            *(client.login_plain("a", f"{key.id}-wrong{n}") for n in range(12)),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, CallFailed)]
    failed = [o for o in outcomes if o == {"response_type": "AUTH_ERR"}]
    assert len(failed) == BURST
    assert len(refused) == 12 - BURST
    assert all(o.data and o.data["errname"] == "EAGAIN" for o in refused)
