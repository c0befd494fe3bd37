"""What `--transport asyncio` puts on the wire, checked by a raw server on 127.0.0.1: the request
line and headers, and the keys and addresses it refuses to send at all."""

import socket

import pytest
from support_rawhttp import (  # noqa: F401  (no_asyncio_complaints: an autouse fixture)
    RawServer, answering, ask, no_asyncio_complaints, right,
)

from kdpipe.teacher import TeacherFatalError


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
