"""certificate.export: PEM and PKCS#12, audited, and never a key in query results."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.serialization import pkcs12
from structlog.testing import capture_logs

from certd.client import Client
from certd.pki.keys import load_private_key, public_key_der
from tests.daemon import RunningDaemon, call_job
from tests.pki.conftest import OpenSSL
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_intermediate,
    make_root,
)


async def test_pem_export_gives_leaf_chain_and_key(client: Client) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(client, inter["id"])

    with capture_logs() as logs:
        exported = await client.call("certificate.export", leaf["id"])

    assert exported["format"] == "PEM"
    assert (exported["id"], exported["name"]) == (leaf["id"], "leaf")
    assert exported["certificate"] == leaf["chain_list"][0]
    assert exported["chain"] == [inter["chain_list"][0], root["certificate"]]
    assert exported["pkcs12"] is None
    key = load_private_key(exported["privatekey"])
    assert public_key_der(key) == public_key_der(leaf_of(leaf).public_key())  # type: ignore[arg-type]
    events = [entry["event"] for entry in logs]
    assert "rpc_audit" in events
    audit = next(e for e in logs if e["event"] == "certificate_exported")
    assert audit == {
        "event": "certificate_exported",
        "log_level": "info",
        "certificate": "leaf",
        "certificate_id": leaf["id"],
        "format": "PEM",
        "encrypted": False,
    }
    assert "PRIVATE KEY" not in str(logs)


async def test_pkcs12_export_is_read_by_openssl(
    client: Client, openssl: OpenSSL
) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])

    exported = await client.call(
        "certificate.export", leaf["id"], "PKCS12", "export-pw"
    )
    data = base64.b64decode(exported["pkcs12"])
    loaded = pkcs12.load_pkcs12(data, b"export-pw")
    dump = openssl.run(
        "pkcs12", "-in", openssl.write("leaf.p12", data), "-passin", "pass:export-pw",
        "-nodes", "-info", with_stderr=True,
    )  # fmt: skip

    assert exported["privatekey"] is None
    assert exported["chain"] == [root["certificate"]]
    assert loaded.cert is not None and loaded.cert.friendly_name == b"leaf"
    assert loaded.cert.certificate == leaf_of(leaf)
    assert [c.certificate for c in loaded.additional_certs] == [leaf_of(root)]
    assert "PBES2" in dump and "AES-256-CBC" in dump
    assert dump.count("BEGIN CERTIFICATE") == 2 and "BEGIN PRIVATE KEY" in dump


async def test_export_refusals(certd: RunningDaemon, client: Client) -> None:
    root = await make_root(client)
    leaf = await issue(client, root["id"])
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": "csr",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "san": ["a.example"],
        },
    )
    _, viewer_key = await certd.daemon.api_keys.create("viewer", readonly=True)

    of_csr = await expect_error(client, "certificate.export", csr["id"])
    missing = await expect_error(client, "certificate.export", 999)
    pem_password = await expect_error(
        client, "certificate.export", leaf["id"], "PEM", "pw"
    )
    bad_format = await expect_error(client, "certificate.export", leaf["id"], "DER")
    async with certd.client(viewer_key) as viewer:
        listed = await viewer.call("certificate.get_instance", leaf["id"])
        read_only = await expect_error(viewer, "certificate.export", leaf["id"])

    assert fields(of_csr) == ["id"] and "is a CSR" in of_csr.message
    assert missing.code == -32003
    assert fields(pem_password) == ["password"]
    assert fields(bad_format) == ["format"]
    assert listed["has_privatekey"] is True and "privatekey" not in listed
    assert read_only.code == -32002
    assert "read-only" in read_only.message
