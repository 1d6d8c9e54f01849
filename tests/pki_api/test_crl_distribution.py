"""``[pki] crl_base_url``: what certd's CAs sign names the CRL the daemon serves."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certd.client import Client
from certd.config import Config, load_config
from certd.errors import ValidationError
from tests.daemon import (
    RunningDaemon,
    call_job,
    make_config,
    running_daemon,
    write_config,
)
from tests.pki.conftest import OpenSSL
from tests.pki_api.conftest import (
    expect_error,
    fields,
    issue,
    leaf_of,
    make_intermediate,
    make_root,
    snapshot,
)
from tests.testbed import free_port


def _state(tmp_path: Path, migrated_store: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copyfile(migrated_store, state / "certd.db")
    return state


@pytest.fixture
async def published(
    tmp_path: Path, migrated_store: Path
) -> AsyncIterator[RunningDaemon]:
    """A daemon whose CRLs are published at its own HTTP listener."""
    port = free_port()
    config = make_config(
        _state(tmp_path, migrated_store),
        server={"http_port": port},
        pki={"crl_base_url": f"http://127.0.0.1:{port}/"},
    )
    async with running_daemon(config) as daemon:
        assert daemon.url == f"http://127.0.0.1:{port}"
        yield daemon


def openssl_crl_dp(openssl: OpenSSL, name: str, entry: dict[str, Any]) -> str:
    """What ``openssl x509 -ext crlDistributionPoints`` prints, stderr included."""
    path = openssl.write(f"{name}.pem", entry["chain_list"][0])
    return openssl.run(
        "x509", "-noout", "-in", path, "-ext", "crlDistributionPoints",
        with_stderr=True,
    )  # fmt: skip


def crl_uris(entry: dict[str, Any]) -> list[str] | None:
    """The URIs of an entry's cRLDistributionPoints, None without one."""
    try:
        ext = leaf_of(entry).extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        )
    except x509.ExtensionNotFound:
        return None
    assert ext.critical is False
    return [n.value for p in ext.value for n in p.full_name or []]


