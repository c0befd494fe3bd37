"""Several replicas of one teacher model (`--base-url` given more than once).

A transport with the same `send(body)` as the single-endpoint ones (transport.py): each
request goes to the replica with the fewest requests in flight (the fewest sent so far on
a tie); a replica whose requests failed SET_ASIDE_AFTER times in a row (connection errors,
5xx, timeouts; not 429, which is its rate limit speaking) is set aside for SET_ASIDE_S
seconds and its requests go to the others; the client's retry then lands elsewhere. When
every replica is set aside, the one due back first is tried. The cache key never names the
replica: they answer for one model.

`counts` (host -> requests, ok, failed, set_aside) is what the progress line and
`.meta.json` report; every request sent is counted under exactly one replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from kdpipe.teacher.identity import endpoint_host
from kdpipe.teacher.transport import Rejected, Retryable, TeacherFatalError

SET_ASIDE_AFTER = 3  # failures in a row
SET_ASIDE_S = 30.0


class _Replica:
    def __init__(self, host: str, transport):
        self.host, self.transport = host, transport
        self.in_flight = self.failures_in_a_row = 0
        self.aside_until = 0.0


class ReplicaPool:
    def __init__(self, config, make_one, counts: dict | None = None, set_aside_s: float = SET_ASIDE_S):
        self.set_aside_s = set_aside_s
        self.counts = {} if counts is None else counts
        self._replicas = []
        for url in config.base_urls():
            host = endpoint_host(url)
            self.counts.setdefault(host, {"requests": 0, "ok": 0, "failed": 0, "set_aside": 0})
            self._replicas.append(_Replica(host, make_one(dataclasses.replace(config, base_url=url, replicas=()))))
        # One kind of transport for all: if it keeps to --timeout itself, so does the pool (client.py).
        self.keeps_time = getattr(self._replicas[0].transport, "keeps_time", False)

    def _pick(self) -> _Replica:
        now = time.monotonic()
        ready = [r for r in self._replicas if r.aside_until <= now]
        if not ready:
            return min(self._replicas, key=lambda r: r.aside_until)
        return min(ready, key=lambda r: (r.in_flight, self.counts[r.host]["requests"]))

    async def send(self, body: dict, seen: dict | None = None) -> dict:
        replica = self._pick()
        count = self.counts[replica.host]
        count["requests"] += 1
        replica.in_flight += 1
        try:
            response = await replica.transport.send(body, seen)
        except Retryable as e:
            self._failed(replica, not str(e).startswith("HTTP 429"))
            raise
        except (Rejected, TeacherFatalError):
            count["failed"] += 1
            raise
        except (asyncio.CancelledError, Exception):  # the client's own timeout, or a surprise
            self._failed(replica, True)
            raise
        finally:
            replica.in_flight -= 1
        replica.failures_in_a_row = 0
        count["ok"] += 1
        return response

    def _failed(self, replica: _Replica, counts_against_it: bool) -> None:
        self.counts[replica.host]["failed"] += 1
        if not counts_against_it:
            return
        replica.failures_in_a_row += 1
        if replica.failures_in_a_row >= SET_ASIDE_AFTER:
            replica.failures_in_a_row = 0
            replica.aside_until = time.monotonic() + self.set_aside_s
            self.counts[replica.host]["set_aside"] += 1

    async def close(self) -> None:
        for r in self._replicas:
            await r.transport.close()


def describe_replicas(counts: dict) -> str:
    """"a:12 b:10 c:3 (1 failed)": requests answered per replica, for the progress line."""
    return " ".join(f"{host}:{c['ok']}" + (f" ({c['failed']} failed)" if c["failed"] else "")
                    for host, c in counts.items())
