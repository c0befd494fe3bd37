"""`--transport asyncio` against whatever a server sends: random bytes, and well-formed responses
with their status line, headers and framing mutated, cut short, split, copied or added to."""

import gzip
import tempfile
import time

from hypothesis import HealthCheck, given, settings, strategies as st
from support_rawhttp import (  # noqa: F401  (no_asyncio_complaints: an autouse fixture)
    RawServer, ask, frame, no_asyncio_complaints, one_line_error, payload, right,
)

from kdpipe.teacher import TeacherFatalError


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
