"""The bench: every scenario on one local bed, certd next to certbot and lego.

    bench/run [--quick] [--runs N] [--only 1,5] [--no-peers]

Writes bench/results/latest.json and docs/benchmarks.md (see ``--json`` and
``--markdown``). Every server listens on 127.0.0.1 or a unix socket; every
load is bounded in calls and time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.daemon import BenchError, Certd, issue, running_certd, wait_job
from bench.inventory import fill_store
from bench.load import percentile
from bench.peers import Peers, version
from bench.report import GOALS, P99_BEFORE, write_markdown
from bench.stats import figure, ratio
from certd import __version__
from tests.testbed import NamedServer, PebbleServer, start_named, start_pebble

# The libraries the daemon is built on, as it imports them at start
# (pydantic loads its model machinery lazily, and SQLAlchemy its SQLite dialect).
LIBRARY_GROUPS = {
    "SQLAlchemy (asyncio ORM, SQLite)": (
        "sqlalchemy.ext.asyncio",
        "sqlalchemy.orm",
        "sqlalchemy.dialects.sqlite.aiosqlite",
        "aiosqlite",
    ),
    "aiohttp": ("aiohttp.web",),
    "cryptography": ("cryptography.x509",),
    "pydantic": ("pydantic.main",),
    "jsonrpcserver": ("jsonrpcserver",),
    "APScheduler": ("apscheduler.schedulers.asyncio",),
    "structlog": ("structlog",),
    "prometheus_client": ("prometheus_client",),
}
LIBRARIES = tuple(name for group in LIBRARY_GROUPS.values() for name in group)
_RSS_AFTER_IMPORTS = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmRSS")).split()[1])
"""


def libraries_rss(leave_out: tuple[str, ...] = ()) -> float:
    """Resident MB of a Python that has imported LIBRARIES and nothing of certd."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_AFTER_IMPORTS,
            *(name for name in LIBRARIES if name not in leave_out),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return round(int(out.stdout.strip()) / 1024, 1)


def library_shares(runs: int) -> dict[str, Any]:
    """What each library adds on its own: all of them, less all but that one.

    Libraries share what they import (typing, asyncio, ssl...), so a share is
    what leaving that one library out would save the daemon, not what a
    Python importing it alone would hold.
    """
    every = [libraries_rss() for _ in range(runs)]
    shares: dict[str, Any] = {
        "for reference: the libraries alone, imported": figure(every, "MB")
    }
    floor = min(every)
    for label, group in LIBRARY_GROUPS.items():
        without = [libraries_rss(group) for _ in range(runs)]
        shares[f"for reference: {label}'s own share"] = figure(
            [round(floor - value, 1) for value in without], "MB"
        )
    return shares


ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (1, 2, 3, 4, 5, 6, 7, 8)


@dataclass
class Options:
    """How much to run."""

    runs: int = 5
    peer_runs: int = 3
    lego_default_runs: int = 1
    certs: int = 50
    parallel: int = 8
    inventory: int = 10_000
    load_seconds: float = 3.0
    keygen_keys: int = 8
    only: list[int] = field(default_factory=lambda: list(SCENARIOS))
    peers: bool = True
    quick: bool = False


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        # Other work on the machine while the bench ran skews every figure.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def checkout() -> str:
    """The commit certd runs from, with ``-dirty`` when its files differ from it.

    The bench's own outputs (the results and the report) do not count: an
    earlier run in the same checkout wrote them.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short=7", "HEAD")
    if not commit:
        return "no git"
    changed = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)bench/results",
        ":(exclude)docs/benchmarks.md",
    )
    return f"{commit}-dirty" if changed else commit


# The Python libraries the daemon's memory and speed depend on, as installed.
DAEMON_LIBRARIES = (
    "aiohttp",
    "SQLAlchemy",
    "cryptography",
    "pydantic",
    "pydantic-core",
    "jsonrpcserver",
    "acme",
    "APScheduler",
    "structlog",
)


def library_versions() -> str:
    """The installed version of each of DAEMON_LIBRARIES, in one line."""
    found = []
    for name in DAEMON_LIBRARIES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def versions() -> dict[str, str]:
    """Versions of certd, its Python libraries and every tool on the bed."""
    return {
        "certd": f"{__version__} ({checkout()})",
        "certd's Python libraries": library_versions(),
        "certbot": version("certbot"),
        "python3-certbot-dns-rfc2136": version("python3-certbot-dns-rfc2136"),
        "python3-acme": version("python3-acme"),
        "lego": version("lego"),
        "pebble": version("pebble"),
        "bind9": version("named"),
    }


