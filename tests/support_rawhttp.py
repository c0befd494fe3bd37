"""Raw HTTP servers on 127.0.0.1 for the tests of `--transport asyncio`: each test writes how its
server behaves, byte by byte, and drives the real client (complete()) against it."""

import json
import logging
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import pytest

from kdpipe.teacher import ChatRequest, ResponseCache, Stats, TeacherConfig, complete


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
