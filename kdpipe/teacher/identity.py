"""Which answers share a cache: a kdpipe loopback server's identity.

The cache key leaves the endpoint out so that replicas of one model share
answers. A kdpipe loopback server is not a replica of anything: it answers
from a script under whatever model name it is asked for. It says so in its
`GET /v1/models` listing (field `kdpipe_loopback`: a digest of its script),
and its answers are keyed under that identity, so a run that forgot its real
endpoint never leaves scripted answers behind for the real model.

Only servers on this machine are asked (the loopback never listens
elsewhere), once per run of the client (not remembered: a port is soon
reused by another server); a server that does not answer, or
answers without the field (vLLM, Ollama, ...), is a real endpoint.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

LOOPBACK_FIELD = "kdpipe_loopback"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PROBE_TIMEOUT = 3.0


def is_local(url: str) -> bool:
    return urlsplit(url).hostname in LOCAL_HOSTS


def cache_namespace(base_url: str) -> str | None:
    """The loopback identity of the server at `base_url`; None for a real endpoint."""
    if not is_local(base_url):
        return None
    import http.client  # not urllib.request: a tenth of the start-up of a run, for one GET

    parts = urlsplit(base_url)
    # Straight to the server: a proxy from the environment must not answer for one on this machine.
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = kind(parts.hostname, parts.port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", parts.path.rstrip("/") + "/models")
            response = conn.getresponse()
            listing = json.loads(response.read(1 << 20)) if response.status == 200 else None
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException):  # InvalidURL: a space in the URL
        return None
    value = listing.get(LOOPBACK_FIELD) if isinstance(listing, dict) else None
    return value if isinstance(value, str) and value else None


def endpoint_host(url: str) -> str:
    """host[:port] of a URL, without any user:password@ it carries."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host
