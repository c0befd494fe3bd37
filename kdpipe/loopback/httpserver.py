"""A minimal HTTP/1.1 server on asyncio for the loopback teacher.

Why not aiohttp.web: the benchmark runs client and server on the same two
cores, and a full web framework spends ~0.26 ms of CPU per request where this
spends a fraction of that, so the server stays out of the client's way.

It speaks what OpenAI-compatible clients send: one request at a time per
keep-alive connection, bodies with Content-Length. A handler is
`async (method, target, headers, body) -> (status, headers, body bytes)`, the
target being the path with its query string; when
the client hangs up, the handler is cancelled.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

MAX_BODY = 64 << 20
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Connection(asyncio.Protocol):
    def __init__(self, handler, connections: set):
        self.handler, self.connections = handler, connections
        self.buffer = bytearray()
        self.task: asyncio.Task | None = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc):
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes):
        self.buffer += data
        if self.task is None:
            self._next_request()

    def _next_request(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length") or 0)
        except ValueError:
            return self._reply_and_close(400, b'{"error": {"message": "bad request"}}')
        if "chunked" in headers.get("transfer-encoding", "") or not 0 <= length <= MAX_BODY:
            return self._reply_and_close(411, b'{"error": {"message": "send a Content-Length body"}}')
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4: end + 4 + length])
        del self.buffer[: end + 4 + length]
        keep_alive = headers.get("connection", "").lower() != "close"
        self.task = asyncio.ensure_future(self._respond(method, target, headers, body, keep_alive))

    async def _respond(self, method, target, headers, body, keep_alive):
        try:
            status, extra, payload = await self.handler(method, target, headers, body)
        except asyncio.CancelledError:
            return
        self._write(status, extra, payload, keep_alive)
        self.task = None
        if not keep_alive:
            self.transport.close()
        elif self.buffer:
            self._next_request()

    def _write(self, status, extra, payload, keep_alive=True):
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                "Content-Type: application/json", f"Content-Length: {len(payload)}",
                "Connection: " + ("keep-alive" if keep_alive else "close")]
        head += [f"{k}: {v}" for k, v in extra.items()]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)

    def _reply_and_close(self, status, payload):
        self._write(status, {}, payload, keep_alive=False)
        self.transport.close()


class HttpServer:
    """`await HttpServer(handler).start(host, port)`; `.port` is the bound port; `await .close()`."""

    def __init__(self, handler):
        self.handler = handler
        self.connections: set[_Connection] = set()
        self.server = None
        self.port = None

    async def start(self, host: str, port: int) -> "HttpServer":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self.handler, self.connections),
                                               host, port, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.server.close()
        for conn in list(self.connections):
            conn.transport.close()  # cancels a handler still waiting (a "hang" fault)
        await self.server.wait_closed()
