"""The RSA consistency check of an imported key, in a process of its own.

cryptography holds the interpreter lock for the whole check (RSA_check_key
tests the primes): 0.3 s for RSA-4096 and about 4 s for RSA-8192, during
which no other thread of the daemon runs, the event loop included. The
daemon hands the key over a pipe (never a file) to ``python -m
certd.pki.keycheck``, which answers with its exit status: 0 consistent,
1 inconsistent, 2 not a key.
"""

from __future__ import annotations

import asyncio
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certd.errors import PkiError

# Keys up to this size are checked in the daemon: 40 ms at 2048 bits costs
# less than starting a process.
IN_PROCESS_BITS = 2048
INCONSISTENT = (
    "the RSA private key is inconsistent: its primes, exponents and CRT values "
    "do not belong together"
)


async def check_rsa_key_apart(key: rsa.RSAPrivateKey) -> None:
    """Check ``key`` in a child process; the event loop runs meanwhile.

    Raises:
        PkiError: the key is inconsistent, or the check could not run.
    """
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "certd.pki.keycheck",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await child.communicate(der)
    except BaseException:
        # cancelled (the daemon stopping): the check is of no use any more
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode == 1:
        raise PkiError(INCONSISTENT)
    if child.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise PkiError(f"the key check did not run ({child.returncode}): {reason[0]}")


def main() -> int:
    data = sys.stdin.buffer.read()
    try:
        serialization.load_der_private_key(data, password=None)
    except ValueError:
        return 1
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
