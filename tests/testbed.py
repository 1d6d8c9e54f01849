"""A private ACME DNS-01 test bed: BIND (RFC 2136 with TSIG) and pebble.

Both servers listen on 127.0.0.1 only, on ports picked free at start, with all
state in a caller-given run directory, so several beds can run side by side.
Processes are tracked by their Popen handle and stopped by PID, never by name.
A missing ``named`` or ``pebble`` binary is an error, not a skip: CI installs
both and a silently skipped integration suite would hide real failures.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_ZONES = ("example.test", "example.org.test")
TSIG_KEY_NAME = "acme-key"
TSIG_ALGORITHM = "hmac-sha256"
START_TIMEOUT = 10.0
STOP_GRACE = 3.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class TestbedError(RuntimeError):
    """The test bed could not be set up (missing binary, server did not start)."""

    __test__ = False  # not a test class despite the name


def free_port() -> int:
    """Return a port on 127.0.0.1 that is currently free for both TCP and UDP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            # named listens on UDP and TCP alike, so the port must be free for both
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise TestbedError("no free port on 127.0.0.1 for both TCP and UDP")


def find_binary(name: str) -> str:
    """Return the path of a server binary, or raise naming the Debian package."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        package = {"named": "bind9", "pebble": "pebble"}.get(name, name)
        raise TestbedError(
            f"{name!r} is not installed; the integration tests need it "
            f"(Debian: apt-get install {package})"
        )
    return found


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies without cleaning up."""
    # a pytest killed hard (SIGKILL, os._exit from a timeout) runs no teardown;
    # without this its servers would linger and hold their ports
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def _process(
    argv: list[str], log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process with its output in ``log_path``; stop it by PID."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            preexec_fn=_die_with_parent,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(
                f"{what} exited with status {proc.returncode} during start-up; "
                f"log {log}:\n{_log_tail(log)}"
            )
        if ready():
            return
        time.sleep(0.05)
    raise TestbedError(
        f"{what} did not answer within {START_TIMEOUT:.0f} s; log {log}:\n"
        f"{_log_tail(log)}"
    )


# --- BIND -------------------------------------------------------------------


@dataclass(frozen=True)
class NamedServer:
    """A running authoritative BIND that accepts TSIG-signed RFC 2136 updates."""

    host: str
    port: int
    rundir: Path
    tsig_name: str
    tsig_secret: str
    tsig_algorithm: str
    zones: tuple[str, ...]

    @property
    def address(self) -> str:
        """``host:port`` as pebble's ``-dnsserver`` and resolvers expect it."""
        return f"{self.host}:{self.port}"

    def rfc2136_attributes(self) -> dict[str, Any]:
        """certd's ``rfc2136`` DNS authenticator attributes for this server."""
        return {
            "authenticator": "rfc2136",
            "server": self.host,
            "port": self.port,
            "tsig_key_name": self.tsig_name,
            "tsig_secret": self.tsig_secret,
            "tsig_algorithm": self.tsig_algorithm,
        }

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The dnspython keyring holding the update key."""
        return dns.tsigkeyring.from_text(
            {self.tsig_name: (self.tsig_algorithm, self.tsig_secret)}
        )

    def query(self, name: str, rdtype: str = "TXT") -> list[str]:
        """Ask this server directly; TXT values come back unquoted and joined."""
        request = dns.message.make_query(name, rdtype)
        response = dns.query.udp(request, self.host, port=self.port, timeout=3)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(request, self.host, port=self.port, timeout=3)
        wanted = dns.rdatatype.from_text(rdtype)
        values: list[str] = []
        for rrset in response.answer:
            if rrset.rdtype != wanted:
                continue
            for rdata in rrset:
                if wanted == dns.rdatatype.TXT:
                    values.append(b"".join(rdata.strings).decode())
                else:
                    values.append(rdata.to_text())
        return values

    def update(
        self,
        zone: str,
        *,
        add: Iterable[tuple[str, str, str]] = (),
        delete: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Apply one signed RFC 2136 update of (name, rdtype, rdata) tuples."""
        message = dns.update.UpdateMessage(
            zone, keyring=self.keyring(), keyalgorithm=self.tsig_algorithm
        )
        for name, rdtype, rdata in add:
            message.add(name, 60, rdtype, rdata)
        for name, rdtype, rdata in delete:
            message.delete(name, rdtype, rdata)
        response = dns.query.tcp(message, self.host, port=self.port, timeout=5)
        if response.rcode() != dns.rcode.NOERROR:
            raise TestbedError(
                f"update of zone {zone} refused: {dns.rcode.to_text(response.rcode())}"
            )

    def add_txt(self, fqdn: str, value: str) -> None:
        """Add one TXT value next to any others at ``fqdn`` (never replaces)."""
        self.update(self.zone_of(fqdn), add=[(_absolute(fqdn), "TXT", _quote(value))])

    def delete_txt(self, fqdn: str, value: str) -> None:
        """Remove exactly one TXT value at ``fqdn``."""
        self.update(
            self.zone_of(fqdn), delete=[(_absolute(fqdn), "TXT", _quote(value))]
        )

    def zone_of(self, fqdn: str) -> str:
        """The longest served zone that contains ``fqdn``."""
        name = fqdn.rstrip(".").lower()
        matches = [z for z in self.zones if name == z or name.endswith("." + z)]
        if not matches:
            raise TestbedError(f"{fqdn} is in none of the zones {self.zones}")
        return max(matches, key=len)


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _zone_file(zone: str, records: Iterable[str]) -> str:
    lines = [
        f"$ORIGIN {zone}.",
        "$TTL 60",
        # negative TTL of 1 s: a test that looks before a record exists must not
        # have the NXDOMAIN cached by a resolver for long
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. ( 1 60 60 3600 1 )",
        f"@ IN NS ns1.{zone}.",
        "ns1 IN A 127.0.0.1",
        "@ IN A 127.0.0.1",
        *records,
    ]
    return "\n".join(lines) + "\n"


