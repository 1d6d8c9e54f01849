"""The provider plugin interface and the registry of installed providers."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

ENTRY_POINT_GROUP = "certd.dns_providers"


class ProviderAttributes(BaseModel):
    """Base of every provider's attribute model.

    Secret fields are declared as ``pydantic.SecretStr`` so they are never shown
    in query results, logs or error messages; the JSON schema marks them with
    ``"secret": true`` (see :func:`attributes_schema`).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True)
class ProviderContext:
    """What a provider gets from the daemon besides its own attributes."""

    request_timeout: float = 30.0


class DNSProvider(abc.ABC):
    """One DNS vendor: find a zone, add one TXT value, remove exactly that value.

    Implementations must be safe to call concurrently for different values on
    the same name: ``add_txt`` adds to what is there, never replaces it, and
    ``remove_txt`` removes only the given value.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    Attributes: ClassVar[type[ProviderAttributes]]

    def __init__(self, attributes: ProviderAttributes, context: ProviderContext) -> None:
        self.attributes = attributes
        self.context = context

    @abc.abstractmethod
    async def find_zone(self, fqdn: str) -> str:
        """Return the zone (no trailing dot) this provider would write ``fqdn`` in."""

    @abc.abstractmethod
    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Add ``value`` to the TXT record set at ``fqdn``, keeping other values."""

    @abc.abstractmethod
    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Remove ``value`` from the TXT record set at ``fqdn``; a missing value is fine."""

    async def aclose(self) -> None:
        """Release sessions or clients; called once the provider is no longer used."""

    async def __aenter__(self) -> DNSProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def attributes_schema(model: type[ProviderAttributes]) -> dict[str, Any]:
    """The JSON schema of a provider's attributes, with secret fields marked."""
    schema = model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        if prop.get("format") == "password" or prop.get("writeOnly"):
            prop["secret"] = True
    return schema


_BUILTIN: dict[str, str] = {}


def register_builtin(name: str, target: str) -> None:
    """Register a provider shipped inside certd as ``module:Class``."""
    _BUILTIN[name] = target


def installed_providers() -> dict[str, type[DNSProvider]]:
    """Every provider: certd's own, then third-party ones from the entry point group."""
    from certd.dns import providers  # noqa: F401  (registers the built-in providers)

    found: dict[str, type[DNSProvider]] = {}
    for name, target in _BUILTIN.items():
        module_name, _, class_name = target.partition(":")
        module = __import__(module_name, fromlist=[class_name])
        found[name] = getattr(module, class_name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found
