"""DNS providers for ACME DNS-01: a small plugin interface and the shared flow.

A provider knows how to find the zone of a name and how to add or remove one TXT
value through a vendor's API (``base`` defines the interface, ``providers``
registers the built-in ones). Everything else is shared: CNAME following and
propagation checks (``resolve``), the dry run behind an authenticator test
(``probe``), and the HTTP client and TXT syntax the REST providers use
(``http``, ``txt``).
"""
