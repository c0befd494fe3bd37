"""What the client sends through: one endpoint's transport (transport.py), or a pool of
replicas (replicas.py), wrapped in the rate limiter (ratelimit.py) when asked."""

from __future__ import annotations

import kdpipe.teacher.transport as transport


def make_transport(config):
    """The transport config.transport names, for its one endpoint (transport.py, transport_asyncio.py)."""
    if config.transport == "asyncio":
        from kdpipe.teacher.transport_asyncio import AsyncioTransport

        return AsyncioTransport(config)
    return transport.make_transport(config)


def make_sender(config, replica_counts: dict | None = None, limit_counts: dict | None = None):
    """A transport for `config`: with replicas, a pool of one per endpoint that counts requests
    per replica in `replica_counts`; with --adaptive, --rpm or --tpm, rate-limited, counting in
    `limit_counts`."""
    if config.replicas:
        from kdpipe.teacher.replicas import ReplicaPool

        sender = ReplicaPool(config, make_transport, replica_counts)
    else:
        sender = make_transport(config)
    if config.adaptive or config.rpm or config.tpm:
        from kdpipe.teacher.ratelimit import RateLimited

        sender = RateLimited(sender, config, limit_counts)
    return sender