class Bench:
    """Runs the scenarios and collects their figures."""

    def __init__(
        self, options: Options, work: Path, save: Callable[[Bench], None]
    ) -> None:
        self.o = options
        self.work = work
        self.save = save
        self.tag = secrets.token_hex(2)
        self.scenarios: dict[str, Any] = {}
        self.beds = 0
        self._named: NamedServer | None = None
        self._pebble: PebbleServer | None = None
        self._peers: Peers | None = None

    @property
    def named(self) -> NamedServer:
        assert self._named is not None, "no bed is up"
        return self._named

    @property
    def pebble(self) -> PebbleServer:
        assert self._pebble is not None, "no bed is up"
        return self._pebble

    @property
    def peers(self) -> Peers:
        assert self._peers is not None, "no bed is up"
        return self._peers

    @contextmanager
    def bed(self) -> Iterator[None]:
        """A fresh BIND and pebble for one group of runs.

        pebble keeps every order in memory and, after some hundreds of them
        with lego running 8 at a time, once stopped answering new orders; a
        fresh bed per group keeps runs apart and alike.
        """
        self.beds += 1
        root = self.work / f"bed{self.beds}"
        with ExitStack() as stack:
            self._named = stack.enter_context(start_named(root / "named"))
            self._pebble = stack.enter_context(
                start_pebble(root / "pebble", self._named.port)
            )
            self._peers = Peers(self._named, self._pebble, root / "peers")
            try:
                yield
            finally:
                self._named = self._pebble = self._peers = None

    def wanted(self, number: int) -> bool:
        return number in self.o.only

    def peer(self, tool: str) -> bool:
        return self.o.peers and Peers.available(tool)

    def record(self, number: int, results: dict[str, Any], **extra: Any) -> None:
        goal = GOALS[number]
        entry = {"title": goal["title"], "goal": goal["goal"], "results": results}
        entry.update(extra)
        self.scenarios[str(number)] = entry

    # --- 1 and 2: single orders ----------------------------------------------

    async def single_orders(self, certd: Certd) -> int:
        """Scenarios 1 and 2; returns the id of an ACME certificate for later calls."""
        async with certd.client() as client:
            # Every tool starts with a registered account and its process
            # warm on disk: the first order of each is not timed.
            warm = await issue(
                client, certd, f"warm-{self.tag}", [f"warm-{self.tag}.example.test"]
            )
            lego_path = self.peers.workdir / "lego-warm"
            certbot_state = self.peers.workdir / "certbot-warm"
            if self.peer("lego"):
                self._check(self.peers.lego(lego_path, ["warm-lego.example.test"]))
            if self.peer("certbot"):
                self._check(
                    self.peers.certbot(certbot_state, ["warm-certbot.example.test"])
                )
            if self.wanted(1):
                await self._one_name(client, certd, lego_path, certbot_state)
            if self.wanted(2):
                await self._wildcard(client, certd, lego_path, certbot_state)
        return int(warm["id"])

    def _check(self, run: Any) -> float:
        if not run.ok:
            raise BenchError(f"a peer run failed: {run.detail}")
        return float(run.seconds)

    async def _one_name(
        self, client: Any, certd: Certd, lego_path: Path, certbot_state: Path
    ) -> None:
        log("scenario 1: one certificate, one name")
        times: dict[str, list[float]] = {"certd": [], "lego": [], "certbot": []}
        for r in range(self.o.runs):
            name = f"s1-{self.tag}-{r}"
            started = time.perf_counter()
            await issue(client, certd, name, [f"{name}.example.test"])
            times["certd"].append(time.perf_counter() - started)
            if self.peer("lego"):
                times["lego"].append(
                    self._check(
                        self.peers.lego(lego_path, [f"{name}-lego.example.test"])
                    )
                )
            if self.peer("certbot"):
                times["certbot"].append(
                    self._check(
                        self.peers.certbot(
                            certbot_state, [f"{name}-certbot.example.test"]
                        )
                    )
                )
        results = {k: figure(v, "s") for k, v in times.items() if v}
        self.record(
            1,
            results,
            ratios={
                "certd/lego": ratio(results["certd"], results.get("lego")),
                "certd/certbot": ratio(results["certd"], results.get("certbot")),
            },
        )

    async def _wildcard(
        self, client: Any, certd: Certd, lego_path: Path, certbot_state: Path
    ) -> None:
        log("scenario 2: wildcard and apex in one order")
        names = ["example.test", "*.example.test"]
        times: dict[str, list[float]] = {
            "certd": [],
            "lego (default settings)": [],
            "lego (RFC2136_SEQUENCE_INTERVAL=0)": [],
            "certbot": [],
        }
        for r in range(self.o.runs):
            started = time.perf_counter()
            await issue(client, certd, f"s2-{self.tag}-{r}", names)
            times["certd"].append(time.perf_counter() - started)
            if self.peer("lego"):
                times["lego (RFC2136_SEQUENCE_INTERVAL=0)"].append(
                    self._check(self.peers.lego(lego_path, names, sequence_interval=0))
                )
                if r < self.o.lego_default_runs:
                    log("scenario 2: lego with its default settings (about a minute)")
                    times["lego (default settings)"].append(
                        self._check(
                            self.peers.lego(lego_path, names, sequence_interval=None)
                        )
                    )
            if self.peer("certbot"):
                # The same names every run: without --duplicate certbot would
                # find the last run's certificate and do nothing.
                run = self.peers.certbot(certbot_state, names, duplicate=True)
                times["certbot"].append(self._check(run))
        results = {k: figure(v, "s") for k, v in times.items() if v}
        self.record(
            2,
            results,
            ratios={
                "certd/lego default": ratio(
                    results["certd"], results.get("lego (default settings)")
                ),
                "certd/lego sequence 0": ratio(
                    results["certd"],
                    results.get("lego (RFC2136_SEQUENCE_INTERVAL=0)"),
                ),
                "certd/certbot": ratio(results["certd"], results.get("certbot")),
            },
        )

    # --- 3 and 4: many certificates from empty --------------------------------

    async def many(self) -> None:
        count = self.o.certs
        log(f"scenarios 3 and 4: {count} certificates from empty")
        names = [f"m{i:03d}.example.test" for i in range(count)]
        times: dict[str, list[float]] = {"certd": []}
        failures: list[str] = []
        for r in range(self.o.runs):
            with self.bed():
                directory = self.work / f"many-{r}"
                async with running_certd(directory, self.named, self.pebble) as certd:
                    async with certd.client() as client:
                        started = time.perf_counter()
                        await asyncio.gather(
                            *(
                                issue(client, certd, f"m{i:03d}", [name])
                                for i, name in enumerate(names)
                            )
                        )
                        times["certd"].append(time.perf_counter() - started)
                        total = await client.call(
                            "certificate.query",
                            [["cert_type", "=", "CERTIFICATE"]],
                            {"count": True},
                        )
                        if total != count:
                            raise BenchError(
                                f"{total} certificates stored, not {count}"
                            )
                shutil.rmtree(directory, ignore_errors=True)
        parallel = f"lego ({self.o.parallel} at a time)"
        for r in range(self.o.peer_runs):
            for tool in ("certbot", "lego", parallel):
                wanted = self.wanted(4) if tool == parallel else self.wanted(3)
                if not wanted or not self.peer(tool.split()[0]):
                    continue
                with self.bed():
                    state = self.peers.workdir / f"{tool.split()[0]}-many-{r}"
                    if tool == parallel:
                        log(f"scenario 4: lego, {self.o.parallel} processes at a time")
                        run = await self.peers.lego_parallel(
                            state, names, self.o.parallel
                        )
                    else:
                        log(f"scenario 3: {tool}, {count} processes one after another")
                        run = self.peers.sequential(tool, state, names)
                if run.ok:
                    times.setdefault(tool, []).append(run.seconds)
                else:
                    # A failed run has no figure; the table says how many failed.
                    failures.append(f"{tool} run {r + 1}: {run.detail}")
                    log(f"{tool} run {r + 1} failed: {run.detail}")
        results = {k: figure(v, "s") for k, v in times.items()}
        notes = {"peer_failures": failures} if failures else {}
        if self.wanted(3):
            self.record(
                3,
                {k: v for k, v in results.items() if k != parallel},
                certificates=count,
                ratios={
                    "certd/certbot": ratio(results["certd"], results.get("certbot")),
                    "certd/lego": ratio(results["certd"], results.get("lego")),
                },
                **notes,
            )
        if self.wanted(4):
            both = {"certd": results["certd"]}
            if parallel in results:
                both[parallel] = results[parallel]
            self.record(
                4,
                both,
                certificates=count,
                ratios={
                    "certd/lego parallel": ratio(both["certd"], both.get(parallel))
                },
                **notes,
            )

    # --- 5 and 6: the API under load ----------------------------------------

    def _load(
        self,
        certd: Certd,
        targets: list[str],
        calls: list[str],
        concurrency: int,
        seconds: float,
        *,
        stop: Path | None = None,
        samples: bool = False,
    ) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "bench.load",
            "--api-key",
            certd.api_key,
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
        ]
        for target in targets:
            argv += ["--target", target]
        for call in calls:
            argv += ["--call", call]
        if stop is not None:
            argv += ["--stop-file", str(stop)]
        if samples:
            argv.append("--samples")
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)

    @staticmethod
    def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=900)
        result: dict[str, Any] = json.loads(out)
        if "total" not in result or result["total"]["errors"]:
            raise BenchError(f"the load process saw errors: {result}")
        return result

    def _targets(self, certd: Certd) -> dict[str, str]:
        return {
            "http": f"http:127.0.0.1:{certd.http_port}",
            "unix": f"unix:{certd.socket}",
        }

    async def throughput(self, certd: Certd, cert_id: int) -> None:
        log("scenario 5: small calls per second")
        calls = {
            "core.ping": "core.ping",
            "certificate.get_instance": f"certificate.get_instance=[{cert_id}]",
        }
        results: dict[str, Any] = {}
        for transport, target in self._targets(certd).items():
            for method, call in calls.items():
                rates, p99s = [], []
                for _ in range(self.o.runs):
                    out = self._finish(
                        self._load(certd, [target], [call], 16, self.o.load_seconds)
                    )
                    rates.append(out["total"]["calls_per_s"])
                    p99s.append(out["total"]["p99_ms"])
                results[f"{method} over {transport}"] = figure(
                    rates, "calls/s", p99_ms=figure(p99s, "ms")
                )
        self.record(5, results, concurrency=16, seconds_per_run=self.o.load_seconds)

    async def latency_under_keygen(self, certd: Certd, cert_id: int) -> None:
        keys = self.o.keygen_keys
        log(f"scenario 6: call latency while {keys} RSA-4096 keys are generated")
        targets = list(self._targets(certd).values())
        calls = ["core.ping", f"certificate.get_instance=[{cert_id}]"]
        during, before, keygen = [], [], []
        counts = []
        async with certd.client() as client:
            for r in range(self.o.runs):
                stop = self.work / f"keygen-stop-{r}"
                proc = self._load(
                    certd, targets, calls, 4, 300, stop=stop, samples=True
                )
                await asyncio.sleep(1.0)
                t0 = time.time()
                jobs = await asyncio.gather(
                    *(
                        client.call(
                            "certificate.create",
                            {
                                "name": f"rsa-{self.tag}-{r}-{k}",
                                "create_type": "CERTIFICATE_CREATE_CSR",
                                "key_type": "RSA",
                                "key_length": 4096,
                                "san": [f"rsa{k}.example.test"],
                            },
                        )
                        for k in range(keys)
                    )
                )
                await asyncio.gather(*(wait_job(client, j) for j in jobs))
                t1 = time.time()
                stop.touch()
                out = self._finish(proc)
                inside = [s[2] for s in out["samples"] if t0 <= s[1] <= t1]
                outside = [s[2] for s in out["samples"] if s[1] < t0]
                during.append(percentile(inside, 0.99))
                before.append(percentile(outside, 0.99))
                keygen.append(t1 - t0)
                counts.append(len(inside))
        self.record(
            6,
            {
                "p99 while generating": figure(during, "ms"),
                P99_BEFORE: figure(before, "ms"),
                f"{keys} RSA-4096 keys, wall time": figure(keygen, "s"),
                "calls during the generation": figure(counts, "calls"),
            },
            concurrency=4,
        )

    # --- 7 and 8: inventory and memory ---------------------------------------

    async def idle_memory(self) -> dict[str, Any]:
        values, peaks = [], []
        for r in range(min(self.o.runs, 3)):
            directory = self.work / f"idle-{r}"
            async with running_certd(
                directory, self.named, self.pebble, authenticator=False
            ) as certd:
                await asyncio.sleep(1.0)
                async with certd.client() as client:
                    await client.call("core.ping")
                memory = certd.memory()
                values.append(memory["rss_mb"])
                peaks.append(memory["peak_rss_mb"])
            shutil.rmtree(directory, ignore_errors=True)
        return figure(values, "MB", peak=figure(peaks, "MB"))

    async def inventory(self) -> None:
        count = self.o.inventory
        log(f"scenarios 7 and 8: an inventory of {count} certificates")
        directory = self.work / "inventory"
        started = time.perf_counter()
        await fill_store(directory / "state", count)
        filled = time.perf_counter() - started
        idle = await self.idle_memory() if self.wanted(8) else None
        started = time.perf_counter()
        async with running_certd(
            directory, self.named, self.pebble, authenticator=False
        ) as certd:
            start_seconds = time.perf_counter() - started
            memory_started = certd.memory()
            queries: dict[str, tuple[str, list[Any]]] = {
                "query by name": (
                    "certificate.query",
                    [[["name", "=", f"inv-{count // 2:05d}"]]],
                ),
                "query days_left < 30": (
                    "certificate.query",
                    [[["days_left", "<", 30]], {"select": ["id", "name", "days_left"]}],
                ),
                "query all, expiry fields ordered": (
                    "certificate.query",
                    [
                        [],
                        {
                            "select": ["id", "name", "not_valid_after", "days_left"],
                            "order_by": ["not_valid_after"],
                        },
                    ],
                ),
                "renewal plan of every certificate": (
                    "certificate.renewal_plan",
                    [],
                ),
            }
            results: dict[str, Any] = {}
            async with certd.client() as client:
                # The first query after a start describes every certificate.
                t = time.perf_counter()
                total = await client.call("certificate.query", [], {"count": True})
                results["first query after start (count of all)"] = figure(
                    [(time.perf_counter() - t) * 1000], "ms"
                )
                if total != count:
                    raise BenchError(f"{total} certificates in the store, not {count}")
                for label, (method, params) in queries.items():
                    times = []
                    cold = None
                    for r in range(self.o.runs + 1):
                        t = time.perf_counter()
                        reply = await client.call(method, *params)
                        elapsed = time.perf_counter() - t
                        if r == 0:
                            cold = elapsed
                            first = reply
                        else:
                            times.append(elapsed)
                    size = len(first) if isinstance(first, list) else 1
                    results[label] = figure(
                        [t * 1000 for t in times],
                        "ms",
                        first_call_ms=round((cold or 0) * 1000, 1),
                        rows=size,
                    )
            memory_after = certd.memory()
        shutil.rmtree(directory, ignore_errors=True)
        if self.wanted(7):
            self.record(
                7,
                results,
                certificates=count,
                fill_seconds=round(filled, 2),
                start_seconds=round(start_seconds, 2),
            )
        if self.wanted(8):
            self.record(
                8,
                {
                    "idle, empty store": idle,
                    f"{count} certificates, after start": figure(
                        [memory_started["rss_mb"]], "MB"
                    ),
                    f"{count} certificates, after the queries": figure(
                        [memory_after["rss_mb"]],
                        "MB",
                        peak=figure([memory_after["peak_rss_mb"]], "MB"),
                    ),
                    **library_shares(min(self.o.runs, 3)),
                },
                certificates=count,
            )

    # --- all -------------------------------------------------------------------

    async def api_group(self) -> None:
        with self.bed():
            async with running_certd(
                self.work / "main", self.named, self.pebble
            ) as certd:
                cert_id = await self.single_orders(certd)
                self.save(self)
                if self.wanted(5):
                    await self.throughput(certd, cert_id)
                if self.wanted(6):
                    await self.latency_under_keygen(certd, cert_id)

    async def inventory_group(self) -> None:
        with self.bed():
            await self.inventory()

    async def run(self) -> None:
        groups = [
            ((1, 2, 5, 6), self.api_group),
            ((3, 4), self.many),
            ((7, 8), self.inventory_group),
        ]
        for numbers, group in groups:
            if not any(self.wanted(n) for n in numbers):
                continue
            try:
                await group()
            except Exception as exc:
                # One broken group must not lose the figures of the others.
                log(f"scenarios {numbers} failed: {type(exc).__name__}: {exc}")
                for n in numbers:
                    if self.wanted(n) and str(n) not in self.scenarios:
                        self.record(n, {}, error=f"{type(exc).__name__}: {exc}")
            self.save(self)