async def download_crl(url: str) -> bytes:
    """GET a CRL the way a relying party does: by the URL in the certificate."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, url
        assert response.content_type == "application/pkix-crl"
        body = await response.read()
    return x509.load_der_x509_crl(body).public_bytes(Encoding.PEM)


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` without raising on a refusal."""
    return subprocess.run(
        ["openssl", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


async def signed_csr(client: Client, ca: int, name: str) -> Any:
    """A CSR made by certd, then signed by ``ca`` with ca_sign_csr."""
    csr = await call_job(
        client,
        "certificate.create",
        {
            "name": f"{name}-csr",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "common": f"{name}.example.lan",
            "san": [f"{name}.example.lan"],
        },
    )
    return await client.call(
        "certificateauthority.ca_sign_csr",
        {"ca_id": ca, "csr_cert_id": csr["id"], "name": name},
    )


async def renewed(client: Client, entry: dict[str, Any]) -> Any:
    await call_job(client, "certificate.renew", entry["id"])
    new = await client.call("certificate.get_instance", entry["id"])
    assert new["serial"] != entry["serial"]
    return new


async def test_the_chain_names_each_issuers_crl_and_openssl_follows_it(
    published: RunningDaemon, openssl: OpenSSL
) -> None:
    base = published.url
    async with published.client() as client:
        root = await make_root(client)
        inter = await make_intermediate(client, root["id"])
        leaf = await issue(client, inter["id"])
        sibling = await issue(client, inter["id"], name="sibling")
        shown = {
            name: openssl_crl_dp(openssl, name, entry)
            for name, entry in (
                ("root", root),
                ("inter", inter),
                ("leaf", leaf),
                ("sibling", sibling),
            )
        }
        before = await download_crl(crl_uris(leaf)[0])  # type: ignore[index]
        await client.call(
            "certificate.update",
            leaf["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        root_crl = openssl.write(
            "root.crl.pem",
            await download_crl(crl_uris(inter)[0]),  # type: ignore[index]
        )
        inter_crl = openssl.write(
            "inter.crl.pem",
            await download_crl(crl_uris(leaf)[0]),  # type: ignore[index]
        )

    assert "X509v3 CRL Distribution Points" not in shown["root"]
    assert crl_uris(root) is None
    assert f"URI:{base}/crl/by-id/{root['id']}.crl\n" in shown["inter"]
    assert f"URI:{base}/crl/by-id/{inter['id']}.crl\n" in shown["leaf"]
    assert f"URI:{base}/crl/by-id/{inter['id']}.crl\n" in shown["sibling"]
    # The URL is the one the CA entry tells, under the configured base.
    assert crl_uris(leaf) == [base + inter["crl_url"]]
    assert crl_uris(inter) == [base + root["crl_url"]]
    assert list(x509.load_pem_x509_crl(before)) == []

    checks = (
        "-crl_check_all", "-CRLfile", root_crl, "-CRLfile", inter_crl,
        "-CAfile", openssl.write("root.pem", root["certificate"]),
        "-untrusted", openssl.write("inter.pem", inter["chain_list"][0]),
    )  # fmt: skip
    revoked = verify(*checks, openssl.write("leaf.pem", leaf["chain_list"][0]))
    good = verify(*checks, openssl.write("sibling.pem", sibling["chain_list"][0]))
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.endswith("sibling.pem: OK\n")


async def test_a_renamed_ca_keeps_the_crl_its_certificates_name(
    published: RunningDaemon,
) -> None:
    async with published.client() as client:
        root = await make_root(client, "before")
        leaf = await issue(client, root["id"])
        await client.call(
            "certificate.update",
            leaf["id"],
            {"revoked": True, "revoked_reason": "keyCompromise"},
        )
        renamed = await client.call(
            "certificateauthority.update", root["id"], {"name": "after"}
        )
        named_in_leaf = await download_crl(crl_uris(leaf)[0])  # type: ignore[index]
        by_new_name = await download_crl(published.url + "/crl/after.crl")
        async with aiohttp.ClientSession() as session:
            async with session.get(published.url + "/crl/before.crl") as old_name:
                old_status = old_name.status
            async with session.get(published.url + "/crl/by-id/99.crl") as unknown:
                unknown_status = unknown.status
            async with session.get(published.url + "/crl/by-id/x1.crl") as bad:
                bad_status = bad.status
            zero = published.url + f"/crl/by-id/0{root['id']}.crl"
            async with session.get(zero) as padded:
                padded_status = padded.status

    assert crl_uris(leaf) == [published.url + root["crl_url"]]
    assert renamed["crl_url"] == root["crl_url"] == f"/crl/by-id/{root['id']}.crl"
    crl = x509.load_pem_x509_crl(named_in_leaf)
    assert [r.serial_number for r in crl] == [int(leaf["serial"], 16)]
    assert named_in_leaf == by_new_name
    assert (old_status, unknown_status, bad_status) == (404, 404, 404)
    assert padded_status == 404  # one URL per CRL


async def test_signed_csrs_and_renewals_name_the_crl(
    published: RunningDaemon, openssl: OpenSSL
) -> None:
    url = published.url + "/crl/by-id/1.crl"  # the first CA of a new store
    async with published.client() as client:
        root = await make_root(client)
        app = await signed_csr(client, root["id"], "app")
        leaf = await issue(client, root["id"])
        new_leaf = await renewed(client, leaf)
        new_app = await renewed(client, app)

    assert app["create_type"] == "CA_SIGN_CSR"
    assert crl_uris(app) == [url]
    assert f"URI:{url}\n" in openssl_crl_dp(openssl, "app", app)
    assert crl_uris(new_leaf) == [url]
    assert crl_uris(new_app) == [url]
    assert f"URI:{url}\n" in openssl_crl_dp(openssl, "renewed", new_leaf)


async def test_unset_no_certificate_names_a_crl(
    certd: RunningDaemon, client: Client
) -> None:
    root = await make_root(client)
    inter = await make_intermediate(client, root["id"])
    leaf = await issue(client, inter["id"])
    app = await signed_csr(client, inter["id"], "app")
    new_leaf = await renewed(client, leaf)
    new_app = await renewed(client, app)

    assert certd.config.pki.crl_base_url is None
    for entry in (root, inter, leaf, app, new_leaf, new_app):
        assert crl_uris(entry) is None, entry["name"]
        assert "CRLDistributionPoints" not in entry["extensions"]


async def test_a_renewal_after_a_reload_puts_in_the_current_crl(
    tmp_path: Path, migrated_store: Path
) -> None:
    path = tmp_path / "certd.toml"
    write_config(path, make_config(_state(tmp_path, migrated_store)))

    async def reload(running: RunningDaemon, base_url: str | None) -> None:
        config = make_config(
            tmp_path / "state", pki={"crl_base_url": base_url} if base_url else {}
        )
        write_config(path, config)
        await running.daemon.reload()
        assert running.daemon.config.pki.crl_base_url == base_url

    async with (
        running_daemon(load_config(path)) as running,
        running.client() as client,
    ):
        root = await make_root(client)
        before = await issue(client, root["id"], name="before")
        await reload(running, "http://pki.example.lan")
        during = await issue(client, root["id"], name="during")
        added = await renewed(client, before)
        await reload(running, "https://proxy.example.lan/certd")
        replaced = await renewed(client, during)
        await reload(running, None)
        after = await issue(client, root["id"], name="after")
        kept = await renewed(client, replaced)

    assert crl_uris(before) is None
    assert crl_uris(during) == ["http://pki.example.lan/crl/by-id/1.crl"]
    assert crl_uris(added) == ["http://pki.example.lan/crl/by-id/1.crl"]
    assert crl_uris(replaced) == ["https://proxy.example.lan/certd/crl/by-id/1.crl"]
    # Unset, certd leaves the CRL a certificate names alone.
    assert crl_uris(after) is None
    assert crl_uris(kept) == ["https://proxy.example.lan/certd/crl/by-id/1.crl"]


async def test_cert_extensions_cannot_name_a_crl(published: RunningDaemon) -> None:
    async with published.client() as client:
        await _refused_crl_requests(client)


async def _refused_crl_requests(client: Client) -> None:
    root = await make_root(client)
    before = await snapshot(client)
    asked = {"CRLDistributionPoints": {"enabled": True}}

    on_leaf = await expect_error(
        client,
        "certificate.create",
        {
            "name": "leaf",
            "create_type": "CERTIFICATE_CREATE_INTERNAL",
            "signedby": root["id"],
            "profile": "HTTPS ECC Certificate",
            "san": ["a.example.lan"],
            "cert_extensions": asked,
        },
    )
    on_ca = await expect_error(
        client,
        "certificateauthority.create",
        {
            "name": "inter",
            "create_type": "CA_CREATE_INTERMEDIATE",
            "signedby": root["id"],
            "common": "inter",
            "cert_extensions": asked,
        },
    )

    # The CRL is always the signing CA's own; no request can choose another.
    assert fields(on_leaf) == ["data.cert_extensions.CRLDistributionPoints"]
    assert fields(on_ca) == ["data.cert_extensions.CRLDistributionPoints"]
    assert on_leaf.data["errors"][0]["message"] == "unknown field"
    assert await snapshot(client) == before


@pytest.mark.parametrize(
    ("value", "told"),
    [
        ("ftp://pki.example.lan", "http:// or https://"),
        ("pki.example.lan", "http:// or https://"),
        ("http://", "must name a host"),
        ("http://pki.example.lan/?x=1", "no query"),
        ("http://pki.example.lan/crl#top", "fragment"),
        ("http://user:secret@pki.example.lan", "user name or password"),
        ("http://pki.example.lan:99999", "not a URL"),
        ("http://pkí.example.lan", "ASCII"),
        ("http://pki.example.lan/" + "p" * 500, "at most 512 characters"),
        ("http://pki.example.lan/a%2", "'%' at position 25 is not allowed"),
        ("http://pki.example.lan/a%zz/", "'%' at position 25 is not allowed"),
        ("http://pki.example.lan/<crl>", "'<' at position 24 is not allowed"),
        ("http://pki.example.lan/a|b", "'|' at position 25 is not allowed"),
        ("http://pki.example.lan:0/", "port 0"),
        ("http://pki.example.lan/pki/../x", "no '.' or '..' path segments"),
    ],
)
def test_a_bad_base_url_is_refused(tmp_path: Path, value: str, told: str) -> None:
    path = tmp_path / "certd.toml"
    path.write_text(f"[pki]\ncrl_base_url = {value!r}\n".replace("'", '"'))

    with pytest.raises(ValidationError) as caught:
        load_config(path)

    assert [e.field for e in caught.value.errors] == ["pki.crl_base_url"]
    assert told in caught.value.errors[0].message
    assert not caught.value.errors[0].message.startswith("Value error")


def test_the_base_url_is_kept_without_a_trailing_slash() -> None:
    assert Config().pki.crl_base_url is None
    for given, kept in (
        ("http://pki.example.lan", "http://pki.example.lan"),
        ("https://pki.example.lan:8443/certd/", "https://pki.example.lan:8443/certd"),
        ("http://[::1]:8446", "http://[::1]:8446"),
        ("http://pki.example.lan/my%20pki/", "http://pki.example.lan/my%20pki"),
        ("", None),
    ):
        config = Config.model_validate({"pki": {"crl_base_url": given}})
        assert config.pki.crl_base_url == kept
