"""`--transport asyncio` at the byte level: raw HTTP servers on 127.0.0.1 (tests/support_rawhttp.py),
each behaving like a quirky or hostile endpoint, driven through the real client (complete()): the
answers a user gets, the errors recorded instead, the attempts counted, and that nothing hangs."""

import gzip
import json
import time
import zlib

import pytest
from support_rawhttp import (  # noqa: F401  (no_asyncio_complaints: an autouse fixture)
    RawServer, answering, ask, frame, no_asyncio_complaints, ok, one_line_error, payload, question, right,
)

from kdpipe.teacher import TeacherFatalError


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


@pytest.mark.parametrize("case", ["plain", "gzip_bomb"])
def test_a_body_past_the_size_limit_is_refused_before_memory_fills(tmp_path, monkeypatch, case):
    from kdpipe.teacher import transport_asyncio

    monkeypatch.setattr(transport_asyncio, "MAX_RESPONSE_BYTES", 1 << 20)  # 256 MiB is slow to send

    def handle(peer):
        while peer.request() is not None:
            if case == "plain":  # a body without end
                peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(40):
                    peer.send(b"10000\r\n" + b" " * 0x10000 + b"\r\n")
            else:  # 2 KiB that decode to 2 MiB
                peer.send(frame(gzip.compress(b" " * (2 << 20)), headers=["Content-Encoding: gzip"])[0])

    with RawServer(handle) as srv:
        got, _ = ask(tmp_path, srv.url, timeout=5)
    expected = "malformed HTTP response: over 1 MiB" if case == "plain" else "over 1 MiB decoded"
    assert one_line_error(got[0]) and expected in got[0].detail, got[0].detail


def test_a_gzip_body_cut_short_is_refused(tmp_path):
    with RawServer(answering(lambda body: frame(gzip.compress(payload(body))[:-12],
                                                headers=["Content-Encoding: gzip"])[0])) as srv:
        got, _ = ask(tmp_path, srv.url)
    assert one_line_error(got[0]) and "malformed gzip response body: cut short" in got[0].detail


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


def test_a_redirect_to_an_address_with_a_key_in_it_is_named_without_the_key(tmp_path):
    target = "https://api.example.com/v1?api_key=sk-proj-abcdefghijklmnop0123456789"
    with RawServer(answering(lambda body: frame(b"", 302, [f"Location: {target}"], reason="Found")[0])) as srv:
        with pytest.raises(TeacherFatalError) as e:
            ask(tmp_path, srv.url)
    assert "https://api.example.com/v1" in str(e.value) and "abcdefghijklmnop" not in str(e.value)


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
