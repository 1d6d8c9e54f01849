"""Run a private ACME bed for trying certd: BIND and pebble on 127.0.0.1.

    scripts/testbed [DIRECTORY]

Starts BIND (zones example.test and example.org.test, RFC 2136 updates with a
TSIG key) and pebble (validating DNS-01 against that BIND), writes a certd
config for them to DIRECTORY/certd.toml and pebble's root CA to
DIRECTORY/pebble-root.pem, prints the calls that get a certificate and check
it, and runs until interrupted. Nothing listens beyond 127.0.0.1.

The config is for a daemon of its own: one started on another config neither
trusts pebble's HTTPS certificate nor asks this BIND.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed import NamedServer, PebbleServer, start_named, start_pebble  # noqa: E402


def certd_config(directory: Path, named: NamedServer, pebble: PebbleServer) -> str:
    """A certd config (TOML) for a daemon that orders from this bed."""
    state = directory / "state"
    return "\n".join(
        [
            "[server]",
            "http_port = 0",
            f"unix_socket = {json.dumps(str(state / 'certd.sock'))}",
            "[store]",
            f"state_dir = {json.dumps(str(state))}",
            "[acme]",
            f"ca_bundle = {json.dumps(str(pebble.tls_ca_path))}",
            "[dns]",
            f"resolvers = [{json.dumps(named.address)}]",
            f"nameserver_port = {named.port}",
            "",
        ]
    )


def certd_command() -> str:
    """The certd command of the venv running this script, as a shell word."""
    # scripts/testbed runs this with the python of the venv it set up (which
    # CERTD_VENV may put anywhere), so that venv is the one to name.
    if sys.prefix != sys.base_prefix:
        return shlex.quote(str(Path(sys.prefix) / "bin" / "certd"))
    return shlex.quote(shutil.which("certd") or "certd")


def walkthrough(
    config: Path, named: NamedServer, pebble: PebbleServer, root: Path
) -> str:
    """The commands that get a certificate from this bed and check it."""
    authenticator = {"name": "bed", "attributes": named.rfc2136_attributes()}
    csr = {
        "name": "www-csr",
        "create_type": "CERTIFICATE_CREATE_CSR",
        "key_type": "EC",
        "san": ["www.example.test"],
    }
    order = {
        "name": "www",
        "create_type": "CERTIFICATE_CREATE_ACME",
        "csr_id": 1,
        "tos": True,
        "acme_directory_uri": pebble.directory_url,
        "dns_mapping": {"www.example.test": 1},
    }
    certd = certd_command()
    call = f"{certd} call"
    query = json.dumps([["name", "=", "www"]])
    return "\n".join(
        [
            f"export CERTD_CONFIG={shlex.quote(str(config))}",
            f"{certd} serve &",
            f"{call} acme.dns.authenticator.create '{json.dumps(authenticator)}'",
            f"{call} certificate.create '{json.dumps(csr)}'",
            f"{call} certificate.create '{json.dumps(order)}'",
            "",
            "# pebble's root CA of this run signed it (the chain holds leaf and",
            "# intermediate, so it is also given as -untrusted):",
            f"{call} certificate.query '{query}' '{{\"get\": true}}' \\",
            "  | jq -r .certificate > www.pem",
            f"openssl verify -CAfile {shlex.quote(str(root))} -untrusted www.pem www.pem",
        ]
    )


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="certd-bed-"))
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        named = stack.enter_context(start_named(directory / "named"))
        pebble = stack.enter_context(start_pebble(directory / "pebble", named.port))
        config = directory / "certd.toml"
        config.write_text(certd_config(directory, named, pebble))
        # pebble makes a new root at every start: fetch this run's.
        root = directory / "pebble-root.pem"
        root.write_text(pebble.issuer_root_pem())
        print(f"BIND on {named.address}, pebble at {pebble.directory_url}")
        print(f"certd config: {config}")
        print(f"pebble's root CA: {root}")
        print("Run a certd of its own on this config (a daemon on another config")
        print("does not trust pebble's HTTPS certificate nor ask this BIND):\n")
        print(walkthrough(config, named, pebble, root))
        print("\nready; Ctrl-C stops the bed", flush=True)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGINT too: a shell starting the bed in the background ignores it.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main(sys.argv[1:]))
