"""What the loopback's chat and Batch API endpoints both answer with: JSON replies, token usage and
the bill of what was paid for."""

from __future__ import annotations

import hashlib
import json
import time


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


def answered(teacher, body: dict, fault: str | None) -> tuple[list[str], list[str], bool]:
    """The LoopbackTeacher's answers to a chat request, with a truncated or empty fault applied, billed:
    (texts, finish reasons, whether it was an expansion request)."""
    texts, expand = teacher.answer(body)
    finish = ["stop"] * len(texts)
    if fault == "truncated":
        texts, finish = [t[: len(t) // 2] for t in texts], ["length"] * len(texts)
    elif fault == "empty":
        texts = [""] * len(texts)
    bill(teacher, body, len(texts))
    return texts, finish, expand


def chat_completion(completion_id: str, body: dict, texts: list[str], finish: list[str]) -> dict:
    """A chat.completion object, as the OpenAI API returns it."""
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                    for i, (t, f) in enumerate(zip(texts, finish))],
        "usage": usage(body.get("messages") or [], texts),
    }
