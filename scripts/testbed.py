"""Run a private ACME bed for trying certd: BIND and pebble on 127.0.0.1.

    scripts/testbed [DIRECTORY]

Starts BIND (zones example.test and example.org.test, RFC 2136 updates with a
TSIG key) and pebble (validating DNS-01 against that BIND), writes a certd
config for them to DIRECTORY/certd.toml, prints the calls that get a
certificate, and runs until interrupted. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import json
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


def walkthrough(config: Path, named: NamedServer, pebble: PebbleServer) -> str:
    """The commands that get a certificate from this bed, ready to paste."""
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
    call = ".venv/bin/certd call"
    return "\n".join(
        [
            f"export CERTD_CONFIG={config}",
            ".venv/bin/certd serve &",
            f"{call} acme.dns.authenticator.create '{json.dumps(authenticator)}'",
            f"{call} certificate.create '{json.dumps(csr)}'",
            f"{call} certificate.create '{json.dumps(order)}'",
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
        print(f"BIND on {named.address}, pebble at {pebble.directory_url}")
        print(f"certd config: {config}\n")
        print(walkthrough(config, named, pebble))
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
