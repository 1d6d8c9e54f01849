"""A vendor API that misbehaves: errors are retried with backoff or reported
clearly, and a published value is still removed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from certd.dns.base import parse_attributes
from certd.dns.cloudflare import CloudflareAttributes, CloudflareProvider
from certd.errors import DNSProviderError
from tests.dns.conftest import TEST_CONTEXT

ZONE = {"id": "zone-1", "name": "example.test", "status": "active"}


class FaultyApi:
    """Just enough of the Cloudflare v4 API, with faults queued per request."""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def envelope(self, result: Any) -> web.Response:
        return web.json_response(
            {
                "success": True,
                "errors": [],
                "messages": [],
                "result": result,
                "result_info": {
                    "page": 1,
                    "per_page": 100,
                    "total_pages": 1,
                    "count": len(result) if isinstance(result, list) else 1,
                },
            }
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        fault = self.faults.pop(0) if self.faults else "none"
        if fault == "503":
            return web.Response(status=503, text="upstream unavailable")
        if fault == "429":
            return web.Response(
                status=429, headers={"Retry-After": "1"}, text="slow down"
            )
        if fault == "slow":
            await asyncio.sleep(2)
        if fault == "garbage":
            return web.Response(
                status=200, text="<html>proxy error</html>", content_type="text/html"
            )
        if fault == "truncated":
            return web.Response(
                status=200,
                text='{"success": true, "result": [',
                content_type="application/json",
            )
        if request.path == "/zones":
            name = request.query.get("name")
            return self.envelope([ZONE] if name == ZONE["name"] else [])
        if request.method == "POST":
            body = await request.json()
            record = {**body, "id": f"rec-{len(self.records) + 1}"}
            self.records[record["id"]] = record
            return self.envelope(record)
        if request.method == "GET":
            matching = [
                r
                for r in self.records.values()
                if r["name"] == request.query.get("name")
                and r["content"] == request.query.get("content", r["content"])
            ]
            return self.envelope(matching)
        if request.method == "DELETE":
            record_id = request.path.rsplit("/", 1)[-1]
            self.records.pop(record_id, None)
            return self.envelope({"id": record_id})
        return web.Response(status=404)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FaultyApi, str]]:
    fake = FaultyApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def provider(url: str, **context: Any) -> CloudflareProvider:
    attributes = parse_attributes(
        CloudflareAttributes, {"api_token": "t0ken", "api_url": url}
    )
    return CloudflareProvider(
        attributes,
        dataclasses.replace(TEST_CONTEXT, **context),  # type: ignore[arg-type]
    )


async def test_transient_errors_are_retried(api: tuple[FaultyApi, str]) -> None:
    fake, url = api
    fake.faults = ["503", "429", "none", "503"]
    async with provider(url) as cloudflare:
        zone = await cloudflare.find_zone("_acme-challenge.www.example.test")
        await cloudflare.add_txt(zone, "_acme-challenge.www.example.test", "v1")
    assert zone == "example.test"
    assert [r["content"] for r in fake.records.values()] == ["v1"]
    # Two failed tries before the zone lookup went through, one before the add.
    assert len([c for c in fake.calls if c.startswith("GET /zones")]) >= 3


async def test_persistent_errors_are_reported_as_retryable(
    api: tuple[FaultyApi, str],
) -> None:
    fake, url = api
    fake.faults = ["503"] * 10
    async with provider(url, max_attempts=3) as cloudflare:
        with pytest.raises(DNSProviderError) as caught:
            await cloudflare.find_zone("www.example.test")
    assert caught.value.retryable is True
    assert "503" in caught.value.message
    assert caught.value.message.startswith("cloudflare:")
    assert len(fake.calls) == 3


async def test_a_slow_api_times_out_with_a_clear_error(
    api: tuple[FaultyApi, str],
) -> None:
    fake, url = api
    fake.faults = ["slow"] * 5
    async with provider(url, request_timeout=0.3, max_attempts=2) as cloudflare:
        with pytest.raises(DNSProviderError) as caught:
            await cloudflare.find_zone("www.example.test")
    assert "TimeoutError" in caught.value.message or "timed out" in caught.value.message
    assert caught.value.retryable is True


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
async def test_malformed_replies_are_reported_not_crashed_on(
    api: tuple[FaultyApi, str], fault: str
) -> None:
    fake, url = api
    fake.faults = [fault]
    async with provider(url) as cloudflare:
        with pytest.raises(DNSProviderError) as caught:
            await cloudflare.find_zone("www.example.test")
    assert caught.value.message.startswith("cloudflare:")
    assert "t0ken" not in caught.value.message


async def test_a_value_is_removed_after_a_failed_first_try(
    api: tuple[FaultyApi, str],
) -> None:
    fake, url = api
    async with provider(url) as cloudflare:
        await cloudflare.add_txt(
            "example.test", "_acme-challenge.x.example.test", "ours"
        )
        fake.faults = ["503", "429"]
        await cloudflare.remove_txt(
            "example.test", "_acme-challenge.x.example.test", "ours"
        )
    assert fake.records == {}
    assert json.dumps(fake.calls).count("DELETE") == 1
