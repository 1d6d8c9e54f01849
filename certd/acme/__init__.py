"""ACME (RFC 8555) client: accounts, orders, dns-01 challenges, finalize, revoke.

The transport (JWS, nonces, problem documents) lives in ``transport``; the
protocol flow in ``client``. Nothing here touches the store or DNS.
"""

from certd.acme.client import AcmeClient, Dns01, Order, PollPolicy, authz_domain

__all__ = ["AcmeClient", "Dns01", "Order", "PollPolicy", "authz_domain"]
