"""HTTPS for the API, served with a certificate from certd's own store.

``server.tls_certificate`` names a certificate (with its private key). It is
read at start and again on reload; reloading replaces the certificate of the
same SSL context, so connections made after it get the new one and the
listener never closes. The key goes to OpenSSL through an anonymous memory
file, never through a file on disk.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import structlog
from cryptography import x509
from sqlalchemy import select

from certd.errors import ValidationError
from certd.store.db import Database
from certd.store.models import Certificate

log = structlog.get_logger(__name__)

FIELD = "server.tls_certificate"


def server_context() -> ssl.SSLContext:
    """A server context with the library's defaults and at least TLS 1.2."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@contextlib.contextmanager
def _memory_file(data: bytes, spill_dir: Path) -> Iterator[str]:
    """A path OpenSSL can open that holds ``data``, removed on exit."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("certd-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    # Without memfd the state directory (0700) holds it for an instant.
    with tempfile.NamedTemporaryFile(dir=spill_dir, prefix=".tls-") as handle:
        handle.write(data)
        handle.flush()
        yield handle.name


def load_pair(
    context: ssl.SSLContext, chain_pem: str, key_pem: str, spill_dir: Path
) -> None:
    """Put a chain and its key into ``context``.

    Raises:
        ValidationError: the chain or key cannot be read, or they do not match.
    """
    with _memory_file((key_pem + "\n" + chain_pem).encode(), spill_dir) as path:
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise ValidationError.single(
                FIELD, f"the certificate and key cannot be used for TLS: {exc.reason}"
            ) from None


class ServerTLS:
    """The API's TLS context and the stored certificate it serves."""

    def __init__(self, name: str, spill_dir: Path) -> None:
        self.name = name
        self.spill_dir = spill_dir
        self.context = server_context()
        self.serial: int | None = None

    async def load(self, db: Database) -> None:
        """Read the named certificate from the store into the context.

        Raises:
            ValidationError: no such certificate, no key, or unusable for TLS.
        """
        async with db.session() as session:
            row = await session.scalar(
                select(Certificate).where(Certificate.name == self.name)
            )
        if row is None:
            raise ValidationError.single(
                FIELD, f"no certificate named {self.name!r} is stored"
            )
        if row.cert_type != "CERTIFICATE" or not row.certificate:
            raise ValidationError.single(
                FIELD, f"{self.name!r} is a signing request, not a certificate"
            )
        if not row.privatekey:
            raise ValidationError.single(
                FIELD, f"certificate {self.name!r} has no private key stored with it"
            )
        # OpenSSL swaps the certificate before it checks the key, so a failed
        # load would leave the live context half replaced: try a scratch one.
        load_pair(server_context(), row.certificate, row.privatekey, self.spill_dir)
        load_pair(self.context, row.certificate, row.privatekey, self.spill_dir)
        leaf = x509.load_pem_x509_certificate(row.certificate.encode())
        self.serial = leaf.serial_number
        log.info(
            "tls_certificate_loaded",
            certificate=self.name,
            serial=format(leaf.serial_number, "X"),
            not_valid_after=leaf.not_valid_after_utc.isoformat(),
        )

    async def reload(self, db: Database) -> bool:
        """Load again; on failure keep serving the current certificate."""
        try:
            await self.load(db)
        except ValidationError as exc:
            log.error(
                "tls_certificate_reload_failed",
                certificate=self.name,
                error=exc.message,
            )
            return False
        return True
