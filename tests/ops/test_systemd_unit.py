"""The shipped unit file, as systemd itself reads it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "certd.service"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian: apt-get install systemd)"
        )
    # verify checks that ExecStart exists: point it at this checkout's certd
    certd = Path(sys.executable).with_name("certd")
    text = UNIT.read_text().replace("/opt/certd/.venv/bin/certd", str(certd))
    path = tmp_path / "certd.service"
    path.write_text(text)
    return path


def test_unit_verifies_without_warnings(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_unit_sandbox_exposure_is_low(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )

    found = re.search(
        r"Overall exposure level for certd.service: ([0-9.]+)", result.stdout
    )
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.0


def test_unit_settings() -> None:
    settings = [
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    values = dict(settings)

    assert values["Type"] == "notify"
    assert values["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert values["StateDirectory"] == "certd"
    assert values["RuntimeDirectory"] == "certd"
    assert values["ProtectSystem"] == "strict"
    assert values["WatchdogSec"] == "60s"
    assert ["ReadWritePaths", "-/etc/certd/live"] in settings
