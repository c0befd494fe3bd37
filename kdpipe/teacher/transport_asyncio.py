"""`--transport asyncio`: the chat API over asyncio's own connections, responses parsed by httptools.

A POST to /chat/completions needs none of what a general HTTP client does per request
(cookies, redirects, proxies, tracing, a writer task and header objects): this sends
one prepared byte string on a kept-alive connection and hands the reply to llhttp
(through httptools, the parser uvicorn uses), a small fraction of aiohttp's CPU per
request. Failures come out as transport.py's three outcomes, like the other transports.

Kept-alive connections are reused newest first, and only while nothing has arrived on
them since their last response: a byte there is a stray response (which must never be
read as the next request's answer) or the server's close. A reused one the server closes
as the request goes out is replaced by one new connection at no cost of a retry (nothing
of its response had arrived). A request gets `timeout` seconds in all, like aiohttp's.
Not offered: proxies, redirects (a 3xx stops the run with the address to give instead).
"""

from __future__ import annotations

import asyncio
import json
import select
import zlib
from urllib.parse import quote, urlsplit

import httptools

from kdpipe import __version__
from kdpipe.teacher.transport import (
    Retryable, TeacherFatalError, classify_status, error_message, json_object, limit_headers, scrub_secret, short,
)


class AsyncioTransport:
    """One endpoint; `send(body, seen=None) -> dict` as in transport.py."""

    keeps_time = True  # connect, send and read end within --timeout: the client adds no timer of its own

    def __init__(self, config):
        self._url = config.resolved_base_url()
        self._model = config.model
        self._key = config.api_key()
        if not all(" " <= c <= "~" for c in self._key):
            # A key file with Windows line ends leaves a "\r"; a line break would end the header
            # early and let the rest be read as headers of its own. Never echo the key.
            raise TeacherFatalError(f"${config.api_key_env} holds a line break, a control or a non-ASCII "
                                    "character, which an HTTP header cannot carry: set the key again")
        self._timeout_s = config.timeout
        self._late = f"no response within {config.timeout:g} s"
        parts = urlsplit(self._url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        host_header = parts.netloc.rpartition("@")[2]  # an IPv6 literal keeps its brackets here
        if parts.port == (443 if self._tls else 80):
            host_header = host_header[:host_header.rindex(":")]  # the port clients leave out
        if not host_header.isascii():
            raise TeacherFatalError(f"{self._url}: give the host name in its ASCII (xn--) form")
        # Percent-encoded as any HTTP client does: a space would split the request line.
        path = quote((parts.path or "").rstrip("/") + "/chat/completions", safe="/%!$&'()*+,;=:@~")
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
                      f"Authorization: Bearer {self._key}\r\nContent-Type: application/json\r\n"
                      f"Accept: application/json\r\nUser-Agent: kdpipe/{__version__}\r\n"
                      "Content-Length: ").encode("ascii")
        self._idle: list[_Connection] = []
        self._ssl = None

    async def send(self, body: dict, seen: dict | None = None) -> dict:
        data = json.dumps(body).encode()
        message = b"%s%d\r\n\r\n%s" % (self._head, len(data), data)
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        status, headers, raw = await self._exchange(message, deadline)
        limit_headers(headers, seen)
        if status >= 400:
            classify_status(status, error_message(raw), headers.get("retry-after"), self._model, self._url, self._key)
        if 300 <= status < 400:
            where = short(scrub_secret(headers.get("location", "(no location)"), self._key))
            raise TeacherFatalError(f"{self._url}: the server redirects (HTTP {status}) to {where}: "
                                    "give that as --base-url")
        if status < 200:
            raise Retryable(f"HTTP {status}: not a final response")
        return json_object(raw)

    async def _exchange(self, message: bytes, deadline: float) -> tuple[int, dict, bytes]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reusable():
                conn.close()
                continue
            try:
                return await self._on(conn, message, deadline)
            except _StaleConnection:
                # Closed by the server as the request went out: nothing was answered. One new
                # connection, not the next idle one: a server that closes every reused
                # connection must not keep this request going round.
                break
        try:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            conn = await asyncio.wait_for(self._connect(), timeout)
        except asyncio.TimeoutError:
            raise Retryable(self._late) from None
        except OSError as e:
            raise Retryable(f"connection error: {short(str(e) or type(e).__name__)}") from None
        try:
            return await self._on(conn, message, deadline)
        except _StaleConnection as e:
            raise Retryable(f"connection error: {e}") from None

    async def _on(self, conn: _Connection, message: bytes, deadline: float) -> tuple[int, dict, bytes]:
        done = False
        try:
            status, headers, raw, keep_alive = await conn.exchange(message, deadline, self._late)
            done = keep_alive
            return status, headers, raw
        finally:
            # A cancelled or failed exchange may still have a response on its way: never reuse it.
            if done:
                self._idle.append(conn)
            else:
                conn.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._tls and self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()
        _, conn = await loop.create_connection(
            _Connection, self._host, self._port, ssl=self._ssl if self._tls else None,
            server_hostname=self._host if self._tls else None)
        return conn

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


