"""ACME (RFC 8555) client: accounts, orders, dns-01 challenges, finalize, revoke.

The transport (JWS, nonces, problem documents) lives in ``transport``; the
protocol flow in ``client``. Nothing here touches the store or DNS.

The names below load on first use: the acme library (with josepy, requests
and pyOpenSSL) costs a daemon about 6 MB that it needs only once it talks to
a CA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from certd.acme.client import AcmeClient, Dns01, Order, PollPolicy, authz_domain

__all__ = ["AcmeClient", "Dns01", "Order", "PollPolicy", "authz_domain"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from certd.acme import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
