"""The certd command against a daemon running in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon import daemon_process, make_config

CANARY_TSIG = "Y2FuYXJ5LXRzaWctc2VjcmV0LTdmM2E5YzE="  # base64 of a canary
CANARY_TOKEN = "canary-cloudflare-token-4b1d"


def certd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("cli")
    config = make_config(directory / "state", log={"level": "debug", "format": "json"})
    with daemon_process(config, directory) as process:
        yield process


def test_call_prints_the_result(running) -> None:  # type: ignore[no-untyped-def]
    result = certd(running.config_path, "call", "core.ping")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "pong"


def test_call_follows_a_job_and_shows_progress(running) -> None:  # type: ignore[no-untyped-def]
    params = json.dumps(
        {
            "name": "cli-csr",
            "create_type": "CERTIFICATE_CREATE_CSR",
            "key_type": "EC",
            "common": "cli.example.test",
        }
    )
    result = certd(running.config_path, "call", "certificate.create", params)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["name"] == "cli-csr"
    assert entry["cert_type"] == "CSR"
    assert entry["common"] == "cli.example.test"
    # A fast job may end before the first look at it: at least its last step
    # and the end are shown.
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("[100.0%]")
    assert any(step in lines[-1] for step in ("signing the CSR", "generating"))


def test_call_errors_are_json_on_stderr(running) -> None:  # type: ignore[no-untyped-def]
    result = certd(running.config_path, "call", "certificate.get_instance", "999")
    assert result.returncode == 1
    error = json.loads(result.stderr)
    assert error["code"] == -32003
    assert "999" in error["message"]
    result = certd(running.config_path, "call", "core.ping", "{bad")
    assert result.returncode == 2
    assert "params.0" in result.stderr


def test_apikey_create_then_call_over_http(running) -> None:  # type: ignore[no-untyped-def]
    created = certd(running.config_path, "apikey", "create", "cli-user")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("certd_")
    port = next(
        json.loads(line)["port"]
        for line in running.log_lines()
        if '"http_listening"' in line
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "certd",
            "call",
            "--url",
            f"http://127.0.0.1:{port}",
            "--api-key",
            key,
            "core.ping",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(result.stdout) == "pong"
    keyless = certd(
        running.config_path, "call", "--url", f"http://127.0.0.1:{port}", "core.ping"
    )
    assert keyless.returncode == 2
    assert keyless.stderr == (
        "certd: --api-key: a call over --url needs an API key: give --api-key or "
        "set CERTD_API_KEY (certd apikey create NAME makes one)\n"
    )
    for url, told in (
        (f"127.0.0.1:{port}", "give the daemon's address as http://HOST:PORT"),
        (f"http://user:pw@127.0.0.1:{port}", "carries a user name or password"),
        (f"http://127.0.0.1:{port}x", "not a URL"),
    ):
        odd = certd(running.config_path, "call", "--url", url, "--api-key", key, "x")
        assert (odd.returncode, odd.stderr.startswith(f"certd: --url: {told}")) == (
            2,
            True,
        ), odd.stderr
    # a key read from a file keeps its newline
    url_ok = f"http://127.0.0.1:{port}"
    newline = subprocess.run(
        [sys.executable, "-m", "certd", "call", "--url", url_ok, "core.ping"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CERTD_API_KEY": key + "\n"},
    )
    assert json.loads(newline.stdout) == "pong", newline.stderr
    listed = certd(running.config_path, "apikey", "list")
    assert key not in listed.stdout
    assert "cli-user" in listed.stdout


def test_logs_are_json_lines_without_secrets(running) -> None:  # type: ignore[no-untyped-def]
    attributes = {
        "authenticator": "rfc2136",
        "server": "127.0.0.1",
        "tsig_key_name": "k",
        "tsig_secret": CANARY_TSIG,
    }
    result = certd(
        running.config_path,
        "call",
        "acme.dns.authenticator.create",
        json.dumps({"name": "canary", "attributes": attributes}),
    )
    assert result.returncode == 0, result.stderr
    assert CANARY_TSIG not in result.stdout
    bad = certd(
        running.config_path,
        "call",
        "acme.dns.authenticator.create",
        json.dumps(
            {
                "name": "cf",
                "attributes": {
                    "authenticator": "cloudflare",
                    "api_token": CANARY_TOKEN,
                    "api_key": CANARY_TOKEN,
                },
            }
        ),
    )
    assert bad.returncode == 1
    assert CANARY_TOKEN not in bad.stderr
    queried = certd(running.config_path, "call", "acme.dns.authenticator.query")
    jobs = certd(running.config_path, "call", "core.get_jobs")
    assert CANARY_TSIG not in queried.stdout + jobs.stdout
    lines = running.log_lines()
    records = [json.loads(line) for line in lines]
    assert all("event" in r and "timestamp" in r for r in records)
    audit = [r for r in records if r["event"] == "rpc_audit"]
    assert any(
        r["method"] == "acme.dns.authenticator.create" and r["request_id"]
        for r in audit
    )
    text = "\n".join(lines)
    assert CANARY_TSIG not in text
    assert CANARY_TOKEN not in text
