"""A local stand-in for the parts of the Hub API that `--push-to-hub` uses: create a repository,
ask how to upload each file (every file "regular": sent inline in the commit), and commit.

It checks the bearer token the way the Hub does (401 without one, 403 with another) and keeps
each commit's files, so a test can read back exactly what was pushed and the headers it came with.
Not the Hub: no LFS/Xet uploads, no history beyond the list of commits.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Commit:
    repo: str  # "datasets/owner/name" or "models/owner/name"
    message: str
    files: dict[str, bytes]


@dataclass
class StandInHub:
    token: str
    repos: dict[str, dict] = field(default_factory=dict)  # "models/owner/name" -> {"private": bool}
    commits: list[Commit] = field(default_factory=list)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # method, path, headers
    bodies: list[bytes] = field(default_factory=list)
    validated: list[tuple[str, dict]] = field(default_factory=list)  # (repo type, README metadata)
    url: str = ""


def _handler(hub: StandInHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, obj) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            if status >= 400:
                self.send_header("X-Error-Message", obj.get("error", ""))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            hub.bodies.append(raw)
            return raw

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return False
            if auth != f"Bearer {hub.token}":
                self._reply(403, {"error": "You don't have the rights to write to this repository"})
                return False
            return True

        def do_GET(self):  # noqa: N802
            hub.requests.append(("GET", self.path, dict(self.headers)))
            self._reply(404, {"error": f"not in the stand-in: {self.path}"})

        def do_POST(self):  # noqa: N802
            hub.requests.append(("POST", self.path, dict(self.headers)))
            raw = self._body()
            if self.path.startswith("/api/validate-yaml"):  # the card's metadata, checked before the commit
                import yaml

                body = json.loads(raw)
                hub.validated.append((body["repoType"], yaml.safe_load(body["content"].split("---")[1])))
                return self._reply(200, {"warnings": [], "errors": []})
            if not self._authorized():
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:3] == ["api", "repos", "create"]:
                body = json.loads(raw)
                kind = (body.get("type") or "model") + "s"
                repo = f"{kind}/{body.get('organization') or 'user'}/{body['name']}"
                hub.repos.setdefault(repo, {"private": bool(body.get("private")) or body.get("visibility") == "private"})
                return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
            # /api/<kind>s/<owner>/<name>/(preupload|commit)/<revision>
            if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
                repo = "/".join(parts[1:4])
                if repo not in hub.repos:
                    return self._reply(404, {"error": f"Repository not found: {repo}"})
                if parts[4] == "preupload":
                    files = json.loads(raw)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                return self._commit(repo, raw)
            self._reply(404, {"error": f"not in the stand-in: {self.path}"})

        def _commit(self, repo: str, raw: bytes) -> None:
            message, files = "", {}
            for line in raw.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    message = item["value"]["summary"]
                elif item["key"] == "file":
                    value = item["value"]
                    assert value.get("encoding") == "base64", value.keys()
                    files[value["path"]] = base64.b64decode(value["content"])
                else:
                    return self._reply(400, {"error": f"the stand-in takes only inline files, got {item['key']}"})
            hub.commits.append(Commit(repo, message, files))
            oid = f"{len(hub.commits):040x}"
            self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                              "pullRequestUrl": None})

    return Handler


class running_hub:
    """`with running_hub(token) as hub:` a stand-in Hub on 127.0.0.1 (hub.url) for the block."""

    def __init__(self, token: str):
        self.hub = StandInHub(token)

    def __enter__(self) -> StandInHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self.hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
