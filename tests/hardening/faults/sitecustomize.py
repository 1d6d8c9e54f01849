"""Unexpected exceptions for a certd child process, when CERTD_TEST_FAULTS=1.

The canary test puts this directory on PYTHONPATH so that Python imports it at
start: a fault raised from deep inside code that holds secrets shows whether a
traceback carries them into the log.
"""

import os
from typing import Any

if os.environ.get("CERTD_TEST_FAULTS") == "1":
    import certd.api.dns_authenticator as _authenticators
    import certd.dns.rfc2136 as _rfc2136

    _add_txt = _rfc2136.RFC2136Provider.add_txt
    _plain_attributes = _authenticators.plain_attributes

    async def add_txt(self: Any, zone: str, fqdn: str, value: str) -> None:
        if fqdn.startswith("_acme-challenge.crash."):
            raise RuntimeError("injected fault while publishing")
        await _add_txt(self, zone, fqdn, value)

    def plain_attributes(attributes: Any) -> dict[str, Any]:
        if getattr(attributes, "tsig_key_name", None) == "crash-key":
            raise RuntimeError("injected fault while storing attributes")
        return _plain_attributes(attributes)

    _rfc2136.RFC2136Provider.add_txt = add_txt  # type: ignore[method-assign]
    _authenticators.plain_attributes = plain_attributes
