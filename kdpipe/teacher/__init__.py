"""The teacher: an OpenAI-compatible endpoint, called concurrently, through a persistent cache.

    from kdpipe.teacher import TeacherConfig, ChatRequest, ResponseCache, complete

    config = TeacherConfig(model="gpt-4o-mini", concurrency=32)
    with ResponseCache(default_cache_path()) as cache:
        results = complete(config, [ChatRequest(messages, n=3)], cache)
    # results[r][i]: Completion(index, text, finish_reason, usage, cached, error, detail)

Modules: client (config, concurrency, retries), cache (SQLite response cache),
pricing (price table, cost), loopback (a local OpenAI-compatible server for
tests and the offline demo). Nothing here imports openai or aiohttp until a
request is sent.
"""

from kdpipe.teacher.cache import ResponseCache, default_cache_path, request_key
from kdpipe.teacher.client import (
    ChatRequest, Completion, Stats, TeacherConfig, TeacherFatalError, acomplete, complete,
)
from kdpipe.teacher.pricing import Price, resolve_price

__all__ = [
    "ChatRequest", "Completion", "Price", "ResponseCache", "Stats", "TeacherConfig", "TeacherFatalError",
    "acomplete", "complete", "default_cache_path", "resolve_price", "request_key",
]
