"""Getting certificates and keeping them fresh: ACME issuance and the renewal loop.

This package joins the ACME client, the DNS providers and the store; the
pieces it uses know nothing of each other.
"""
