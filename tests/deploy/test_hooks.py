"""Deploy hooks: argv without a shell, a fixed environment, timeouts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from certd.deploy.hooks import hook_environment, run_hook

ENV = hook_environment(
    certificate_id=7,
    name="www",
    reason="renewed",
    serial="0a1b",
    not_after="2030-01-01T00:00:00+00:00",
    fingerprint="ab" * 32,
    domains=["www.example.test", "example.test"],
    files={"fullchain": "/srv/tls/fullchain.pem", "privkey": "/srv/tls/privkey.pem"},
)


def test_hook_environment_is_complete_and_closed() -> None:
    assert ENV == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "CERTD_CERT_ID": "7",
        "CERTD_CERT_NAME": "www",
        "CERTD_REASON": "renewed",
        "CERTD_SERIAL": "0a1b",
        "CERTD_NOT_AFTER": "2030-01-01T00:00:00+00:00",
        "CERTD_FINGERPRINT_SHA256": "ab" * 32,
        "CERTD_DOMAINS": "www.example.test example.test",
        "CERTD_FULLCHAIN_PATH": "/srv/tls/fullchain.pem",
        "CERTD_KEY_PATH": "/srv/tls/privkey.pem",
        "CERTD_DEPLOY_DIR": "/srv/tls",
    }


async def test_run_hook_passes_argv_literally_with_the_environment(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "marker"
    script = (
        "import os, sys; "
        f"open({str(marker)!r}, 'w').write(repr(sys.argv[1:]) + ' ' + "
        "os.environ['CERTD_CERT_NAME'] + ' ' + str('HOME' in os.environ)); "
        "print('done')"
    )

    result = await run_hook(
        [sys.executable, "-c", script, "a; touch /tmp/x", "$HOME"], ENV, timeout=10
    )

    assert result.ok
    assert result.returncode == 0
    assert result.output == "done\n"
    assert marker.read_text() == "['a; touch /tmp/x', '$HOME'] www False"


async def test_run_hook_reports_failure_and_output() -> None:
    result = await run_hook(
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], ENV, 10
    )

    assert not result.ok
    assert result.returncode == 3
    assert result.output == "boom\n"
    assert result.describe() == f"{sys.executable} exited with status 3"


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_run_hook_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # the child would outlive its parent unless the whole group is killed
    script = (
        "import subprocess, time; "
        "child = subprocess.Popen(['/bin/sleep', '30']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); "
        "time.sleep(30)"
    )

    result = await run_hook([sys.executable, "-c", script], ENV, timeout=0.5)

    assert result.timed_out
    assert not result.ok
    assert result.describe().endswith("killed after its timeout of 0.5 s")
    child = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is delivered asynchronously
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)


async def test_run_hook_missing_program() -> None:
    result = await run_hook(["/nonexistent/reload"], ENV, 10)

    assert not result.ok
    assert result.error == "cannot run /nonexistent/reload: No such file or directory"
    assert result.record()["ok"] is False


def test_hook_output_is_cut_to_its_tail() -> None:
    from certd.deploy.hooks import OUTPUT_LIMIT, _tail

    text = _tail(b"x" * (OUTPUT_LIMIT + 10) + b"END")

    assert text.endswith("END")
    assert len(text) == OUTPUT_LIMIT + 1
