"""`--transport asyncio` at the byte level: raw HTTP servers on 127.0.0.1, each behaving like a
quirky or hostile endpoint, driven through the real client (complete()): the answers a user gets,
the errors recorded instead, the attempts counted, and that nothing hangs."""

import gzip
import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kdpipe.teacher import ChatRequest, ResponseCache, Stats, TeacherConfig, TeacherFatalError, complete


def question(i: int) -> str:
    return f"question {i}"


def answer(q: str) -> str:
    return f"The answer to {q!r} is 42."


def payload(body: dict) -> bytes:
    """The chat completion a well-behaved server returns for request `body`."""
    q = body["messages"][-1]["content"]
    return json.dumps({"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": answer(q)},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).encode()


def frame(data: bytes, status: int = 200, headers=(), framing: str = "length", chunk: int = 16,
          reason: str = "OK") -> tuple[bytes, list[range]]:
    """An HTTP/1.1 response carrying `data`, and where `data`'s bytes lie in it. framing: "length"
    (Content-Length), "chunked" (chunks of `chunk` bytes), "close" (the body ends with the connection)."""
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", *headers]
    if framing == "length":
        lines.append(f"Content-Length: {len(data)}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if framing != "chunked":
        return wire + data, [range(len(wire), len(wire) + len(data))]
    spans = []
    for at in range(0, len(data), chunk):
        piece = data[at:at + chunk]
        wire += b"%x;ext=1\r\n" % len(piece)
        spans.append(range(len(wire), len(wire) + len(piece)))
        wire += piece + b"\r\n"
    return wire + b"0\r\nX-Trailer: t\r\n\r\n", spans


def ok(body: dict, **kw) -> bytes:
    return frame(payload(body), **kw)[0]


class Peer:
    """One accepted connection as the server sees it."""

    def __init__(self, sock, server):
        self.sock, self.server, self.buf = sock, server, b""
        self.number = 0  # this connection's place among those that carried a POST, from 1

    def request(self) -> dict | None:
        """The next POST's JSON body; None once the client closed the connection. The client's
        `GET /models` probe (kdpipe/teacher/identity.py) is answered 404 here, uncounted."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].startswith("GET "):
            self.sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None
        if not self.number:
            with self.server.lock:
                self.server.accepted += 1
                self.number = self.server.accepted
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers["content-length"])
        while len(self.buf) < size:
            if not self._more():
                return None
        body, self.buf = self.buf[:size], self.buf[size:]
        self.server.heads.append((lines[0], headers))
        return json.loads(body)

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            return False
        self.buf += data
        return bool(data)

    def send(self, data: bytes, cuts=()) -> None:
        """`data` in separate TCP writes, cut at the fractions `cuts` of its length."""
        at = sorted({int(c * len(data)) for c in cuts} - {0, len(data)})
        for start, end in zip([0, *at], [*at, len(data)]):
            self.sock.sendall(data[start:end])
            if at:
                time.sleep(0.0005)

    def trickle(self, data: bytes) -> None:
        """`data` one byte per TCP write."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(0.0001)

    def reset(self) -> None:
        """Close with a TCP reset instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def client_closed(self, within: float = 3.0) -> bool:
        self.sock.settimeout(within)
        while self._more():
            pass
        return True


class RawServer:
    """A TCP server on 127.0.0.1 (port 0) running `handle(peer)` for each connection in a thread;
    `accepted` counts the connections that carried a chat request."""

    def __init__(self, handle, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        self.handle, self.tls = handle, tls
        self.listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.settimeout(0.05)
        port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/v1"
        self.accepted = 0
        self.lock = threading.Lock()
        self.heads: list[tuple[str, dict]] = []
        self.notes: list[str] = []
        self.failures: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()

    def __enter__(self):
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(6)
        self.listener.close()
        assert not self.failures, self.failures

    def _accept(self):
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(5)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock):
        try:
            if self.tls:
                sock = self.tls.wrap_socket(sock, server_side=True)
            self.handle(Peer(sock, self))
        except OSError:
            pass  # the client went away: what it saw is what the test checks
        except BaseException as e:  # noqa: BLE001  a broken handler fails the test in __exit__
            self.failures.append(e)
        finally:
            sock.close()


def answering(reply=ok, **kw):
    """A keep-alive server answering each request with `reply(body, **kw)`."""
    def handle(peer):
        while (body := peer.request()) is not None:
            peer.send(reply(body, **kw))
    return handle


def ask(tmp_path, url, count=1, first=0, name="c", **kw):
    """complete() over `count` questions through the asyncio transport: (one Completion each, stats)."""
    kw = {"timeout": 2.0, "retries": 0, "backoff": 0.01, "concurrency": 1, "transport": "asyncio", **kw}
    stats = Stats()
    requests = [ChatRequest([{"role": "user", "content": question(i)}]) for i in range(first, first + count)]
    with ResponseCache(Path(tmp_path) / f"{name}.sqlite") as cache:
        results = complete(TeacherConfig(model="m", base_url=url, **kw), requests, cache, stats)
    return [r[0] for r in results], stats


def right(got, i: int) -> bool:
    return got.error is None and got.text == answer(question(i))


def one_line_error(got) -> bool:
    return got.error == "transport" and got.text is None and bool(got.detail) and "\n" not in got.detail


@pytest.fixture(autouse=True)
def no_asyncio_complaints(caplog):
    """asyncio logs what escaped a protocol callback or a task ("Fatal error ...", "Task exception
    was never retrieved"): a traceback on the user's terminal, never acceptable."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]


# --- bodies and framing -------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_every_body_framing_whole_or_one_byte_per_write(tmp_path, framing, byte_by_byte):
    def handle(peer):
        while (body := peer.request()) is not None:
            wire = ok(body, framing=framing, chunk=5)
            peer.trickle(wire) if byte_by_byte else peer.send(wire)
            if framing == "close":
                return  # the body ends where the connection does

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=3)
    assert all(right(g, i) for i, g in enumerate(got)), got
    assert stats.requests == 3 and stats.retries == 0
    assert srv.accepted == (3 if framing == "close" else 1)


