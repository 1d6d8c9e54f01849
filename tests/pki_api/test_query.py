"""Query output survives bad stored data, and ACME certificates keep their own revoke."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certd.api.certificate_authority import CA_ENTRY_FIELDS
from certd.api.core import JobEntry
from certd.api.filters import entry_fields
from certd.api.renewal import PlanEntry
from certd.client import Client, RpcError
from certd.store.models import AcmeAccount, Certificate, CertificateAuthority
from tests.daemon import RunningDaemon, call_job
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    make_intermediate,
    make_root,
    snapshot,
)

BROKEN_PEM = "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"


async def test_unparsable_rows_are_listed_with_a_reason(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    good = await issue(client, root["id"], "good")
    async with certd.daemon.db.session() as session:
        session.add_all(
            [
                Certificate(
                    name="garbled",
                    cert_type="CERTIFICATE",
                    create_type="CERTIFICATE_CREATE_IMPORTED",
                    certificate=BROKEN_PEM,
                    privatekey="not a key",
                ),
                Certificate(
                    name="half-chain",
                    cert_type="CERTIFICATE",
                    create_type="CERTIFICATE_CREATE_IMPORTED",
                    certificate=good["chain_list"][0] + BROKEN_PEM,
                ),
                Certificate(
                    name="bad-csr",
                    cert_type="CSR",
                    create_type="CERTIFICATE_CREATE_IMPORTED_CSR",
                    csr="junk",
                ),
                CertificateAuthority(
                    name="bad-ca",
                    create_type="CA_CREATE_IMPORTED",
                    certificate="",
                    privatekey="junk",
                ),
            ]
        )

    listed = {e["name"]: e for e in await client.call("certificate.query")}
    authorities = {
        e["name"]: e for e in await client.call("certificateauthority.query")
    }

    assert sorted(listed) == ["bad-csr", "garbled", "good", "half-chain"]
    assert listed["good"]["parsed"] is True
    garbled = listed["garbled"]
    assert garbled["parsed"] is False
    assert garbled["parse_error"].startswith(
        "certificate 0 of the chain cannot be read"
    )
    assert (garbled["serial"], garbled["san"], garbled["issuer"]) == (None, None, None)
    assert garbled["certificate"] == BROKEN_PEM
    assert listed["half-chain"]["parse_error"].startswith(
        "certificate 1 of the chain cannot be read"
    )
    assert (
        listed["bad-csr"]["parse_error"]
        == "no PEM certificate signing request found in the input"
    )
    bad_ca = authorities["bad-ca"]
    assert (bad_ca["parsed"], bad_ca["crl"]) == (False, None)
    assert bad_ca["parse_error"] == "no certificate given (the input is empty)"
    assert authorities["root"]["parsed"] is True

    refused = await expect_error(
        client,
        "certificate.create",
        {
            "name": "x",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": bad_ca["id"],
            "common": "x",
            "lifetime": 5,
        },
    )
    assert fields(refused) == ["data.signedby"]
    assert "certificate authority 'bad-ca' cannot be used" in refused.message
    export = await expect_error(client, "certificate.export", garbled["id"])
    assert fields(export) == ["id"] and "cannot be exported" in export.message
    # An import still finds its issuer among the readable CAs.
    copy = await call_job(
        client,
        "certificate.create",
        {
            "name": "copy",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "certificate": good["certificate"],
            "privatekey": (await client.call("certificate.export", good["id"]))[
                "privatekey"
            ],
        },
    )
    assert copy["signedby"] == root["id"]


async def test_acme_certificates_are_revoked_at_their_ca(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    async with certd.daemon.db.session() as session:
        account = AcmeAccount(directory="https://127.0.0.1:1/dir", key_pem="x")
        session.add(account)
        await session.flush()
        session.add(
            Certificate(
                name="acme",
                cert_type="CERTIFICATE",
                create_type="CERTIFICATE_CREATE_ACME",
                certificate=leaf["certificate"],
                acme_account_id=account.id,
                acme_directory_uri=account.directory,
                dns_mapping={"www.example.com": 1},
            )
        )
    acme = (await client.call("certificate.query", [["name", "=", "acme"]]))[0]
    before = await snapshot(client)

    error = await expect_error(
        client, "certificate.update", acme["id"], {"revoked": True}
    )

    assert acme["can_be_revoked"] is False
    assert acme["acme"]["directory"] == "https://127.0.0.1:1/dir"
    assert fields(error) == ["data.revoked"]
    assert "call certificate.revoke" in error.message
    assert await snapshot(client) == before


async def test_query_filters_on_the_new_fields(client: Client) -> None:
    root = await make_root(client)
    other = await make_root(client, "other")
    await issue(client, root["id"], "a")
    await issue(client, other["id"], "b")
    await client.call("certificate.update", 1, {"revoked": True})

    by_ca = await client.call("certificate.query", [["signedby", "=", other["id"]]])
    revoked = await client.call("certificate.query", [["revoked", "=", True]])
    names = await client.call(
        "certificateauthority.query",
        [["signed_certificates", ">", 0]],
        {"select": ["name", "signed_certificates"], "order_by": ["-name"]},
    )

    assert [e["name"] for e in by_ca] == ["b"]
    assert [e["name"] for e in revoked] == ["a"]
    assert names == [
        {"name": "root", "signed_certificates": 1},
        {"name": "other", "signed_certificates": 1},
    ]


async def test_trusted_store_is_accepted_only_as_false(client: Client) -> None:
    root = await make_root(client, add_to_trusted_store=False)
    leaf = await issue(client, root["id"], add_to_trusted_store=False)
    before = await snapshot(client)

    on_ca = await expect_error(
        client,
        "certificateauthority.update",
        root["id"],
        {"add_to_trusted_store": True},
    )
    on_create = await expect_error(
        client,
        "certificate.create",
        {
            "name": "t",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "san": ["t.example"],
            "add_to_trusted_store": True,
        },
    )

    assert (root["add_to_trusted_store"], leaf["add_to_trusted_store"]) == (
        False,
        False,
    )
    assert fields(on_ca) == fields(on_create) == ["data.add_to_trusted_store"]
    assert "does not manage the host's trust store" in on_ca.message
    assert await snapshot(client) == before


async def test_renew_days_applies_to_certificates_certd_renews(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"], "renewed", lifetime=100)
    async with certd.daemon.db.session() as session:
        session.add(
            Certificate(
                name="outside",
                cert_type="CERTIFICATE",
                create_type="CERTIFICATE_CREATE_IMPORTED",
                certificate=leaf["certificate"],
            )
        )
    outside = (await client.call("certificate.query", [["name", "=", "outside"]]))[0]

    updated = await client.call("certificate.update", leaf["id"], {"renew_days": 50})
    before = await snapshot(client)
    error = await expect_error(
        client, "certificate.update", outside["id"], {"renew_days": 50}
    )

    assert updated["renew_days"] == 50
    plan = {p["name"]: p for p in await client.call("certificate.renewal_plan")}
    assert plan["renewed"]["reason"] == "renew_days"
    assert (
        plan["renewed"]["window"]["end"]
        == (
            datetime.fromisoformat(leaf["not_valid_after"]) - timedelta(days=50)
        ).isoformat()
    )
    assert fields(error) == ["data.renew_days"]
    assert await snapshot(client) == before
    # The plan takes query's filters and options.
    assert await client.call(
        "certificate.renewal_plan",
        [["renewable", "=", False]],
        {"select": ["name", "reason"]},
    ) == [{"name": "outside", "reason": plan["outside"]["reason"]}]
    assert await client.call("certificate.renewal_plan", [], {"count": True}) == 2
    misspelt = await expect_error(
        client, "certificate.renewal_plan", [["renewble", "=", True]]
    )
    assert fields(misspelt) == ["filters.0.0"]


# Every query method, and the namespace whose entries it lists.
QUERIES = (
    "certificate.query",
    "certificateauthority.query",
    "acme.registration.query",
    "acme.dns.authenticator.query",
    "event.query",
    "core.get_jobs",
    "certificate.renewal_plan",
)


async def test_a_misspelt_field_is_refused_before_anything_exists(
    client: Client,
) -> None:
    answers = {}
    for method in QUERIES:
        try:
            answers[method] = await client.call(method, [["nmae", "=", "www"]])
        except RpcError as exc:
            answers[method] = (fields(exc), exc.message.rpartition(": ")[2])

    misspelt = (["filters.0.0"], "no field named 'nmae'; did you mean 'name'?")
    unknown = (["filters.0.0"], "no field named 'nmae'")
    assert answers == {
        "certificate.query": misspelt,
        "certificateauthority.query": misspelt,
        "acme.registration.query": unknown,
        "acme.dns.authenticator.query": misspelt,
        "event.query": unknown,
        "core.get_jobs": unknown,
        "certificate.renewal_plan": misspelt,
    }


async def test_every_field_of_an_entry_is_one_its_namespace_declares(
    certd: RunningDaemon, client: Client
) -> None:
    """What lets a misspelt field be refused on an empty list must not refuse a real one."""
    root = await make_root(client)
    await issue(client, root["id"], "leaf")
    await client.call(
        "acme.dns.authenticator.create",
        {
            "name": "dns",
            "attributes": {
                "authenticator": "rfc2136",
                "server": "127.0.0.1",
                "tsig_key_name": "certd",
                "tsig_secret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
            },
        },
    )
    async with certd.daemon.db.session() as session:
        session.add(
            AcmeAccount(
                directory="https://127.0.0.1:14000/dir",
                account_url="https://127.0.0.1:14000/my-account/1",
                key_pem=ec.generate_private_key(ec.SECP256R1())
                .private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                .decode(),
                tos_agreed=True,
            )
        )
    await client.call("certificateauthority.update", root["id"], {"revoked": True})

    undeclared = {}
    for namespace, service in certd.daemon.services.items():
        declared = getattr(service, "entry_fields", None)
        if not declared:
            continue
        entries = await service.entries()  # type: ignore[attr-defined]
        assert entries, namespace
        undeclared[namespace] = {key for entry in entries for key in entry} - set(
            declared
        )
    plan = await client.call("certificate.renewal_plan")
    jobs = await client.call("core.get_jobs")
    undeclared["renewal_plan"] = {k for p in plan for k in p} - entry_fields(PlanEntry)
    undeclared["jobs"] = {k for j in jobs for k in j} - entry_fields(JobEntry)

    assert undeclared == {
        "certificate": set(),
        "certificateauthority": set(),
        "acme.registration": set(),
        "acme.dns.authenticator": set(),
        "event": set(),
        "renewal_plan": set(),
        "jobs": set(),
    }
    assert plan and jobs


async def test_a_ca_query_over_no_ca_refuses_unknown_fields_as_certificates_do(
    client: Client,
) -> None:
    filters = [["extension.BasicConstraints.ca", "=", True]]
    order_by = {"order_by": ["-crl_numbr"]}
    select = {"select": ["name", "signed_certs"]}
    known = [
        ["extensions.BasicConstraints.ca", "=", True],
        ["revoked_certificates", "!=", []],
        ["subject_name_hash", "!=", None],
    ]

    refused = [
        await expect_error(client, "certificateauthority.query", filters),
        await expect_error(client, "certificateauthority.query", [], order_by),
        await expect_error(client, "certificateauthority.query", [], select),
    ]
    found = await client.call(
        "certificateauthority.query", known, {"select": ["name", "crl_url"]}
    )

    assert [(fields(e), e.message.rpartition(": ")[2]) for e in refused] == [
        (["filters.0.0"], "no field named 'extension'; did you mean 'extensions'?"),
        (
            ["options.order_by.0"],
            "no field named 'crl_numbr'; did you mean 'crl_number'?",
        ),
        (
            ["options.select.1"],
            "no field named 'signed_certs'; did you mean 'signed_certificates'?",
        ),
    ]
    assert found == []


async def test_every_field_of_a_ca_entry_is_declared_and_queryable(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(client, inter["id"])
    await client.call(
        "certificate.update",
        leaf["id"],
        {"revoked": True, "revoked_reason": "keyCompromise"},
    )
    async with certd.daemon.db.session() as session:
        session.add(
            CertificateAuthority(
                name="garbled", create_type="CA_CREATE_IMPORTED", certificate=""
            )
        )

    listed = await client.call("certificateauthority.query")
    # Every field, and every key of the objects in it, as a filter and selected.
    paths = sorted({path for entry in listed for path in dotted_paths(entry)})
    selected = await client.call(
        "certificateauthority.query",
        [["OR", [[path, "!=", "no such value"] for path in paths]]],
        {"select": paths, "order_by": ["id"]},
    )
    revoked_below = await client.call(
        "certificateauthority.query",
        [
            ["extensions.BasicConstraints.ca", "=", True],
            ["revoked_certificates", "!=", []],
        ],
        {"select": ["name"]},
    )

    assert [e["name"] for e in listed] == ["root", "inter", "garbled"]
    assert [e["parsed"] for e in listed] == [True, True, False]
    for entry in listed:
        assert set(entry) == CA_ENTRY_FIELDS, entry["name"]
    assert "extensions.BasicConstraints.ca" in paths
    assert [e["name"] for e in selected] == ["root", "inter", "garbled"]
    assert selected[1]["extensions.BasicConstraints.ca"] is True
    assert revoked_below == [{"name": "inter"}]


def dotted_paths(value: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every dotted path into nested objects, down to their leaves."""
    for key, inner in value.items():
        yield prefix + key
        if isinstance(inner, dict):
            yield from dotted_paths(inner, f"{prefix}{key}.")