# Past these a response is refused: a server sending headers or a body without end (or a small
# gzip body that decodes to gigabytes) would otherwise fill memory until the timeout. aiohttp
# stops a header line at 8 KiB; a chat completion has headers under 2 KiB and a body of a few
# MiB at most (logprobs, many samples).
MAX_HEAD_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 256 << 20


class _StaleConnection(Exception):
    """The connection closed before any byte of the response arrived."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as bytes arrive."""

    def __init__(self):
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._received = 0  # bytes of this request's response so far
        self._headers_done = False
        self.closed = False

    async def exchange(self, message: bytes, deadline: float, late: str) -> tuple[int, dict, bytes, bool]:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._headers, self._body, self._received, self._headers_done = {}, [], 0, False
        timer = loop.call_at(deadline, self._time_out, late)
        self._transport.write(message)
        try:
            return await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def reusable(self) -> bool:
        """Open, and nothing (a stray byte, the server's close) has arrived since the last response.
        That last check is a poll of the socket: such bytes may still wait in the kernel, unread."""
        if self.closed or self._transport.is_closing():
            return False
        sock = self._transport.get_extra_info("socket")
        return sock is None or not _pending(sock.fileno())

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection's state is unknown
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(Retryable(f"malformed HTTP response: {short(str(e) or type(e).__name__)}"))
            self.close()
        except httptools.HttpParserUpgrade:  # not an HttpParserError: uncaught, asyncio logs a traceback
            self._fail(Retryable("malformed HTTP response: a switch to another protocol"))
            self.close()
        else:
            if not self._headers_done and self._received > MAX_HEAD_BYTES:
                self._refuse(f"headers over {MAX_HEAD_BYTES >> 10} KiB")
            elif self._received > MAX_RESPONSE_BYTES:
                self._refuse(f"over {MAX_RESPONSE_BYTES >> 20} MiB")

    def _refuse(self, what: str) -> None:
        self._fail(Retryable(f"malformed HTTP response: {what}"))
        self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and "content-length" not in self._headers and \
                "chunked" not in self._headers.get("transfer-encoding", "").lower():
            self._complete(keep_alive=False)  # a body that ends where the connection does
        elif not self._received:
            waiter.set_exception(_StaleConnection(short(str(exc)) if exc else "closed by the server"))
        else:
            waiter.set_exception(Retryable("connection error: closed in the middle of the response"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            raise RuntimeError("a second response to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            self._headers, self._body, self._headers_done = {}, [], False
            return
        self._complete(keep_alive=self._parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        raw = b"".join(self._body)
        encoding = self._headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate"):  # not asked for, but some servers send it anyway
            decoder = zlib.decompressobj(47)  # gzip or zlib header, detected
            try:
                raw = decoder.decompress(raw, MAX_RESPONSE_BYTES)
            except zlib.error as e:
                return self._fail(Retryable(f"malformed {encoding} response body: {e}"))
            if decoder.unconsumed_tail:
                return self._fail(Retryable(f"malformed {encoding} response body: over "
                                            f"{MAX_RESPONSE_BYTES >> 20} MiB decoded"))
            if not decoder.eof:
                return self._fail(Retryable(f"malformed {encoding} response body: cut short"))
        elif encoding != "identity":
            return self._fail(Retryable(f"unsupported response encoding {short(encoding, 40)!r}"))
        self._waiter.set_result((self._parser.get_status_code(), self._headers, raw, keep_alive))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _time_out(self, late: str) -> None:
        self._fail(Retryable(late))  # the caller then closes the connection: its answer may still come


def _pending(fd: int) -> bool:
    """Whether a read on `fd` would not block (bytes or an EOF wait), without reading."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # Windows: no poll, and select takes any socket there

