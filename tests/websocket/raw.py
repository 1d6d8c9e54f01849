"""A bare WebSocket client over a socket, for clients that misbehave on purpose.

aiohttp's client reads the socket whatever the test does; this one reads only
when asked, so a test can play a client that leaves the server's answers unread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

TEXT = 0x1
CLOSE = 0x8


class RawClient:
    """One WebSocket connection, read and written frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, receive_buffer: int = 4096) -> RawClient:
        """Connect to ``/api/current`` on 127.0.0.1 with a small receive buffer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connecting, so the kernel does not grow it on its own.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /api/current HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | TEXT, 0x80 | length)
        elif length < 2**16:
            header = struct.pack("!BBH", 0x80 | TEXT, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | TEXT, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def send(self, body: Any) -> None:
        await self.send_text(json.dumps(body))

    async def call(self, method: str, *params: Any, request_id: Any) -> None:
        """Send a request without waiting for its answer."""
        await self.send(
            {
                "jsonrpc": "2.0",
                "method": method,
                "params": list(params),
                "id": request_id,
            }
        )

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def message(self) -> dict[str, Any]:
        """The next text message, decoded."""
        opcode, payload = await self.frame()
        assert opcode == TEXT, (opcode, payload[:100])
        result: dict[str, Any] = json.loads(payload)
        return result

    async def close_code(self) -> tuple[int, list[dict[str, Any]]]:
        """Read up to the server's close frame: (its code, the messages before it)."""
        messages = []
        while True:
            opcode, payload = await self.frame()
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0], messages
            messages.append(json.loads(payload))

    def close(self) -> None:
        self.writer.close()
