"""scripts/testbed: the bed a new user tries certd's ACME path on."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from cryptography import x509

from certd.client import Client
from certd.config import load_config
from certd.service import Daemon
from tests.daemon import call_job

ROOT = Path(__file__).resolve().parents[2]


def other_venv(path: Path) -> Path:
    """A venv elsewhere (as CERTD_VENV makes one) that sees this venv's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", path], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    site_packages = path / purelib.relative_to(sys.prefix)
    # addsitedir also runs the .pth files there, among them certd's editable one
    (site_packages / "project.pth").write_text(
        f"import site; site.addsitedir({str(purelib)!r})\n"
    )
    return path


def commands(lines: list[str]) -> list[list[str]]:
    """The printed shell commands as argv lists, continuation lines joined."""
    joined: list[str] = []
    pending = ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        joined.append(pending + line)
        pending = ""
    return [shlex.split(line) for line in joined if line and not line.startswith("#")]


async def test_the_printed_walkthrough_gets_a_certificate(tmp_path: Path) -> None:
    venv = other_venv(tmp_path / "elsewhere")
    bed = tmp_path / "bed"
    process = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "python"),
        str(ROOT / "scripts" / "testbed.py"),
        str(bed),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    certd = str(venv / "bin" / "certd")
    work = tmp_path / "work"
    work.mkdir()
    try:
        while not lines or lines[-1] != "ready; Ctrl-C stops the bed":
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "the bed stopped before it was ready"
            lines.append(line.decode().rstrip("\n"))
        printed = commands(lines[lines.index("") + 1 : -1])
        calls = [argv[2:] for argv in printed if argv[:2] == [certd, "call"]]
        children = (
            Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        )
        config = load_config(bed / "certd.toml")
        daemon = Daemon(config)
        await daemon.start()
        try:
            assert config.server.unix_socket is not None
            async with Client(socket=config.server.unix_socket) as client:
                authenticator = await client.call(calls[0][0], json.loads(calls[0][1]))
                csr = await call_job(client, calls[1][0], json.loads(calls[1][1]))
                cert = await call_job(client, calls[2][0], json.loads(calls[2][1]))
                queried = await client.call(
                    calls[3][0], json.loads(calls[3][1]), json.loads(calls[3][2])
                )
        finally:
            await daemon.stop()
        # what `| jq -r .certificate > www.pem` leaves, then the printed check
        assert calls[3][3:] == ["|", "jq", "-r", ".certificate", ">", "www.pem"]
        (work / "www.pem").write_text(queried["certificate"])
        openssl = await asyncio.create_subprocess_exec(
            *printed[-1], cwd=work, stdout=asyncio.subprocess.PIPE
        )
        verified = (await openssl.communicate())[0].decode()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 30)

    # the bed's own daemon, from the venv the bed runs in, on the bed's config
    assert printed[:2] == [
        ["export", f"CERTD_CONFIG={bed / 'certd.toml'}"],
        [certd, "serve", "&"],
    ]
    assert [c[0] for c in calls] == [
        "acme.dns.authenticator.create",
        "certificate.create",
        "certificate.create",
        "certificate.query",
    ]
    assert (authenticator["id"], csr["id"]) == (1, 1)
    assert cert["cert_type"] == "CERTIFICATE"
    assert cert["san"] == ["DNS:www.example.test"]
    assert cert["acme"]["directory"].startswith("https://127.0.0.1:")
    assert queried["id"] == cert["id"]

    # pebble's root of this run: a self-signed CA that the issued chain leads to
    root_path = bed / "pebble-root.pem"
    assert f"pebble's root CA: {root_path}" in lines
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is True
    assert root.subject == root.issuer
    chain = x509.load_pem_x509_certificates(queried["certificate"].encode())
    assert chain[-1].issuer == root.subject
    assert printed[-1] == [
        "openssl",
        "verify",
        "-CAfile",
        str(root_path),
        "-untrusted",
        "www.pem",
        "www.pem",
    ]
    assert (openssl.returncode, verified) == (0, "www.pem: OK\n")

    assert returncode == 0
    # BIND and pebble ran as its children, and stopped with it
    assert len(children) == 2
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
