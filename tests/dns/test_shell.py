"""ShellProvider with small scripts, and one that drives BIND through nsupdate."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certd.dns.base import DNSProvider, parse_attributes
from certd.dns.probe import probe_provider
from certd.dns.resolve import PropagationSettings
from certd.dns.shell import ShellAttributes, ShellProvider
from certd.errors import DNSLookupError, DNSProviderError, ValidationError
from tests.dns.conftest import TEST_CONTEXT, unique_label
from tests.testbed import NamedServer

MakeProvider = Callable[..., ShellProvider]

RECORDING_SCRIPT = """#!/bin/sh
printf '%s|%s|%s|%s|%s\\n' "$#" "$1" "$2" "$3" "$CERTD_ZONE" >> "{log}"
"""


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def make_shell(named: NamedServer, opened_providers: list[DNSProvider]) -> MakeProvider:
    """A shell provider whose zone lookups ask the session BIND."""
    context = dataclasses.replace(TEST_CONTEXT, resolvers=((named.host, named.port),))

    def make(**attributes: Any) -> ShellProvider:
        provider = ShellProvider(parse_attributes(ShellAttributes, attributes), context)
        opened_providers.append(provider)
        return provider

    return make


def test_attributes_check_the_script(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\n")
    cases = {
        "relative/script": "must be an absolute path",
        str(tmp_path / "missing"): "cannot be read: No such file or directory",
        str(tmp_path): "must be a regular file",
        str(not_executable): "must be executable by the daemon",
    }
    for script, message in cases.items():
        with pytest.raises(ValidationError) as caught:
            parse_attributes(ShellAttributes, {"script": script})
        assert [(e.field, e.message) for e in caught.value.errors] == [
            ("attributes.script", message)
        ]


async def test_arguments_reach_the_script_verbatim(
    tmp_path: Path, make_shell: MakeProvider
) -> None:
    log = tmp_path / "calls.log"
    script = write_script(tmp_path / "hook", RECORDING_SCRIPT.format(log=log))
    provider = make_shell(script=script, zone="example.test")
    value = "va lue;$(touch pwned)`id`"

    await provider.add_txt("example.test", "_acme-challenge.Example.test.", value)
    await provider.remove_txt("example.test", "_acme-challenge.example.test", value)

    assert log.read_text().splitlines() == [
        f"3|set|_acme-challenge.example.test|{value}|example.test",
        f"3|unset|_acme-challenge.example.test|{value}|example.test",
    ]
    assert not (tmp_path / "pwned").exists()


async def test_failure_carries_status_and_output(
    tmp_path: Path, make_shell: MakeProvider
) -> None:
    script = write_script(
        tmp_path / "fails",
        "#!/bin/sh\necho 'going to fail'\necho 'zone example.test is locked' >&2\nexit 3\n",
    )
    provider = make_shell(script=script, zone="example.test")

    with pytest.raises(DNSProviderError) as caught:
        await provider.add_txt("example.test", "_acme-challenge.example.test", "v")
    assert str(caught.value) == (
        f"shell: {script} set _acme-challenge.example.test exited with status 3: "
        "going to fail\nzone example.test is locked"
    )


def process_gone(pid: int) -> bool:
    """Whether pid has exited (a zombie counts: it runs no more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def test_hanging_script_is_killed_with_its_children(
    tmp_path: Path, make_shell: MakeProvider
) -> None:
    pid_file = tmp_path / "child.pid"
    script = write_script(
        tmp_path / "hangs",
        f"#!/bin/sh\nsh -c 'echo $$ > {pid_file}; exec sleep 30' &\nsleep 30\n",
    )
    provider = make_shell(script=script, zone="example.test", timeout=0.3)

    with pytest.raises(DNSProviderError) as caught:
        # a child left holding the output pipe would block us for its 30 s
        await asyncio.wait_for(
            provider.add_txt("example.test", "_acme-challenge.example.test", "v"), 10
        )

    assert "did not finish within 0.3 s and was killed" in str(caught.value)
    assert caught.value.retryable is True
    child = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is delivered asynchronously
        if process_gone(child):
            break
        await asyncio.sleep(0.02)
    assert process_gone(child)


async def test_find_zone_by_soa_through_resolvers(
    tmp_path: Path, make_shell: MakeProvider
) -> None:
    script = write_script(tmp_path / "noop", "#!/bin/sh\n")
    provider = make_shell(script=script)

    assert await provider.find_zone("_acme-challenge.a.b.example.org.test") == (
        "example.org.test"
    )
    with pytest.raises(DNSLookupError):
        await provider.find_zone("_acme-challenge.example.net")


@pytest.mark.skipif(shutil.which("nsupdate") is None, reason="needs bind9-dnsutils")
async def test_probe_with_nsupdate_script(
    tmp_path: Path,
    named: NamedServer,
    make_shell: MakeProvider,
    propagation: PropagationSettings,
) -> None:
    key = f"{named.tsig_algorithm}:{named.tsig_name}:{named.tsig_secret}"
    script = write_script(
        tmp_path / "nsupdate-hook",
        "#!/bin/sh\n"
        'case "$1" in set) op=add;; unset) op=delete;; *) exit 2;; esac\n'
        "printf 'server %s %s\\nzone %s\\nupdate %s %s. 60 IN TXT \"%s\"\\nsend\\n' "
        f'{named.host} {named.port} "$CERTD_ZONE" "$op" "$2" "$3" '
        f"| nsupdate -y {key}\n",
    )
    name = f"_acme-challenge.{unique_label()}.example.test"

    result = await probe_provider(make_shell(script=script), name, propagation)

    assert result["zone"] == "example.test"
    assert named.query(name) == []


def test_scripts_others_could_change_are_refused(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hook", "#!/bin/sh\nexit 0\n")
    assert parse_attributes(ShellAttributes, {"script": script}).script == script

    Path(script).chmod(0o777)
    with pytest.raises(ValidationError) as caught:
        parse_attributes(ShellAttributes, {"script": script})
    assert "must not be writable by group or others" in caught.value.message

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    inside = write_script(shared / "hook", "#!/bin/sh\nexit 0\n")
    with pytest.raises(ValidationError) as caught:
        parse_attributes(ShellAttributes, {"script": inside})
    assert "its directory" in caught.value.message

    link = tmp_path / "link"
    link.symlink_to(inside)
    with pytest.raises(ValidationError):
        parse_attributes(ShellAttributes, {"script": str(link)})
