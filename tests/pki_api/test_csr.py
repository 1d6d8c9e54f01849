"""Signing requests: created with every field, and signed by a CA of ours."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from certd.client import Client
from certd.store.models import Job as JobRow
from tests.daemon import RunningDaemon, call_job
from tests.pki.conftest import OpenSSL
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_root,
    snapshot,
)


async def make_csr(client: Client, name: str = "req", **extra: Any) -> Any:
    data = {
        "name": name,
        "create_type": "CERTIFICATE_CREATE_CSR",
        "common": "app.example.com",
        "san": ["app.example.com", "IP:198.51.100.4"],
        **extra,
    }
    return await call_job(client, "certificate.create", data)


async def test_csr_with_every_field(client: Client) -> None:
    csr = await make_csr(
        client,
        profile="HTTPS ECC Certificate",
        ec_curve="SECP256R1",
        digest_algorithm="SHA256",
        country="NL",
        state="Noord-Holland",
        city="Amsterdam",
        organization="Example BV",
        organizational_unit="Apps",
        email="apps@example.com",
        cert_extensions={"KeyUsage": {"key_agreement": True}},
    )

    assert csr["cert_type"] == "CSR" and csr["create_type"] == "CERTIFICATE_CREATE_CSR"
    assert (csr["key_type"], csr["ec_curve"], csr["digest_algorithm"]) == (
        "EC",
        "SECP256R1",
        "SHA256",
    )
    assert csr["DN"] == (
        "1.2.840.113549.1.9.1=apps@example.com,CN=app.example.com,OU=Apps,"
        "O=Example BV,L=Amsterdam,ST=Noord-Holland,C=NL"
    )
    assert csr["san"] == ["DNS:app.example.com", "IP:198.51.100.4"]
    assert csr["extensions"]["KeyUsage"]["critical"] is True
    assert csr["extensions"]["KeyUsage"]["digital_signature"] is True
    assert csr["extensions"]["KeyUsage"]["key_agreement"] is True
    assert csr["extensions"]["ExtendedKeyUsage"]["usages"] == ["SERVER_AUTH"]
    assert csr["extensions"]["BasicConstraints"]["ca"] is False
    assert (csr["certificate"], csr["issuer"], csr["serial"]) == (None, None, None)
    assert csr["has_privatekey"] is True and "privatekey" not in csr
    assert csr["can_be_revoked"] is False


async def test_csr_profiles_have_no_lifetime_to_give(client: Client) -> None:
    error = await expect_error(
        client,
        "certificate.create",
        {
            "name": "req",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "profile": "Root CA",
            "san": ["a.example"],
        },
    )
    imported = await expect_error(
        client,
        "certificate.create",
        {
            "name": "req",
            "create_type": "CERTIFICATE_CREATE_IMPORTED",
            "profile": "HTTPS RSA Certificate",
        },
    )

    assert fields(error) == ["data.profile"]
    assert "choose one of: HTTPS RSA Certificate" in error.message
    assert fields(imported) == ["data.profile"]
    assert "not to CERTIFICATE_CREATE_IMPORTED" in imported.message


async def test_sign_csr_with_the_defaults(client: Client, openssl: OpenSSL) -> None:
    root = await make_root(client)
    # A CSR may ask for CA rights; the signer decides and does not give them.
    csr = await make_csr(
        client,
        key_type="EC",
        cert_extensions={
            "BasicConstraints": {
                "enabled": True,
                "ca": True,
                "extension_critical": True,
            },
            "KeyUsage": {"enabled": True, "key_cert_sign": True},
        },
    )

    signed = await client.call(
        "certificateauthority.ca_sign_csr",
        {"ca_id": root["id"], "csr_cert_id": csr["id"], "name": "app"},
    )

    assert signed["create_type"] == "CA_SIGN_CSR"
    assert (signed["cert_type"], signed["signedby"], signed["issuer"]) == (
        "CERTIFICATE",
        root["id"],
        "root",
    )
    assert (signed["csr_id"], signed["CSR"]) == (csr["id"], csr["CSR"])
    assert signed["has_privatekey"] is True
    assert signed["DN"] == csr["DN"] and signed["san"] == csr["san"]
    assert signed["lifetime"] == 199 and signed["digest_algorithm"] == "SHA384"
    assert signed["extensions"]["BasicConstraints"]["ca"] is False
    assert signed["extensions"]["KeyUsage"]["key_cert_sign"] is False
    assert signed["extensions"]["ExtendedKeyUsage"]["usages"] == ["SERVER_AUTH"]
    assert signed["chain_list"][1:] == [root["certificate"]]
    exported = await client.call("certificate.export", signed["id"])
    assert exported["privatekey"]
    out = openssl.run(
        "verify", "-x509_strict", "-purpose", "sslserver",
        "-CAfile", openssl.write("root.pem", root["certificate"]),
        openssl.write("app.pem", signed["chain_list"][0]),
    )  # fmt: skip
    assert out.endswith("app.pem: OK\n")
    ca = await client.call("certificateauthority.get_instance", root["id"])
    assert ca["signed_certificates"] == 1


async def test_sign_csr_with_a_profile_and_explicit_fields(client: Client) -> None:
    root = await make_root(client)
    csr = await make_csr(client, key_type="RSA")

    signed = await client.call(
        "certificateauthority.ca_sign_csr",
        {
            "ca_id": root["id"],
            "csr_cert_id": csr["id"],
            "name": "client",
            "profile": "TLS Client Certificate",
            "lifetime": 30,
            "digest_algorithm": "SHA512",
            "cert_extensions": {
                "ExtendedKeyUsage": {"usages": ["CLIENT_AUTH", "EMAIL_PROTECTION"]}
            },
        },
    )

    assert (signed["lifetime"], signed["digest_algorithm"]) == (30, "SHA512")
    assert signed["key_type"] == "RSA"
    assert signed["extensions"]["ExtendedKeyUsage"]["usages"] == [
        "CLIENT_AUTH",
        "EMAIL_PROTECTION",
    ]
    assert leaf_of(signed).subject.rfc4514_string() == csr["DN"]


async def test_sign_csr_refusals(client: Client) -> None:
    root = await make_root(client, lifetime=100)
    leaf = await issue(client, root["id"], lifetime=10)
    csr = await make_csr(client, key_type="EC")
    bare = await client.call(
        "certificateauthority.create",
        {
            "name": "bare",
            "create_type": "CA_CREATE_IMPORTED",
            "certificate": root["certificate"],
        },
    )
    before = await snapshot(client)
    base = {"ca_id": root["id"], "csr_cert_id": csr["id"], "name": "signed"}
    cases = [
        ({"csr_cert_id": 99}, "data.csr_cert_id", "no CSR with id 99"),
        (
            {"csr_cert_id": leaf["id"]},
            "data.csr_cert_id",
            f"no CSR with id {leaf['id']}",
        ),
        ({"ca_id": 99}, "data.ca_id", "no certificate authority with id 99"),
        ({"ca_id": bare["id"]}, "data.ca_id", "has no private key to sign with"),
        ({"lifetime": 200}, "data.lifetime", "after its issuer"),
        ({"name": "leaf"}, "data.name", "a certificate named 'leaf' already exists"),
        ({"name": "a b"}, "data.name", "letters, digits"),
        ({"profile": "Root CA"}, "data.profile", "no profile named 'Root CA'"),
        (
            {
                "cert_extensions": {
                    "BasicConstraints": {"ca": True},
                    "KeyUsage": {"key_cert_sign": True},
                }
            },
            "data.cert_extensions.BasicConstraints.ca",
            "made with certificateauthority.create",
        ),
    ]
    for extra, field, message in cases:
        error = await expect_error(
            client, "certificateauthority.ca_sign_csr", {**base, **extra}
        )
        assert fields(error) == [field], extra
        assert message in error.message, (extra, error.message)
    assert await snapshot(client) == before


class HeldStep:
    """Holds one step of the certificate service until released, after it ran."""

    def __init__(
        self, certd: RunningDaemon, monkeypatch: pytest.MonkeyPatch, step: str
    ) -> None:
        self.reached, self.release = asyncio.Event(), asyncio.Event()
        service = certd.daemon.services["certificate"]
        original = getattr(service, step)

        async def held(*args: Any) -> Any:
            result = await original(*args)
            self.reached.set()
            await self.release.wait()
            return result

        monkeypatch.setattr(service, step, held)


async def _csr_job(client: Client, name: str) -> int:
    job_id: int = await client.call(
        "certificate.create",
        {
            "name": name,
            "create_type": "CERTIFICATE_CREATE_CSR",
            "san": [f"{name}.example.test"],
            "key_type": "EC",
        },
    )
    return job_id


async def _abort_at(client: Client, held: HeldStep, job_id: int) -> dict[str, Any]:
    """Abort the job while it is held, release it, and return how it ended."""
    await asyncio.wait_for(held.reached.wait(), 30)
    abort = asyncio.create_task(client.call("core.job_abort", job_id))
    await asyncio.sleep(0.2)
    held.release.set()
    await abort
    job: dict[str, Any] = await client.call("core.job_wait", job_id, 30)
    return job


@pytest.mark.parametrize(
    "step",
    [
        # the transaction has committed, the abort lands before the step ends,
        # as it may while the commit is in SQLite's hands
        "_store",
        # stored, and reading the entry back for the result
        "get_entry",
    ],
)
async def test_a_job_aborted_once_its_csr_is_stored_still_succeeds(
    certd: RunningDaemon, client: Client, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    held = HeldStep(certd, monkeypatch, step)
    job = await _abort_at(client, held, await _csr_job(client, "kept"))
    monkeypatch.undo()
    stored = await client.call("certificate.query", [["name", "=", "kept"]])
    # The job reports what happened: the CSR exists, and it is the result.
    assert job["state"] == "SUCCESS"
    assert (job["error"], job["exc_info"]) == (None, None)
    assert job["result"]["cert_type"] == "CSR"
    assert [entry["id"] for entry in stored] == [job["result"]["id"]]


async def test_a_stored_csrs_job_is_marked_done_in_the_same_transaction(
    certd: RunningDaemon, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldStep(certd, monkeypatch, "_store")
    job_id = await _csr_job(client, "durable")
    await asyncio.wait_for(held.reached.wait(), 30)
    # Committed with the CSR: what a crash right now would leave in the store.
    # (recover() at the next start aborts only WAITING and RUNNING rows.)
    async with certd.daemon.db.session() as session:
        row = await session.get(JobRow, job_id)
        assert row is not None
        stored = (row.state, row.result)
    held.release.set()
    job = await client.call("core.job_wait", job_id, 30)
    assert stored == ("SUCCESS", {"id": job["result"]["id"], "name": "durable"})
    assert job["state"] == "SUCCESS" and job["result"]["cert_type"] == "CSR"
    history = await client.call("core.get_jobs", [["id", "=", job_id]])
    assert history == [job]


async def test_a_csr_deleted_before_its_job_reads_it_back_leaves_the_job_done(
    certd: RunningDaemon, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldStep(certd, monkeypatch, "_store")
    job_id = await _csr_job(client, "brief")
    await asyncio.wait_for(held.reached.wait(), 30)
    [stored] = await client.call("certificate.query", [["name", "=", "brief"]])
    assert await client.call("certificate.delete", stored["id"]) is True
    held.release.set()
    job = await client.call("core.job_wait", job_id, 30)
    assert job["state"] == "SUCCESS"
    assert job["result"] == {"id": stored["id"], "name": "brief"}
    assert await client.call("certificate.query", [["name", "=", "brief"]]) == []


async def test_a_ca_deleted_while_it_signs_fails_the_job_on_signedby(
    certd: RunningDaemon, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = await make_root(client)
    service = certd.daemon.services["certificate"]
    plan = service._plan_internal
    reached, release = asyncio.Event(), asyncio.Event()
    calls: list[object] = []

    async def held_in_the_job(*args: Any) -> Any:
        calls.append(args)
        result = await plan(*args)
        if len(calls) == 2:  # the first plan is the check before the job
            reached.set()
            await release.wait()
        return result

    monkeypatch.setattr(service, "_plan_internal", held_in_the_job)
    job_id = await client.call(
        "certificate.create",
        {
            "name": "orphan",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "HTTPS ECC Certificate",
            "lifetime": 30,
            "common": "orphan.example.test",
        },
    )
    await asyncio.wait_for(reached.wait(), 30)
    assert await client.call("certificateauthority.delete", root["id"], True)
    release.set()
    job = await client.call("core.job_wait", job_id, 30)
    assert job["state"] == "FAILED"
    assert job["error"] == "data.signedby: the CA was deleted while the job ran"
    assert await client.call("certificate.query", [["name", "=", "orphan"]]) == []
