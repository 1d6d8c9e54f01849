"""A proxy in front of moto's Route 53 that adds what moto never does.

moto applies every change at once and never throttles. The proxy forwards
each request to moto unchanged, but can first answer with Route 53's XML
error for throttling (HTTP 400, ``Throttling`` or ``PriorRequestNotComplete``)
and can report changes as ``PENDING`` for a number of polls before ``INSYNC``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

ERROR_XML = """<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>
"""
MESSAGES = {
    "Throttling": "Rate exceeded",
    "PriorRequestNotComplete": "The request was rejected because Route 53 was "
    "still processing a prior request.",
}
FORWARDED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Amz-Date",
    "X-Amz-Content-SHA256",
)


@dataclass
class Route53Proxy:
    """Forwards to ``upstream`` (moto); see the module docstring for the extras."""

    upstream: str
    # set by whoever serves the app, e.g. http://127.0.0.1:PORT
    url: str = ""
    calls: list[str] = field(default_factory=list)
    pending_reports: int = 0
    _failures: list[str] = field(default_factory=list)

    def fail_next(self, code: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with this Route 53 error code."""
        self._failures.extend([code] * times)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        self.calls.append(f"{request.method} {request.path}")
        if self._failures:
            code = self._failures.pop(0)
            return web.Response(
                status=400,
                content_type="text/xml",
                text=ERROR_XML.format(code=code, message=MESSAGES.get(code, code)),
            )
        body = await request.read()
        headers = {
            k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers
        }
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers=headers,
            ) as reply:
                text = await reply.text()
                status = reply.status
                content_type = reply.content_type
        if self.pending_reports > 0 and "<Status>INSYNC</Status>" in text:
            self.pending_reports -= 1
            text = text.replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>")
        return web.Response(status=status, text=text, content_type=content_type)
