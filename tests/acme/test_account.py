"""Account management against pebble: EAB, contacts, key rollover, deactivation."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import aiohttp
import josepy
import pytest

from certd.acme import AcmeClient
from certd.errors import AcmeError
from tests.acme.conftest import (
    FAST_POLL,
    ec_account_key,
    issue,
    make_csr,
    session_for,
)
from tests.testbed import NamedServer, PebbleServer, start_pebble

pytestmark = pytest.mark.integration

EAB_KID = "kid-certd"
EAB_HMAC = secrets.token_bytes(32)


@pytest.fixture(scope="module")
def eab_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """A pebble that only accepts accounts bound to its one EAB key."""
    config = {
        "externalAccountBindingRequired": True,
        "externalAccountMACKeys": {EAB_KID: josepy.b64encode(EAB_HMAC).decode()},
    }
    rundir = tmp_path_factory.mktemp("pebble-eab")
    with start_pebble(rundir, named.port, config=config) as server:
        yield server


@pytest.fixture(scope="module")
def alternate_pebble(
    tmp_path_factory: pytest.TempPathFactory, named: NamedServer
) -> Iterator[PebbleServer]:
    """A pebble that offers one alternate chain for every certificate."""
    rundir = tmp_path_factory.mktemp("pebble-alt")
    with start_pebble(
        rundir, named.port, env={"PEBBLE_ALTERNATE_ROOTS": "1"}
    ) as server:
        yield server


async def test_eab_binds_account(eab_pebble: PebbleServer) -> None:
    async with session_for(eab_pebble) as http:
        acme = await AcmeClient.open(
            eab_pebble.directory_url, ec_account_key(), session=http
        )
        url = await acme.register(
            contact_email=None,
            terms_of_service_agreed=True,
            eab=(EAB_KID, EAB_HMAC),
        )

    assert acme.directory.meta.external_account_required is True
    assert url == acme.account_url
    assert "/my-account/" in url


async def test_eab_missing_or_wrong_is_refused(eab_pebble: PebbleServer) -> None:
    async with session_for(eab_pebble) as http:
        acme = await AcmeClient.open(
            eab_pebble.directory_url, ec_account_key(), session=http
        )
        with pytest.raises(AcmeError) as missing:
            await acme.register(contact_email=None, terms_of_service_agreed=True)
        with pytest.raises(AcmeError) as wrong:
            await acme.register(
                contact_email=None,
                terms_of_service_agreed=True,
                eab=(EAB_KID, secrets.token_bytes(32)),
            )

    assert missing.value.problem_type == (
        "urn:ietf:params:acme:error:externalAccountRequired"
    )
    assert wrong.value.problem_type == "urn:ietf:params:acme:error:unauthorized"
    assert acme.account_url is None


async def test_update_contact(client: AcmeClient) -> None:
    assert await client.update_contact("new@example.test") == (
        "mailto:new@example.test",
    )
    assert await client.update_contact(None) == ()


async def test_key_rollover_moves_account_to_new_key(
    client: AcmeClient, pebble: PebbleServer, http: aiohttp.ClientSession
) -> None:
    old_key, account_url = client.account_key, client.account_url
    new_key = ec_account_key()

    await client.key_rollover(new_key)

    assert client.account_key is new_key
    assert await client.find_account() == account_url
    order = await client.new_order(make_csr(["rolled.example.test"])[1])
    assert order.identifiers == ("rolled.example.test",)
    with_old = await AcmeClient.open(pebble.directory_url, old_key, session=http)
    with pytest.raises(AcmeError) as caught:
        await with_old.find_account()
    assert caught.value.problem_type == (
        "urn:ietf:params:acme:error:accountDoesNotExist"
    )


async def test_deactivated_account_cannot_order(client: AcmeClient) -> None:
    await client.deactivate_account()

    with pytest.raises(AcmeError) as caught:
        await client.new_order(make_csr(["gone.example.test"])[1])

    assert caught.value.problem_type == "urn:ietf:params:acme:error:unauthorized"


async def test_download_lists_alternate_chains(
    alternate_pebble: PebbleServer, named: NamedServer
) -> None:
    async with session_for(alternate_pebble) as http:
        acme = await AcmeClient.open(
            alternate_pebble.directory_url,
            ec_account_key(),
            session=http,
            poll=FAST_POLL,
        )
        await acme.register(contact_email=None, terms_of_service_agreed=True)
        issued = await issue(acme, named, ["alt.example.test"])
        alternate_pem, _ = await acme.download(issued.alternates[0])

    assert issued.alternates == [f"{issued.order.certificate_url}/alternate/1"]
    assert (
        alternate_pem.split("-----END CERTIFICATE-----")[0]
        == (issued.fullchain_pem.split("-----END CERTIFICATE-----")[0])
    )
    assert alternate_pem != issued.fullchain_pem
