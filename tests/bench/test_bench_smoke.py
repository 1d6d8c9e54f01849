"""The bench runs on a tiny size and writes its results in the documented shape.

No figure is asserted against a goal here: timings belong in the bench, not
in the test suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import GOALS, render

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    out_json = tmp_path / "latest.json"
    out_md = tmp_path / "benchmarks.md"
    # A short directory: the daemon's unix socket path must fit in 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
    try:
        run = _run_bench(out_json, out_md, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _check(run, out_json, out_md)


def _run_bench(
    out_json: Path, out_md: Path, work: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "1,5",
            "--runs",
            "1",
            "--no-peers",
            "--load-seconds",
            "0.3",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check(run: subprocess.CompletedProcess[str], out_json: Path, out_md: Path) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out_json.read_text())

    assert result["schema"] == 1
    assert set(result["machine"]) >= {"nproc", "cpu_model", "memory_gb", "kernel"}
    assert result["machine"]["nproc"] >= 1
    assert set(result["versions"]) >= {"certd", "certbot", "lego", "pebble", "bind9"}
    libraries = result["versions"]["certd's Python libraries"]
    assert libraries.startswith("aiohttp ") and ", SQLAlchemy " in libraries
    assert ", pydantic-core " in libraries and ", acme " in libraries
    assert "not installed" not in libraries
    assert result["options"]["runs"] == 1 and result["options"]["peers"] is False
    assert set(result["scenarios"]) == {"1", "5"}

    one = result["scenarios"]["1"]
    assert one["title"] == GOALS[1]["title"]
    assert set(one["results"]) == {"certd"}
    certd = one["results"]["certd"]
    assert certd["unit"] == "s" and certd["n"] == 1 and len(certd["runs"]) == 1
    assert certd["min"] == certd["median"] == certd["max"] > 0
    assert one["ratios"] == {"certd/lego": None, "certd/certbot": None}

    calls = result["scenarios"]["5"]["results"]
    assert set(calls) == {
        f"{method} over {transport}"
        for method in ("core.ping", "certificate.get_instance")
        for transport in ("http", "unix")
    }
    for figure in calls.values():
        assert figure["unit"] == "calls/s" and figure["median"] > 0
        assert figure["p99_ms"]["unit"] == "ms" and figure["p99_ms"]["n"] == 1

    markdown = out_md.read_text()
    assert markdown == render(result, str(out_json))
    assert f"from `{out_json}`;" in markdown
    assert "1 run per figure, peers not run.\n" in markdown
    assert "- certd's Python libraries: aiohttp " in markdown
    assert "| 1 | 1 certificate, one name" in markdown
    assert "| 2 | wildcard + apex in one order |" in markdown
    assert "not run" in markdown
    assert "certd: " in markdown and "nproc" not in markdown
