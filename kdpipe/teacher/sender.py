"""What the client sends through: one endpoint's transport (transport.py, transport_asyncio.py), or a pool of
replicas (replicas.py), wrapped in the rate limiter (ratelimit.py) when asked."""

from __future__ import annotations


def make_transport(config):
    """The transport a TeacherConfig names, for its one endpoint; `send(body) -> dict` raises
    Retryable, Rejected or TeacherFatalError (transport.py). Each is imported only when chosen:
    the client libraries take a tenth of a second or more to import."""
    if config.transport == "openai":
        from kdpipe.teacher.transport import OpenAITransport

        return OpenAITransport(config)
    if config.transport == "aiohttp":
        from kdpipe.teacher.transport import AiohttpTransport

        return AiohttpTransport(config)
    from kdpipe.teacher.transport_asyncio import AsyncioTransport

    return AsyncioTransport(config)


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
