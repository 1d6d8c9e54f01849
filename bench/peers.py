"""certbot and lego as users run them, each against the same local bed.

Both are given their fastest honest settings on this bed and never talk to
anything but 127.0.0.1: lego always gets ``--dns.resolvers`` (without it, it
asks the system's or public resolvers to find the zone), certbot's RFC 2136
plugin is pointed at the local BIND, and every proxy variable is dropped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import NamedServer, PebbleServer

EMAIL = "bench@example.test"
# One certificate takes seconds; lego's default wildcard order about a minute.
PROCESS_TIMEOUT = 180
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Run:
    """One timed process (or loop of processes) and whether it succeeded."""

    seconds: float
    ok: bool
    detail: str = ""


class Peers:
    """Builds and runs lego and certbot command lines for the bed."""

    def __init__(self, named: NamedServer, pebble: PebbleServer, workdir: Path):
        self.named = named
        self.pebble = pebble
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.certbot_ini = workdir / "rfc2136.ini"
        self.certbot_ini.write_text(
            f"dns_rfc2136_server = {named.host}\n"
            f"dns_rfc2136_port = {named.port}\n"
            f"dns_rfc2136_name = {named.tsig_name}\n"
            f"dns_rfc2136_secret = {named.tsig_secret}\n"
            "dns_rfc2136_algorithm = HMAC-SHA256\n"
        )
        self.certbot_ini.chmod(0o600)

    @staticmethod
    def available(tool: str) -> bool:
        return shutil.which(tool) is not None

    def env(self, *, lego_sequence_interval: float | None = 0) -> dict[str, str]:
        """The environment for both tools: trust pebble, TSIG key, no proxies.

        ``lego_sequence_interval`` None leaves lego's default (60 s between the
        authorizations of one name), which a wildcard with its apex needs only
        because lego replaces the TXT set instead of adding to it.
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in _PROXY_VARIABLES
            and not k.startswith(("RFC2136_", "LEGO_"))
            # certbot is Debian's, on the system Python, not certd's venv.
            and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env.update(
            {
                "NO_PROXY": "*",
                "REQUESTS_CA_BUNDLE": str(self.pebble.tls_ca_path),
                "LEGO_CA_CERTIFICATES": str(self.pebble.tls_ca_path),
                "RFC2136_NAMESERVER": self.named.address,
                "RFC2136_TSIG_KEY": self.named.tsig_name,
                "RFC2136_TSIG_SECRET": self.named.tsig_secret,
                "RFC2136_TSIG_ALGORITHM": f"{self.named.tsig_algorithm}.",
                # The check it skips is disabled anyway (--dns.disable-cp).
                "RFC2136_POLLING_INTERVAL": "0",
                "RFC2136_PROPAGATION_TIMEOUT": "10",
            }
        )
        if lego_sequence_interval is not None:
            env["RFC2136_SEQUENCE_INTERVAL"] = str(lego_sequence_interval)
        return env

    def lego_argv(self, path: Path, names: list[str]) -> list[str]:
        argv = [
            "lego",
            "--server",
            self.pebble.directory_url,
            "--path",
            str(path),
            "--accept-tos",
            "--email",
            EMAIL,
            "--key-type",
            "ec256",
            "--dns",
            "rfc2136",
            # Loopback only: the zone is found through these resolvers, and the
            # propagation check would ask the NS on port 53, which is not ours.
            "--dns.resolvers",
            self.named.address,
            "--dns.disable-cp",
        ]
        for name in names:
            argv += ["-d", name]
        return [*argv, "run"]

    def certbot_argv(
        self, state: Path, names: list[str], duplicate: bool = False
    ) -> list[str]:
        argv = [
            "certbot",
            "certonly",
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--server",
            self.pebble.directory_url,
            "--config-dir",
            str(state / "cfg"),
            "--work-dir",
            str(state / "work"),
            "--logs-dir",
            str(state / "logs"),
            "--key-type",
            "ecdsa",
            "--elliptic-curve",
            "secp256r1",
            "--dns-rfc2136",
            "--dns-rfc2136-credentials",
            str(self.certbot_ini),
            "--dns-rfc2136-propagation-seconds",
            "0",
        ]
        if duplicate:
            argv.append("--duplicate")
        for name in names:
            argv += ["-d", name]
        return argv

    @staticmethod
    def _lego_cert(path: Path, name: str) -> Path:
        return path / "certificates" / f"{name.replace('*', '_')}.crt"

    @staticmethod
    def _certbot_cert(state: Path, name: str) -> Path:
        return state / "cfg" / "live" / name.lstrip("*.") / "fullchain.pem"

    def _run(self, argv: list[str], env: dict[str, str], log: Path) -> bool:
        with log.open("ab") as out:
            try:
                proc = subprocess.run(
                    argv,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=PROCESS_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                return False
        return proc.returncode == 0

    def lego(
        self, path: Path, names: list[str], *, sequence_interval: float | None = 0
    ) -> Run:
        """One lego process for one order of ``names``."""
        env = self.env(lego_sequence_interval=sequence_interval)
        log = path.parent / f"{path.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ok = self._run(self.lego_argv(path, names), env, log)
        seconds = time.perf_counter() - started
        ok = ok and self._lego_cert(path, names[0]).exists()
        return Run(seconds, ok, "" if ok else f"see {log}")

    def certbot(self, state: Path, names: list[str], duplicate: bool = False) -> Run:
        """One certbot process for one order of ``names``."""
        state.mkdir(parents=True, exist_ok=True)
        log = state / "bench.log"
        started = time.perf_counter()
        ok = self._run(self.certbot_argv(state, names, duplicate), self.env(), log)
        seconds = time.perf_counter() - started
        ok = ok and self._certbot_cert(state, names[0]).exists()
        return Run(seconds, ok, "" if ok else f"see {log}")

    def sequential(self, tool: str, state: Path, names: list[str]) -> Run:
        """One process per certificate, one after another, as a shell loop would."""
        started = time.perf_counter()
        for name in names:
            run = (
                self.lego(state, [name])
                if tool == "lego"
                else self.certbot(state, [name])
            )
            if not run.ok:
                return Run(time.perf_counter() - started, False, run.detail)
        return Run(time.perf_counter() - started, True)

    async def lego_parallel(self, state: Path, names: list[str], width: int) -> Run:
        """lego for each name, ``width`` processes at a time, each slot its own account.

        Slots keep separate ``--path`` directories: lego writes its account
        file on first use, and two processes registering into one directory at
        once would race.
        """
        env = self.env()
        slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(width):
            slots.put_nowait(slot)
        failures: list[str] = []

        async def one(name: str) -> None:
            slot = await slots.get()
            path = state / f"slot{slot}"
            try:
                with (state / f"slot{slot}.log").open("ab") as out:
                    proc = await asyncio.create_subprocess_exec(
                        *self.lego_argv(path, [name]),
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                    try:
                        code = await asyncio.wait_for(proc.wait(), PROCESS_TIMEOUT)
                    except TimeoutError:
                        proc.kill()
                        code = await proc.wait()
                if code != 0 or not self._lego_cert(path, name).exists():
                    failures.append(name)
            finally:
                slots.put_nowait(slot)

        state.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        seconds = time.perf_counter() - started
        return Run(seconds, not failures, f"failed: {failures[:5]}" if failures else "")


def version(tool: str) -> str:
    """The Debian package version of a tool, or its own --version line."""
    package = {"named": "bind9"}.get(tool, tool)
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "not installed"