def test_connection_close_on_every_response_many_in_a_row(tmp_path):
    def handle(peer):
        body = peer.request()
        if body is not None:
            peer.send(ok(body, headers=["Connection: close"]))
            peer.client_closed()  # the client closes its side too

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=30)
    assert all(right(g, i) for i, g in enumerate(got))
    assert srv.accepted == 30 and stats.requests == 30 and stats.retries == 0


def test_keep_alive_reuses_few_connections_and_sends_a_plain_post(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wiretest-0123456789")
    with RawServer(answering()) as srv:
        got, stats = ask(tmp_path, srv.url, count=40, concurrency=4)
    assert all(right(g, i) for i, g in enumerate(got))
    assert 1 <= srv.accepted <= 4 and stats.requests == 40
    line, headers = srv.heads[0]
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["host"] == srv.url.split("/")[2]
    assert headers["authorization"] == "Bearer sk-wiretest-0123456789"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("key", ["sk-from-a-windows-file-0123456789\r", "sk-abc0123456789\r\nX-Injected: 1",
                                 "sk-\u201cpasted-with-quotes\u201d-0123456789"])
def test_a_key_no_header_can_carry_stops_the_run_before_sending(tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with RawServer(answering()) as srv:
        with pytest.raises(TeacherFatalError) as e:
            ask(tmp_path, srv.url, count=2)
    assert "$OPENAI_API_KEY" in str(e.value) and "\n" not in str(e.value)
    assert "0123456789" not in str(e.value) and srv.heads == []


def test_a_base_url_path_beyond_ascii_is_percent_encoded(tmp_path):
    with RawServer(answering()) as srv:
        got, _ = ask(tmp_path, srv.url + "/modèles", count=1)
    assert right(got[0], 0) and srv.heads[0][0] == "POST /v1/mod%C3%A8les/chat/completions HTTP/1.1"


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_an_ipv6_literal_base_url(tmp_path):
    try:
        srv = RawServer(answering(), host="::1")
    except OSError:
        pytest.skip("::1 is not available here")
    with srv:
        got, _ = ask(tmp_path, srv.url, count=2)
    assert all(right(g, i) for i, g in enumerate(got))
    assert srv.heads[0][1]["host"] == srv.url.split("/")[2]  # "[::1]:port", brackets kept


# --- kept-alive connections the server closes -----------------------------------------------------

@pytest.mark.parametrize("how", ["after_response", "on_next_request", "reset_on_next_request"])
def test_a_server_closing_kept_alive_connections_unannounced_costs_no_retry(tmp_path, how):
    """Each connection answers one request and then goes away without a `Connection: close`:
    right after the answer, or as the next request arrives (an idle timeout firing just then).
    A request meeting such a close goes out once more, on a new connection, and no more often."""
    def handle(peer):
        body = peer.request()
        if body is None:
            return
        peer.send(ok(body))
        if how == "after_response":
            return
        if peer.request() is not None:
            peer.reset() if how.startswith("reset") else None

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=12, concurrency=3)
    assert all(right(g, i) for i, g in enumerate(got)), got
    assert stats.requests == 12 and stats.retries == 0 and srv.accepted == 12
    assert len(srv.heads) <= 2 * 12


def test_a_server_closing_connections_idle_for_a_short_time(tmp_path):
    def handle(peer):
        peer.sock.settimeout(0.03)  # the server's idle timeout
        while (body := peer.request()) is not None:
            peer.send(ok(body))

    with RawServer(handle) as srv:  # --rpm 600 spaces the requests 0.1 s apart: each finds its connection closed
        got, stats = ask(tmp_path, srv.url, count=4, rpm=600)
    assert all(right(g, i) for i, g in enumerate(got))
    assert stats.retries == 0 and srv.accepted == 4


def test_a_server_closing_every_connection_unanswered_is_a_bounded_connection_error(tmp_path):
    def handle(peer):
        peer.request()

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=1, retries=2)
    assert one_line_error(got[0]) and got[0].detail.startswith("connection error:"), got[0].detail
    assert "gave up after 3 attempts" in got[0].detail
    assert stats.requests == 3 and stats.retries == 2 and srv.accepted == 3