def parse(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run, 10 certificates, 1,000 in the inventory, "
        "no lego default-settings run",
    )
    parser.add_argument(
        "--runs", type=int, help="runs of each figure (default 5; memory at most 3)"
    )
    parser.add_argument(
        "--peer-runs",
        type=int,
        help="runs of the peers' many-certificate loops (default 3)",
    )
    parser.add_argument(
        "--lego-default-runs",
        type=int,
        help="runs of lego's ~66 s default wildcard order (default 1)",
    )
    parser.add_argument("--certs", type=int, help="certificates in scenarios 3 and 4")
    parser.add_argument(
        "--inventory",
        type=int,
        help="certificates in the inventory (scenarios 7 and 8)",
    )
    parser.add_argument("--load-seconds", type=float)
    parser.add_argument("--only", help="comma-separated scenario numbers")
    parser.add_argument(
        "--no-peers", action="store_true", help="run certd only (no certbot, no lego)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="results file (default bench/results/latest.json; "
        "with --quick, bench/results/quick.json)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="report (default docs/benchmarks.md; with --quick, bench/results/quick.md)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the scenarios run now in the existing --json file",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the bed and the state go (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    # A quick run is a smoke test: it leaves the committed full results alone.
    results = ROOT / "bench/results"
    if args.json is None:
        args.json = results / ("quick.json" if args.quick else "latest.json")
    if args.markdown is None:
        args.markdown = (
            results / "quick.md" if args.quick else ROOT / "docs/benchmarks.md"
        )
    o = Options()
    if args.quick:
        o = Options(
            runs=1,
            peer_runs=1,
            lego_default_runs=0,
            certs=10,
            inventory=1000,
            load_seconds=1.0,
            quick=True,
        )
    for name in (
        "runs",
        "peer_runs",
        "lego_default_runs",
        "certs",
        "inventory",
        "load_seconds",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(o, name, value)
    if args.only:
        o.only = sorted({int(x) for x in args.only.split(",")})
        unknown = set(o.only) - set(SCENARIOS)
        if unknown:
            parser.error(f"no scenario {sorted(unknown)}")
    o.peers = not args.no_peers
    if o.runs < 1 or o.certs < 1 or o.inventory < 1:
        parser.error("--runs, --certs and --inventory must be at least 1")
    return o, args


def _result(
    options: Options,
    bench: Bench,
    started: float,
    load_before: list[float],
    tools: dict[str, str],
) -> dict[str, Any]:
    return {
        "schema": 1,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "options": asdict(options),
        "machine": {**machine(), "load_average_before": load_before},
        "versions": tools,
        "scenarios": bench.scenarios,
    }


def _write(result: dict[str, Any], options: Options, args: argparse.Namespace) -> None:
    if args.merge and args.json.exists():
        # Scenarios run again (after a fix) replace theirs in the last full run.
        earlier = json.loads(args.json.read_text())
        reruns = [
            r
            for r in earlier.get("reruns", [])
            if r.get("created_at") != result["created_at"]
        ]
        reruns.append(
            {
                "created_at": result["created_at"],
                "scenarios": options.only,
                "options": result["options"],
                "certd": result["versions"]["certd"],
                "load_average": result["machine"]["load_average"],
            }
        )
        result = {
            **earlier,
            "scenarios": {**earlier["scenarios"], **result["scenarios"]},
            "reruns": reruns,
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.markdown, args.json)


async def _main(options: Options, args: argparse.Namespace, work: Path) -> int:
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Taken before the run: the checkout may move on while it runs.
    tools = versions()

    def save(bench: Bench) -> None:
        # Written after every group, so a run cut short keeps what it measured.
        # Each daemon imports certd from the checkout when it starts: a tree
        # edited meanwhile means some figures measured other code.
        if checkout() not in tools["certd"] and "changed" not in tools["certd"]:
            tools["certd"] += ", the checkout changed during the run"
        result = _result(options, bench, started, load_before, tools)
        result["created_at"] = created
        _write(result, options, args)

    bench = Bench(options, work, save)
    await bench.run()
    save(bench)
    log(f"wrote {args.json} and {args.markdown}")
    failed = [n for n, e in bench.scenarios.items() if "error" in e]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    options, args = parse(argv)
    if args.workdir:
        # A new directory per run: state left by an earlier run would clash.
        work = args.workdir / time.strftime("%H%M%S")
        work.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_main(options, args, work))
    with tempfile.TemporaryDirectory(prefix="certd-bench-") as tmp:
        return asyncio.run(_main(options, args, Path(tmp)))
