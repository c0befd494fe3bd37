"""How a chat request travels: the official openai client, or aiohttp speaking the same protocol.

Both turn every failure into one of three outcomes the client acts on:
Retryable (429, 5xx, timeouts, connection errors, malformed bodies; with the
server's Retry-After when it sent one), Rejected (this request is bad: 400,
422), TeacherFatalError (the run is bad: 401/403 key, 404 model).

`send(body, seen=None)`: given a dict `seen`, the transport puts the response's rate-limit
headers in it (LIMIT_HEADERS, lower-case names; on success and on an error status alike), for
the rate limiter (ratelimit.py); without it, no header is looked at.
"""

from __future__ import annotations

import asyncio
import json

from kdpipe.errors import KdpipeError
from kdpipe.outputs import scrub


class TeacherFatalError(KdpipeError):
    """The endpoint refused the run as a whole (bad key, no access, unknown model)."""


# What providers announce about their limits (OpenAI's names; vLLM, DeepSeek, Groq and others use the same).
LIMIT_HEADERS = tuple(f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset")
                      for kind in ("requests", "tokens")) + ("retry-after",)


def limit_headers(headers, seen: dict | None) -> None:
    """Copy the LIMIT_HEADERS among `headers` (any case-insensitive mapping) into `seen`."""
    if seen is not None and headers is not None:
        for name in LIMIT_HEADERS:
            value = headers.get(name)
            if value is not None:
                seen[name] = value


class Retryable(Exception):
    def __init__(self, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.retry_after = retry_after


class Rejected(Exception):
    """The server refused this one request (400, 422): retrying will not help."""


def classify_status(status: int, detail: str, retry_after: str | None, model: str, url: str, key: str = ""):
    """Raise what an HTTP error status means for the run. The server's text is scrubbed of
    secrets, the API key itself included: some servers echo the request's headers."""
    detail = scrub_secret(detail, key)
    if status in (401, 403):
        raise TeacherFatalError(f"{url}: the API key was refused (HTTP {status}): {detail}")
    if status == 404:
        raise TeacherFatalError(f"{url}: model {model!r} or endpoint not found (HTTP 404): {detail}")
    if status in (408, 409, 429) or status >= 500:
        raise Retryable(f"HTTP {status}: {detail}", _seconds(retry_after))
    raise Rejected(f"HTTP {status}: {detail}")


def scrub_secret(text: str, key: str = "") -> str:
    """`text` with secret-looking values and the key itself masked."""
    text = scrub(text)
    return text.replace(key, "***") if len(key) >= 6 else text


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def make_transport(config):
    """The transport of this module a TeacherConfig names (openai, aiohttp), for its one endpoint;
    `send(body) -> dict` raises Retryable, Rejected or TeacherFatalError. sender.make_transport
    chooses among all three (asyncio's lives in transport_asyncio.py, which imports this module)."""
    if config.transport == "openai":
        return _OpenAITransport(config)
    if config.transport == "aiohttp":
        return _AiohttpTransport(config)
    raise ValueError(f"not a transport of transport.py: {config.transport!r}")


class _OpenAITransport:
    """The official client, with its own retries off: ours also cover malformed bodies."""

    def __init__(self, config):
        import openai

        self._openai = openai
        self._url = config.resolved_base_url()
        self._model = config.model
        self._timeout_s = config.timeout
        self._key = config.api_key()
        self._client = openai.AsyncOpenAI(
            base_url=self._url, api_key=config.api_key(), max_retries=0, timeout=config.timeout,
            http_client=openai.DefaultAioHttpClient(
                timeout=config.timeout,
                limits=_connection_limits(openai, config.concurrency)),
        )

    async def send(self, body: dict, seen: dict | None = None) -> dict:
        openai = self._openai
        try:
            # The raw response: our own JSON parse is cheaper than building pydantic models,
            # and a malformed body comes out as one error we retry.
            raw = await self._client.chat.completions.with_raw_response.create(**body)
        except openai.APIStatusError as e:
            limit_headers(e.response.headers, seen)
            classify_status(e.status_code, short(e.message), e.response.headers.get("retry-after"),
                      self._model, self._url, self._key)
        except openai.APITimeoutError as e:
            # The SDK's aiohttp adapter reports a refused connection as a connect timeout.
            cause = _refused_cause(e)
            if cause is not None:
                raise Retryable(f"connection error: {short(str(cause))}") from None
            raise Retryable(f"no response within {self._timeout_s:g} s") from None
        except openai.APIConnectionError as e:
            raise Retryable(f"connection error: {short(str(e.__cause__ or e))}") from None
        limit_headers(raw.headers, seen)
        return json_object(raw.content)

    async def close(self) -> None:
        await self._client.close()


def _refused_cause(error: BaseException) -> BaseException | None:
    """The OSError (connection refused, unreachable, DNS) behind `error`, if it is not a timeout."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and not isinstance(error, TimeoutError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _connection_limits(openai, concurrency: int):
    # The Limits class of the HTTP library this openai release is built on (httpx2 in 3.x),
    # taken from the SDK itself rather than imported by a name that changes between releases.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)
    return limits(max_connections=concurrency, max_keepalive_connections=concurrency)


class _AiohttpTransport:
    """POST /chat/completions with aiohttp directly: the same protocol, a fraction of the CPU."""

    def __init__(self, config):
        import aiohttp

        self._aiohttp = aiohttp
        self._url = config.resolved_base_url()
        self._endpoint = self._url + "/chat/completions"
        self._model = config.model
        self._timeout_s = config.timeout
        self._key = config.api_key()
        self._headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.concurrency), timeout=self._timeout)

    async def send(self, body: dict, seen: dict | None = None) -> dict:
        aiohttp = self._aiohttp
        try:
            # Bytes, not str: aiohttp then sends them as they are, without a text payload's encoding step.
            data = json.dumps(body).encode()
            async with self._session.post(self._endpoint, data=data, headers=self._headers) as resp:
                raw = await resp.read()
                limit_headers(resp.headers, seen)
                if resp.status >= 400:
                    classify_status(resp.status, error_message(raw),
                              resp.headers.get("Retry-After"), self._model, self._url, self._key)
        except asyncio.TimeoutError:
            raise Retryable(f"no response within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise Retryable(f"connection error: {short(str(e))}") from None
        return json_object(raw)

    async def close(self) -> None:
        await self._session.close()


def json_object(raw: bytes) -> dict:
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise Retryable(f"malformed response body: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("choices", []), list):
        raise Retryable("malformed response body: not a chat completion object")
    return obj


def error_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body, else the body itself, shortened."""
    try:
        obj = json.loads(raw)
        return short(str(obj["error"]["message"]))
    except (ValueError, KeyError, TypeError):
        return short(raw.decode("utf-8", "replace"))


def short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