# --- responses that are wrong at the HTTP level -------------------------------------------------

BROKEN = {
    "truncated_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\": [", "closed in the middle"),
    "truncated_chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{\"cho", "closed in the middle"),
    "garbage": (b"\x00\xffSSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP response"),
    "status_line_only": (b"HTTP/1.1 200 OK\r\n", "closed in the middle"),
    "status_code_too_long": (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "malformed HTTP response"),
    "status_code_letters": (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", "malformed HTTP response"),
    "switching_protocols": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                            "malformed HTTP response"),
    "duplicate_length": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "malformed HTTP"),
    "unknown_encoding": (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\n\x0b\x01\x80{",
                         "unsupported response encoding 'br'"),
    "corrupt_gzip": (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8bxx",
                     "malformed gzip response body"),
    "not_json": (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html/>\r\n", "malformed response body"),
    "empty_200": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed response body"),
    "http_0_9_body": (b"{\"choices\": []}", "malformed HTTP response"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_response_is_a_retried_one_line_transport_error(tmp_path, case):
    wire, expected = BROKEN[case]

    def handle(peer):
        if peer.request() is not None:
            peer.send(wire)

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, retries=1)
    assert one_line_error(got[0]) and expected in got[0].detail, got[0].detail
    assert "gave up after 2 attempts" in got[0].detail
    assert stats.requests == 2 and stats.retries == 1 and srv.accepted == 2


@pytest.mark.parametrize("extra", ["copy_same_write", "copy_next_write", "garbage_same_write", "crlf_next_write",
                                   "408_next_write"])
def test_bytes_after_a_complete_response_never_answer_the_next_request(tmp_path, extra):
    """A server that sends more than one response per request: the connection is not reused, so
    the stray copy is never taken as the answer to the next question. Requests go 50 ms apart
    (--rpm 1200): bytes arriving after the next request went out could be its answer for all any
    HTTP/1.1 client can tell (aiohttp takes them too), so only bytes before it are the client's to refuse."""
    def handle(peer):
        while (body := peer.request()) is not None:
            wire = ok(body)
            if extra == "copy_same_write":
                peer.send(wire + wire)
            elif extra == "garbage_same_write":
                peer.send(wire + b"garbage")
            elif extra == "408_next_write":  # what some servers send on an idle connection they close
                peer.send(wire)
                peer.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return
            else:
                peer.send(wire)
                peer.send(wire if extra == "copy_next_write" else b"\r\n")

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=10, rpm=1200)
    assert all(right(g, i) for i, g in enumerate(got)), got
    assert stats.retries == 0
    if extra != "crlf_next_write":  # an empty line before the next response is allowed (RFC 9112 2.2)
        assert srv.accepted == 10


def test_long_headers_are_read_and_endless_ones_cut_short(tmp_path):
    from kdpipe.teacher.transport_asyncio import MAX_HEAD_BYTES

    many = [f"X-Pad-{i}: {'a' * 1000}" for i in range(MAX_HEAD_BYTES // 1024 - 4)]

    def handle(peer):
        body = peer.request()
        if body is None:
            return
        if peer.number == 1:
            peer.send(ok(body, headers=many))
        else:  # one header that never ends
            peer.send(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            for _ in range(MAX_HEAD_BYTES // 4096 + 2):
                peer.send(b"a" * 4096)
            peer.client_closed()

    with RawServer(handle) as srv:
        start = time.monotonic()
        (long_ok,), _ = ask(tmp_path, srv.url, name="a", timeout=5)
        (endless,), _ = ask(tmp_path, srv.url, name="b", timeout=5)
    assert right(long_ok, 0)
    assert one_line_error(endless) and "headers over 64 KiB" in endless.detail, endless.detail
    assert time.monotonic() - start < 3  # cut short, not left to the timeout


@pytest.mark.parametrize("same_write", [True, False])
def test_100_continue_before_the_real_response(tmp_path, same_write):
    def handle(peer):
        while (body := peer.request()) is not None:
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            peer.send(interim + ok(body)) if same_write else (peer.send(interim), peer.send(ok(body)))

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=3)
    assert all(right(g, i) for i, g in enumerate(got))
    assert srv.accepted == 1 and stats.retries == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_compressed_body_is_decoded(tmp_path, encoding, framing):
    squeeze = gzip.compress if encoding.lower() == "gzip" else zlib.compress

    def handle(peer):
        while (body := peer.request()) is not None:
            peer.send(frame(squeeze(payload(body)), headers=[f"Content-Encoding: {encoding}"], framing=framing)[0])

    with RawServer(handle) as srv:
        got, _ = ask(tmp_path, srv.url, count=2)
    assert all(right(g, i) for i, g in enumerate(got))


# --- status codes -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_stops_the_run_naming_where_it_points(tmp_path, status):
    target = "https://api.example.com/v2"
    with RawServer(answering(lambda body: frame(b"", status, [f"Location: {target}"], reason="Moved")[0])) as srv:
        with pytest.raises(TeacherFatalError) as e:
            ask(tmp_path, srv.url, count=3, retries=3)
    assert target in str(e.value) and f"HTTP {status}" in str(e.value) and "\n" not in str(e.value)
    assert len(srv.heads) == 1  # nothing more sent once the run is known to be bad


def error_reply(status: int, message: str, headers=()) -> bytes:
    return frame(json.dumps({"error": {"message": message}}).encode(), status, headers, reason="Error")[0]


def test_429_waits_for_retry_after_then_succeeds(tmp_path):
    def handle(peer):
        while (body := peer.request()) is not None:
            first = len(peer.server.heads) == 1
            peer.send(error_reply(429, "slow down", ["Retry-After: 0.4"]) if first else ok(body))

    with RawServer(handle) as srv:
        start = time.monotonic()
        got, stats = ask(tmp_path, srv.url, retries=2)
    assert right(got[0], 0) and stats.retries == 1 and stats.requests == 2
    assert time.monotonic() - start >= 0.4
    assert srv.accepted == 1  # an error response leaves the connection fit for reuse


def test_500_is_retried_and_reported_with_the_servers_message(tmp_path):
    with RawServer(answering(lambda body: error_reply(500, "the model fell over"))) as srv:
        got, stats = ask(tmp_path, srv.url, retries=1)
    assert one_line_error(got[0]) and "HTTP 500: the model fell over" in got[0].detail
    assert stats.requests == 2 and stats.retries == 1


@pytest.mark.parametrize("status, says", [(401, "API key was refused"), (403, "API key was refused"),
                                          (404, "not found")])
def test_401_403_404_stop_the_run_without_echoing_the_key(tmp_path, monkeypatch, status, says):
    key = "sk-secretkey-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def reply(body):  # some servers echo the request's headers in their error
        return error_reply(status, f"bad request with Authorization: Bearer {key}")

    with RawServer(answering(reply)) as srv:
        with pytest.raises(TeacherFatalError) as e:
            ask(tmp_path, srv.url, count=2, retries=3)
    assert says in str(e.value) and key not in str(e.value) and "\n" not in str(e.value)
    assert len(srv.heads) == 1


def test_400_rejects_that_request_only(tmp_path):
    def handle(peer):
        while (body := peer.request()) is not None:
            bad = body["messages"][-1]["content"] == question(0)
            peer.send(error_reply(400, "this prompt is too long") if bad else ok(body))

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, count=2, retries=3)
    assert one_line_error(got[0]) and got[0].detail == "HTTP 400: this prompt is too long"
    assert right(got[1], 1) and stats.requests == 2 and stats.retries == 0


# --- servers that go quiet ----------------------------------------------------------------------

@pytest.mark.parametrize("stall", ["before_headers", "mid_body", "drip"])
def test_a_server_that_never_answers_times_out_and_its_connection_is_dropped(tmp_path, stall):
    closed = []

    def handle(peer):
        body = peer.request()
        if body is None:
            return
        if peer.number == 1:  # the first connection stalls; the client must close it, not reuse it
            if stall == "mid_body":
                peer.send(ok(body)[:-10])
            elif stall == "drip":  # a byte every 20 ms: never quiet for long, never done in time
                try:
                    for byte in ok(body):
                        peer.sock.sendall(bytes([byte]))
                        time.sleep(0.02)
                except OSError:
                    pass  # the client closed the connection
            closed.append(peer.client_closed(within=4))
            return
        peer.send(ok(body))
        while (body := peer.request()) is not None:
            peer.send(ok(body))

    with RawServer(handle) as srv:
        start = time.monotonic()
        got, stats = ask(tmp_path, srv.url, count=2, timeout=0.3)
        took = time.monotonic() - start
    assert one_line_error(got[0]) and got[0].detail == "no response within 0.3 s (gave up after 1 attempts)"
    assert right(got[1], 1)
    assert srv.accepted == 2 and closed == [True]
    assert took < 1.2  # the request's own timeout, not the client's outer backstop


def test_a_timed_out_attempt_is_retried_on_a_new_connection(tmp_path):
    def handle(peer):
        body = peer.request()
        if body is None or peer.number == 1:
            return peer.client_closed(within=4)
        peer.send(ok(body))

    with RawServer(handle) as srv:
        got, stats = ask(tmp_path, srv.url, retries=1, timeout=0.3)
    assert right(got[0], 0) and stats.retries == 1 and srv.accepted == 2


# --- HTTPS with a certificate made here ---------------------------------------------------------

@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", where / "key.pem", "-out", where / "cert.pem"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(where / "cert.pem", where / "key.pem")
    return ctx, where / "cert.pem"


def test_https_with_a_trusted_certificate(tmp_path, monkeypatch, self_signed):
    ctx, cert = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what OpenSSL's default verify paths read
    with RawServer(answering(), tls=ctx) as srv:
        got, stats = ask(tmp_path, srv.url, count=3)
    assert all(right(g, i) for i, g in enumerate(got)) and srv.accepted == 1


def test_https_with_an_untrusted_certificate_is_a_connection_error(tmp_path, self_signed):
    ctx, _ = self_signed
    with RawServer(answering(), tls=ctx) as srv:
        got, _ = ask(tmp_path, srv.url)
    assert one_line_error(got[0]) and got[0].detail.startswith("connection error:")
    assert "CERTIFICATE_VERIFY_FAILED" in got[0].detail


# --- whatever a server sends ----------------------------------------------------------------------

def outcome_is_acceptable(url: str, count: int = 2) -> None:
    """complete() returns, for each request, the right answer or a one-line transport error; or it
    stops the run with a one-line TeacherFatalError (a mutated status line can read 401 or 301)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="httptests-") as where:
        try:
            got, _ = ask(where, url, count=count, timeout=0.25)
        except TeacherFatalError as e:
            assert "\n" not in str(e)
            return
        finally:
            assert time.monotonic() - start < 5
    for i, g in enumerate(got):
        assert right(g, i) or one_line_error(g), g


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), close=st.booleans(), cuts=st.lists(st.floats(0, 1), max_size=3))
def test_random_bytes_from_the_server(data, close, cuts):
    def handle(peer):
        while peer.request() is not None:
            peer.send(data, cuts)
            if close:
                return

    with RawServer(handle) as srv:
        outcome_is_acceptable(srv.url)


EDIT = st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.floats(0, 1, exclude_max=True),
                 st.binary(min_size=1, max_size=3))


def mutate(wire: bytes, spans: list[range], edits, cut: float | None, extra: bytes) -> bytes:
    """`wire` with bytes of its status line, headers and framing changed (never those of the JSON
    itself, which no HTTP client could tell from a real answer), then cut short or added to."""
    body = set().union(*spans)
    free = [i for i in range(len(wire)) if i not in body]
    out = bytearray(wire)
    for op, where, junk in sorted(edits, key=lambda e: -free[int(e[1] * len(free))]):
        at = free[int(where * len(free))]
        if op == "replace":
            out[at] = junk[0]
        elif op == "insert":
            out[at:at] = junk
        else:
            del out[at]
    if cut is not None:
        out = out[:int(cut * len(out))]
    return bytes(out) + extra


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(framing=st.sampled_from(["length", "chunked", "close"]), squeeze=st.booleans(), chunk=st.integers(1, 64),
       edits=st.lists(EDIT, max_size=3), cut=st.none() | st.floats(0, 1),
       extra=st.sampled_from([b"", b"\r\n", b"HTTP/1.1 200 OK\r\n", b"junk"]) | st.binary(max_size=8),
       copy=st.booleans(), close=st.sampled_from([True, True, True, False]),
       cuts=st.lists(st.floats(0, 1), max_size=3))
def test_mutated_responses_never_yield_a_wrong_answer_nor_hang(framing, squeeze, chunk, edits, cut, extra, copy,
                                                                close, cuts):
    def handle(peer):
        while (body := peer.request()) is not None:
            data = gzip.compress(payload(body)) if squeeze else payload(body)
            wire, spans = frame(data, headers=["Content-Encoding: gzip"] if squeeze else [], framing=framing,
                                chunk=chunk)
            wire = mutate(wire, spans, edits, cut, extra)
            # A copy goes in the same write as the end of the first: one arriving after the next
            # request went out would be taken as its answer by any HTTP/1.1 client.
            peer.send(wire + wire, [c / 2 for c in cuts]) if copy else peer.send(wire, cuts)
            if close or framing == "close":
                return

    with RawServer(handle) as srv:
        outcome_is_acceptable(srv.url)