ROOT_ZONE = """\
$TTL 60
. IN SOA localhost. hostmaster.localhost. ( 1 60 60 3600 1 )
. IN NS localhost.
localhost. IN A 127.0.0.1
"""


def _named_conf(
    rundir: Path,
    port: int,
    zones: Iterable[str],
    keys: Mapping[str, tuple[str, str]],
    resolving: bool = False,
) -> str:
    key_blocks = "".join(
        f'key "{name}" {{ algorithm {alg}; secret "{secret}"; }};\n'
        for name, (alg, secret) in keys.items()
    )
    grants = " ".join(f"grant {name} zonesub TXT CNAME;" for name in keys)
    zone_blocks = "".join(
        f'zone "{zone}" {{ type primary; file "{zone}.zone"; '
        f"update-policy {{ {grants} }}; }};\n"
        for zone in zones
    )
    if resolving:
        # Recursion lets the server chase a CNAME from one of its zones into
        # another, as a real resolver would; being authoritative for the root
        # as well keeps every other name local instead of asking the Internet.
        recursion = "recursion yes; allow-recursion { 127.0.0.1; };"
        zone_blocks += 'zone "." { type primary; file "root.zone"; };\n'
    else:
        recursion = "recursion no;"
    return f"""\
options {{
    directory "{rundir}";
    pid-file none;
    session-keyfile "{rundir}/session.key";
    managed-keys-directory "{rundir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    {recursion}
    allow-query {{ 127.0.0.1; }};
    allow-transfer {{ none; }};
    notify no;
    dnssec-validation no;
}};
controls {{ }};
logging {{
    channel to_stderr {{ stderr; severity info; print-time yes; print-category yes; }};
    category default {{ to_stderr; }};
    category update {{ to_stderr; }};
    category update-security {{ to_stderr; }};
    category lame-servers {{ null; }};
}};
{key_blocks}{zone_blocks}"""


def _soa_answers(host: str, port: int, zone: str) -> bool:
    try:
        response = dns.query.udp(
            dns.message.make_query(zone, "SOA"), host, port=port, timeout=0.5
        )
    except (dns.exception.DNSException, OSError):
        return False
    return any(r.rdtype == dns.rdatatype.SOA for r in response.answer)


