"""Deploy hooks: argv without a shell, a fixed environment, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from certd.deploy.hooks import OUTPUT_LIMIT, hook_environment, run_hook
from tests.renewal.factory import wait_until

ENV = hook_environment(
    certificate_id=7,
    name="www",
    reason="renewed",
    serial="0a1b",
    not_after="2030-01-01T00:00:00+00:00",
    fingerprint="ab" * 32,
    domains=["www.example.test", "example.test"],
    files={"fullchain": "/srv/tls/fullchain.pem", "privkey": "/srv/tls/privkey.pem"},
    node="host-a-0123456789abcdef",
)


def test_hook_environment_is_complete_and_closed() -> None:
    assert ENV == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "CERTD_NODE": "host-a-0123456789abcdef",
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


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def test_run_hook_keeps_only_a_tail_of_endless_output(tmp_path: Path) -> None:
    written, release = tmp_path / "written", tmp_path / "release"
    megabytes = 200
    # writes far more than the tail, then waits until the test has measured:
    # all but one pipe buffer of it has been read by then
    script = (
        "import sys, time, pathlib; "
        f"[sys.stdout.buffer.write(b'A' * 1048576) for _ in range({megabytes})]; "
        "sys.stdout.buffer.write(b'END\\n'); sys.stdout.flush(); "
        f"pathlib.Path({str(written)!r}).touch(); "
        f"[time.sleep(0.01) for _ in iter(lambda: pathlib.Path({str(release)!r})"
        ".exists(), True)]"
    )
    before = _resident_bytes()

    running = asyncio.create_task(run_hook([sys.executable, "-c", script], ENV, 60))
    await wait_until(written.exists, timeout=60)
    grown = _resident_bytes() - before
    release.touch()
    result = await running

    assert grown < 50 * 1024 * 1024, f"memory grew by {grown} bytes"
    assert result.ok
    assert result.output == "…" + ("A" * 1048576 + "END\n")[-OUTPUT_LIMIT:]


async def test_run_hook_ends_with_the_hook_not_its_background_service(
    tmp_path: Path,
) -> None:
    # the background process keeps the output pipe open long after the hook
    script = "setsid /bin/sleep 123 & echo started $!; exit 0"

    result = await run_hook(["/bin/sh", "-c", script], ENV, timeout=10)

    assert result.output.startswith("started ")
    service = int(result.output.split()[1])
    try:
        assert (result.returncode, result.timed_out, result.ok) == (0, False, True)
        assert _alive(service)  # a service the hook started is not killed
    finally:
        os.kill(service, signal.SIGKILL)


async def test_run_hook_reports_the_exit_status_despite_a_background_process(
    tmp_path: Path,
) -> None:
    script = "setsid /bin/sleep 123 & echo started $!; exit 4"

    result = await run_hook(["/bin/sh", "-c", script], ENV, timeout=10)

    os.kill(int(result.output.split()[1]), signal.SIGKILL)
    assert (result.returncode, result.timed_out, result.ok) == (4, False, False)
