"""DNS providers for ACME DNS-01: a small plugin interface and the shared flow.

A provider knows how to find the zone of a name and how to add or remove one TXT
value through a vendor's API. Everything else (CNAME following, propagation
checks, cleanup bookkeeping) is shared and lives beside the interface.
"""
