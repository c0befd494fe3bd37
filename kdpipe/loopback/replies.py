"""What the loopback's chat and Batch API endpoints both answer with: JSON replies, token usage and
the bill of what was paid for."""

from __future__ import annotations

import hashlib
import json


def usage(messages: list, texts: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    completion = sum(len(t) // 4 + (1 if t else 0) for t in texts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def bill(teacher, body: dict, choices: int) -> None:
    """Record on the LoopbackTeacher that `choices` answers to this model and these messages were paid for."""
    digest = hashlib.sha256(json.dumps([body.get("model"), body.get("messages")], sort_keys=True)
                            .encode()).hexdigest()[:16]
    teacher.paid[digest] += choices


def json_reply(status: int, obj, headers: dict | None = None):
    return status, headers or {}, json.dumps(obj).encode("utf-8")
