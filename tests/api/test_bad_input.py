"""Bad input gets a clear JSON-RPC error naming the field, and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certd.api import ejson
from certd.client import Client, RpcError
from tests.daemon import RunningDaemon, call_job, make_config, running_daemon
from tests.websocket.client import connect
from tests.websocket.conftest import ws_url

RFC2136 = {
    "authenticator": "rfc2136",
    "server": "127.0.0.1",
    "port": 5399,
    "tsig_key_name": "acme-key",
    "tsig_secret": "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw==",
}


async def snapshot(client: Client) -> dict[str, Any]:
    """Everything a bad call could have changed."""
    return {
        "authenticators": await client.call("acme.dns.authenticator.query"),
        "certificates": await client.call("certificate.query"),
        "jobs": await client.call("core.get_jobs"),
    }


async def expect_error(client: Client, method: str, *params: Any) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await client.call(method, *params)
    return caught.value


def fields(error: RpcError) -> list[str]:
    return [e["field"] for e in error.data["errors"]]


async def test_unknown_method(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        error = await expect_error(client, "certificate.nonexistent")
        assert error.code == -32601
        assert error.data == "certificate.nonexistent"
        assert await snapshot(client) == before


async def test_wrong_types_name_the_field(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        error = await expect_error(
            client, "acme.dns.authenticator.create", {"name": 42, "attributes": RFC2136}
        )
        assert error.code == -32602
        assert fields(error) == ["data.name"]
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {"name": "x", "attributes": {**RFC2136, "port": "not-a-port"}},
        )
        assert fields(error) == ["data.attributes.port"]
        error = await expect_error(client, "certificate.get_instance", "one")
        assert fields(error) == ["id"]
        error = await expect_error(client, "certificate.query", "not-a-list")
        assert fields(error) == ["filters"]
        assert await snapshot(client) == before


async def test_missing_required_and_unknown_fields(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        error = await expect_error(
            client, "acme.dns.authenticator.create", {"attributes": RFC2136}
        )
        assert error.data["errors"] == [
            {"field": "data.name", "message": "this field is required", "errno": 22}
        ]
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {"name": "x", "attributes": {**RFC2136, "colour": "blue"}},
        )
        assert fields(error) == ["data.attributes.colour"]
        error = await expect_error(
            client,
            "certificate.create",
            {"name": "x", "create_type": "CERTIFICATE_CREATE_ACME"},
        )
        assert sorted(fields(error)) == ["data.acme_directory_uri", "data.csr_id"]
        error = await expect_error(client, "certificate.get_instance", 1, 2)
        assert fields(error) == ["params"]
        assert await snapshot(client) == before


async def test_duplicate_names_are_refused(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        first = await client.call(
            "acme.dns.authenticator.create", {"name": "bind", "attributes": RFC2136}
        )
        before = await snapshot(client)
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {"name": "bind", "attributes": RFC2136},
        )
        assert error.data["errors"][0]["field"] == "data.name"
        assert "already exists" in error.message
        assert await snapshot(client) == before

        await call_job(
            client,
            "certificate.create",
            {
                "name": "csr",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": ["a.example.test"],
            },
        )
        before = await snapshot(client)
        error = await expect_error(
            client,
            "certificate.create",
            {
                "name": "csr",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": ["a.example.test"],
            },
        )
        assert fields(error) == ["data.name"]
        assert await snapshot(client) == before
        assert first["id"] == before["authenticators"][0]["id"]


async def test_a_misspelt_query_field_is_named(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        await client.call(
            "acme.dns.authenticator.create", {"name": "bind", "attributes": RFC2136}
        )
        await call_job(
            client,
            "certificate.create",
            {
                "name": "csr",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": ["a.example.test"],
            },
        )
        for method, filters, options, field, close in (
            ("certificate.query", [["nmae", "=", "csr"]], {}, "filters.0.0", "name"),
            (
                "certificate.query",
                [],
                {"order_by": ["-expiry"]},
                "options.order_by.0",
                None,
            ),
            (
                "acme.dns.authenticator.query",
                [],
                {"select": ["atributes"]},
                "options.select.0",
                "attributes",
            ),
            (
                "core.get_jobs",
                [["OR", [["id", "=", 1], ["stat", "=", "SUCCESS"]]]],
                {},
                "filters.0.1.1.0",
                "state",
            ),
        ):
            error = await expect_error(client, method, filters, options)
            assert error.code == -32602
            assert fields(error) == [field]
            if close:
                assert f"did you mean {close!r}?" in error.message
        # A key below an object is not checked: its keys vary by entry.
        assert (
            await client.call(
                "acme.dns.authenticator.query", [["attributes.zone", "=", "x"]]
            )
            == []
        )


async def test_cloudflare_with_token_and_global_key(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {
                "name": "cf",
                "attributes": {
                    "authenticator": "cloudflare",
                    "api_token": "token-canary-1234",
                    "cloudflare_email": "admin@example.com",
                    "api_key": "globalkey-canary-5678",
                },
            },
        )
        assert error.code == -32602
        assert fields(error) == ["data.attributes.api_token"]
        assert "not both" in error.message
        assert "canary" not in error.message and "canary" not in str(error.data)
        assert await snapshot(client) == before


async def test_unknown_provider(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {"name": "x", "attributes": {"authenticator": "nosuchdns"}},
        )
        assert fields(error) == ["data.attributes.authenticator"]
        assert "rfc2136" in error.message


async def test_unmapped_domain_in_dns_mapping(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create", {"name": "bind", "attributes": RFC2136}
        )
        csr = await call_job(
            client,
            "certificate.create",
            {
                "name": "two-names",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "key_type": "EC",
                "san": ["a.example.test", "b.example.test"],
            },
        )
        before = await snapshot(client)
        error = await expect_error(
            client,
            "certificate.create",
            {
                "name": "acme-cert",
                "create_type": "CERTIFICATE_CREATE_ACME",
                "csr_id": csr["id"],
                "acme_directory_uri": "https://127.0.0.1:1/dir",
                "tos": True,
                "dns_mapping": {
                    "a.example.test": authenticator["id"],
                    "c.example.test": authenticator["id"],
                },
            },
        )
        assert sorted(fields(error)) == [
            "data.dns_mapping.b.example.test",
            "data.dns_mapping.c.example.test",
        ]
        assert "needs a DNS authenticator" in error.message
        # Refused before a job was started: no job, no certificate.
        assert await snapshot(client) == before


async def test_delete_of_a_used_authenticator_needs_force(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        authenticator = await client.call(
            "acme.dns.authenticator.create", {"name": "bind", "attributes": RFC2136}
        )
        assert (
            await client.call("acme.dns.authenticator.delete", authenticator["id"])
            is True
        )
        error = await expect_error(
            client, "acme.dns.authenticator.delete", authenticator["id"]
        )
        assert error.code == -32003


async def test_protocol_errors(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        status, reply = await client.raw_text("{not json")
        assert status == 200 and reply["error"]["code"] == -32700
        status, reply = await client.raw({"jsonrpc": "2.0", "id": 1})
        assert reply["error"]["code"] == -32600
        status, reply = await client.raw(
            [{"jsonrpc": "2.0", "method": "core.ping", "id": i} for i in range(101)]
        )
        assert reply["error"]["code"] == -32600
        assert "at most 100" in reply["error"]["data"]
        status, reply = await client.raw(
            [
                {"jsonrpc": "2.0", "method": "core.ping", "id": 1},
                {"jsonrpc": "2.0", "method": "nope", "id": 2},
                {"jsonrpc": "2.0", "method": "core.ping"},
            ]
        )
        assert [r.get("result") for r in reply] == ["pong", None]
        assert reply[1]["error"]["code"] == -32601
        status, _ = await client.raw_text("x" * (5 * 1024 * 1024))
        assert status == 413
        # Python's json takes these, and would write them back as the reply's id
        for number in ("NaN", "Infinity", "-Infinity", "1e400"):
            status, reply = await client.raw_text(
                f'{{"jsonrpc": "2.0", "method": "core.ping", "id": {number}}}'
            )
            assert reply == {
                "jsonrpc": "2.0",
                "error": {
                    "code": -32700,
                    "message": "Parse error: the body is not valid JSON",
                },
                "id": None,
            }, number


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e400", "-1e400"])
def test_numbers_json_lacks_are_refused_as_the_websocket_parses(number: str) -> None:
    with pytest.raises(ValueError):
        ejson.loads(f'{{"id": {number}, "n": 12345678901234567890123}}')
    with pytest.raises(ValueError):
        ejson.loads(f'{{"id": {number}}}')
    assert ejson.loads('{"id": 1.5e300, "n": -0.0}') == {"id": 1.5e300, "n": -0.0}


# Lone UTF-16 surrogates written as JSON escapes (no UTF-8 text can hold one
# raw): in the id, in a string with other text, a pair in the wrong order, in
# the method's name, in a parameter, in a key and in a batch.
LONE_SURROGATES = [
    r'{"jsonrpc": "2.0", "method": "core.ping", "id": "\ud800"}',
    r'{"jsonrpc": "2.0", "method": "core.ping", "id": "a\udfffb"}',
    r'{"jsonrpc": "2.0", "method": "core.ping", "id": "\ude00\ud83d"}',
    r'{"jsonrpc": "2.0", "method": "core.ping\uDBFF", "id": 1}',
    r'{"jsonrpc": "2.0", "method": "certificate.create", "id": 2, '
    r'"params": [{"name": "n\udc00", "create_type": "CERTIFICATE_CREATE_CSR", '
    r'"common": "a.example"}]}',
    r'{"jsonrpc": "2.0", "method": "core.ping", "id": 3, "params": {"\ud800": 1}}',
    r'[{"jsonrpc": "2.0", "method": "core.ping", "id": 4}, '
    r'{"jsonrpc": "2.0", "method": "core.ping", "id": "\ud800"}]',
]
# A pair escaped in order is one character (U+1F600) and an id like any other.
PAIRED = r'{"jsonrpc": "2.0", "method": "core.ping", "id": "\ud83d\ude00"}'


async def test_a_lone_surrogate_is_an_invalid_request(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        for text in LONE_SURROGATES:
            status, reply = await client.raw_text(text)
            assert (status, reply) == (
                200,
                {
                    "jsonrpc": "2.0",
                    "error": {
                        "code": -32600,
                        "message": "Invalid request",
                        "data": "a string holds a lone UTF-16 surrogate (RFC 8259 8.2)",
                    },
                    "id": None,
                },
            ), text
        status, reply = await client.raw_text(PAIRED)
        assert reply == {"jsonrpc": "2.0", "result": "pong", "id": "\U0001f600"}
        assert await snapshot(client) == before


async def test_a_lone_surrogate_is_an_invalid_request_over_the_websocket(
    certd: RunningDaemon,
) -> None:
    async with connect(ws_url(certd)) as ws:
        for text in LONE_SURROGATES:
            await ws.ws.send_str(text)
            reply = await ws.unanswered.get()
            assert reply == {
                "jsonrpc": "2.0",
                "error": {
                    "code": -32600,
                    "message": "Invalid request: a string holds a lone UTF-16 "
                    "surrogate (RFC 8259 8.2)",
                },
                "id": None,
            }, text
        await ws.ws.send_str(PAIRED)
        reply = await ws.unanswered.get()
    assert reply == {"jsonrpc": "2.0", "result": "pong", "id": "\U0001f600"}


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        (r'{"id": "\ud800"}', True),
        (r'{"id": ["x", {"k": "\udfff"}]}', True),
        (r'{"\udc00": 1}', True),
        (r'{"id": "\ud800\ud800"}', True),
        (r'{"n": 12345678901234567890123, "id": "\uDC01"}', True),
        (r'{"id": "\ud83d\ude00"}', False),
        # An escaped backslash before "ud800" is text, not an escape.
        (r'{"id": "\\ud800"}', False),
        (r'{"id": "\u00e9\u20ac", "e": "\u00e9"}', False),
        ('{"id": "\u00e9"}', False),
    ],
)
def test_lone_surrogates_are_found_as_both_faces_look(text: str, lone: bool) -> None:
    try:
        document = ejson.loads(text)
    except ejson.IntegerOutOfRange as refused:
        document = refused.document
    assert ejson.has_lone_surrogate(text, document) is lone


def test_a_raw_surrogate_is_found() -> None:
    # As a text decoded with surrogateescape would hold one, unescaped.
    raw = '{"id": "\udcff"}'
    assert ejson.has_lone_surrogate(raw, ejson.loads(raw))


async def test_names_may_not_end_with_a_newline(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        before = await snapshot(client)
        error = await expect_error(
            client,
            "acme.dns.authenticator.create",
            {"name": "bind\n", "attributes": RFC2136},
        )
        assert fields(error) == ["data.name"]
        error = await expect_error(
            client,
            "certificate.create",
            {
                "name": "csr\n",
                "create_type": "CERTIFICATE_CREATE_CSR",
                "common": "a.example.test",
            },
        )
        assert fields(error) == ["data.name"]
        assert await snapshot(client) == before


async def test_moving_a_provider_needs_its_secrets_again(certd: RunningDaemon) -> None:
    async with certd.client() as client:
        created = await client.call(
            "acme.dns.authenticator.create", {"name": "bind", "attributes": RFC2136}
        )
        # Pointing the stored key at another server without giving it again
        # would hand the stored secret to whoever runs that server.
        error = await expect_error(
            client,
            "acme.dns.authenticator.update",
            created["id"],
            {"attributes": {"server": "127.0.0.2"}},
        )
        assert fields(error) == ["data.attributes.tsig_secret"]
        assert "sent again" in error.message
        moved = await client.call(
            "acme.dns.authenticator.update",
            created["id"],
            {
                "attributes": {
                    "server": "127.0.0.2",
                    "tsig_secret": RFC2136["tsig_secret"],
                }
            },
        )
        assert moved["attributes"]["server"] == "127.0.0.2"
        renamed = await client.call(
            "acme.dns.authenticator.update", created["id"], {"name": "renamed"}
        )
        assert renamed["name"] == "renamed"
        assert renamed["secrets_set"] == ["tsig_secret"]


async def test_deploy_targets_and_hooks_stay_within_the_configured_bounds(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "state",
        deploy={
            "allowed_directories": [str(tmp_path / "live")],
            "allowed_programs": ["/usr/bin/true"],
        },
    )
    async with running_daemon(config) as running, running.client() as client:
        error = await expect_error(
            client,
            "certificate.set_deploy",
            1,
            {
                "targets": [
                    {"directory": str(tmp_path / "live" / "www")},
                    {"directory": str(tmp_path / "elsewhere")},
                    {"directory": str(tmp_path / "live" / ".." / "escape")},
                ],
                "hooks": [
                    {"argv": ["/usr/bin/true"]},
                    {"argv": ["/bin/sh", "-c", "id"]},
                ],
            },
        )
        assert sorted(fields(error)) == [
            "deploy.hooks.1.argv",
            "deploy.targets.1.directory",
            "deploy.targets.2.directory",
        ]