@contextlib.contextmanager
def start_named(
    rundir: Path,
    zones: Iterable[str] = DEFAULT_ZONES,
    extra_keys: Mapping[str, tuple[str, str]] | None = None,
    records: Mapping[str, Iterable[str]] | None = None,
    resolving: bool = False,
) -> Iterator[NamedServer]:
    """Start BIND serving ``zones`` on a free port of 127.0.0.1.

    Every zone has SOA (negative TTL 1 s), NS ``ns1.<zone>`` and A records for
    the apex and ns1, both 127.0.0.1. The key ``acme-key`` (hmac-sha256, fresh
    random secret) may add and delete TXT and CNAME records anywhere in each
    zone. ``extra_keys`` maps more key names to ``(algorithm, secret)`` with the
    same grant; ``records`` maps a zone to extra zone-file lines (relative names
    are relative to the zone), e.g. a CNAME for CNAME-following tests.
    """
    binary = find_binary("named")
    zones = tuple(z.rstrip(".").lower() for z in zones)
    records = dict(records or {})
    unknown = set(records) - set(zones)
    if unknown:
        raise TestbedError(f"records given for zones not served: {sorted(unknown)}")
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    keys = {TSIG_KEY_NAME: (TSIG_ALGORITHM, secret), **(extra_keys or {})}

    rundir.mkdir(parents=True, exist_ok=True)
    for journal in rundir.glob("*.jnl"):
        journal.unlink()
    for zone in zones:
        (rundir / f"{zone}.zone").write_text(_zone_file(zone, records.get(zone, ())))
    port = free_port()
    conf = rundir / "named.conf"
    if resolving:
        (rundir / "root.zone").write_text(ROOT_ZONE)
    conf.write_text(_named_conf(rundir, port, zones, keys, resolving))
    log = rundir / "named.log"

    with _process([binary, "-g", "-4", "-c", str(conf)], log) as proc:
        _wait_until(
            lambda: all(_soa_answers("127.0.0.1", port, z) for z in zones),
            proc,
            "named",
            log,
        )
        yield NamedServer(
            host="127.0.0.1",
            port=port,
            rundir=rundir,
            tsig_name=TSIG_KEY_NAME,
            tsig_secret=secret,
            tsig_algorithm=TSIG_ALGORITHM,
            zones=zones,
        )


# --- pebble -----------------------------------------------------------------


@dataclass(frozen=True)
class PebbleServer:
    """A running pebble whose DNS-01 validation asks our BIND."""

    directory_url: str
    tls_ca_path: Path
    management_url: str
    dns_port: int
    rundir: Path

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts pebble's HTTPS certificate."""
        return ssl.create_default_context(cafile=str(self.tls_ca_path))

    def _management_get(self, path: str) -> str:
        url = self.management_url + path
        with urllib.request.urlopen(url, context=self.ssl_context(), timeout=5) as r:
            return r.read().decode()

    def issuer_root_pem(self) -> str:
        """The issuing root of this pebble run (a new one at every start)."""
        return self._management_get("/roots/0")

    def root_pem(self, index: int) -> str:
        """Root ``index`` of this run; more than one with PEBBLE_ALTERNATE_ROOTS."""
        return self._management_get(f"/roots/{index}")

    def issuer_intermediate_pem(self) -> str:
        """The intermediate that signs this pebble run's certificates."""
        return self._management_get("/intermediates/0")


def _mint_tls(directory: Path) -> Path:
    """Write a throw-away CA and a localhost leaf for pebble; return the CA path."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "certd test pebble TLS CA")]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(pem))
    key_path = directory / "key.pem"
    key_path.write_bytes(
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path


def _dir_answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def start_pebble(
    rundir: Path,
    dns_port: int,
    *,
    validity_seconds: int | None = None,
    env: Mapping[str, str] | None = None,
    config: Mapping[str, object] | None = None,
) -> Iterator[PebbleServer]:
    """Start pebble on free ports of 127.0.0.1, validating DNS-01 at ``dns_port``.

    pebble runs without its random validation delay, rejects no nonces and never
    reuses authorizations unless ``env`` overrides ``PEBBLE_VA_NOSLEEP``,
    ``PEBBLE_WFE_NONCEREJECT`` or ``PEBBLE_AUTHZREUSE``. ``validity_seconds``
    sets the lifetime of issued certificates; ``config`` adds or overrides keys
    of pebble's JSON config (e.g. ``externalAccountMACKeys``).
    """
    binary = find_binary("pebble")
    rundir.mkdir(parents=True, exist_ok=True)
    tls_dir = rundir / "pebble-tls"
    ca_path = _mint_tls(tls_dir)
    acme_port, mgmt_port, http_port, tls_port = (free_port() for _ in range(4))
    settings: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(tls_dir / "cert.pem"),
        "privateKey": str(tls_dir / "key.pem"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity_seconds is not None:
        settings["certificateValidityPeriod"] = validity_seconds
    settings.update(config or {})
    conf = rundir / "pebble-config.json"
    conf.write_text(json.dumps({"pebble": settings}, indent=2))

    process_env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
        **(env or {}),
    }
    argv = [binary, "-config", str(conf), "-dnsserver", f"127.0.0.1:{dns_port}"]
    log = rundir / "pebble.log"
    server = PebbleServer(
        directory_url=f"https://127.0.0.1:{acme_port}/dir",
        tls_ca_path=ca_path,
        management_url=f"https://127.0.0.1:{mgmt_port}",
        dns_port=dns_port,
        rundir=rundir,
    )
    context = server.ssl_context()
    with _process(argv, log, process_env) as proc:
        _wait_until(
            lambda: (
                _dir_answers(server.directory_url, context)
                and _dir_answers(server.management_url + "/roots/0", context)
            ),
            proc,
            "pebble",
            log,
        )
        yield server
