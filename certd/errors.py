"""The error tree of certd.

Every error the daemon raises on purpose derives from :class:`CertdError`. Each
subsystem has its own base, leaves carry their data as attributes, and the API
layer maps the tree onto JSON-RPC error codes in one table (``certd.api.errors``).
Messages are meant for the user: they name the field, domain or object at fault
and say why, and they never contain a secret.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field


class CertdError(Exception):
    """Root of every error certd raises deliberately."""

    retryable: bool = False
    errno: int = _errno.EFAULT

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its dotted path, what is wrong, and an errno."""

    field: str
    message: str
    errno: int = _errno.EINVAL


class ValidationError(CertdError):
    """Input that cannot be accepted; lists every offending field."""

    errno = _errno.EINVAL

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(summary or "invalid input")

    @classmethod
    def single(
        cls, field: str, message: str, errno: int = _errno.EINVAL
    ) -> ValidationError:
        return cls([FieldError(field, message, errno)])


@dataclass
class ValidationCollector:
    """Gathers field errors so a caller can report all of them at once."""

    errors: list[FieldError] = field(default_factory=list)

    def add(self, field: str, message: str, errno: int = _errno.EINVAL) -> None:
        self.errors.append(FieldError(field, message, errno))

    def check(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


class NotFoundError(CertdError):
    """The object named by an id or a name does not exist."""

    errno = _errno.ENOENT

    def __init__(self, kind: str, key: object, message: str | None = None) -> None:
        super().__init__(message or f"{kind} {key!r} does not exist")
        self.kind = kind
        self.key = key

    @classmethod
    def matching(cls) -> NotFoundError:
        """No entry matches a query's filters (``options.get``)."""
        return cls("entry", None, "no entry matches the filters")


class ConflictError(CertdError):
    """The call would break a rule about other objects (in use, duplicate)."""

    errno = _errno.EBUSY


class AuthenticationError(CertdError):
    """The caller is not authenticated or not allowed to make this call."""

    errno = _errno.EACCES


class JobAbortedError(CertdError):
    """A job was aborted before it finished."""

    errno = _errno.ECANCELED


class PkiError(CertdError):
    """A key, certificate, CSR or CRL could not be built, parsed or matched."""

    errno = _errno.EINVAL


class DNSProviderError(CertdError):
    """A DNS provider refused or failed a call; names the provider and the fix."""

    errno = _errno.EIO

    def __init__(
        self, provider: str, message: str, *, retryable: bool | None = None
    ) -> None:
        super().__init__(f"{provider}: {message}", retryable=retryable)
        self.provider = provider


class DNSPropagationError(CertdError):
    """A TXT value did not become visible on every server in time."""

    errno = _errno.ETIMEDOUT
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        fqdn: str | None = None,
        servers: tuple[str, ...] = (),
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.fqdn = fqdn
        self.servers = servers


class DNSLookupError(CertdError):
    """A DNS lookup for DNS-01 failed or found a broken setup (a CNAME loop)."""

    errno = _errno.EIO

    def __init__(
        self, name: str, message: str, *, retryable: bool | None = None
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.name = name


class AcmeError(CertdError):
    """An ACME server refused a request or an order could not be completed."""

    errno = _errno.EIO

    def __init__(
        self,
        message: str,
        *,
        problem_type: str | None = None,
        domain: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.problem_type = problem_type
        self.domain = domain
        self.retry_after = retry_after


class DeployError(CertdError):
    """A certificate's file or hook target could not be written or run."""

    errno = _errno.EIO
    retryable = True

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class SecretStoreError(CertdError):
    """The master key is missing or wrong, or a stored secret does not decrypt."""

    errno = _errno.EIO
