"""What the loopback's chat and Batch API endpoints both answer with: JSON replies, token usage and
the bill of what was paid for."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time

# What prompts/rationalize.txt and prompts/counterfactual.txt ask, as the loopback recognises them.
_HINT = re.compile(r"Hint: the correct answer is ([^\n]+?)\.?[ \t]*\nA:\s*$")
_COUNTERFACTUAL = re.compile(r"\bso that its answer changes\b", re.I)
# A Socratic label request (prompts/socratic.txt) asks for sub-questions.
SOCRATIC_REQUEST = re.compile(r"\bsub-?questions?\b", re.I)
_FINAL = re.compile(r"(?:\bso\s+)?\bthe answer is\b|^\s*answer\s*:", re.I | re.M)
_EQUATION = re.compile(r"(\d[\d.,]*(?:\s*[-+x*/×÷]\s*\d[\d.,]*)+)\s*=")
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
_ALTERNATIVES = [" the", " a", " is", " of", " and", " to", " 1", " 2", " 3", " 4", " 5", " 6", " 7", " 8",
                 " 9", " 0", ".", ",", " answer", " so", " it", " we", " x", " y"]


def usage(messages: list, texts: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    completion = sum(len(t) // 4 + (1 if t else 0) for t in texts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def bill(teacher, body: dict, choices: int) -> None:
    """Record on the LoopbackTeacher that `choices` answers to this model and these messages were paid for."""
    messages = body.get("messages")
    try:  # canonical as JSON with sorted keys would be, at a fraction of its cost
        canonical = repr((body.get("model"), [sorted(m.items()) for m in messages]))
    except (AttributeError, TypeError):  # not a list of objects
        canonical = repr((body.get("model"), messages))
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    teacher.paid[digest] += choices


def asked_for(user: str, lowered: str | None = None) -> str | None:
    """"rationalize" or "counterfactual" for those requests, None for a label or expansion request.
    `lowered`: user.lower(), when the caller has it."""
    # A substring test first: a regex search of a few-shot prompt costs tens of microseconds, and
    # the server shares the benchmark's two cores with the client.
    if "Hint: the correct answer is" in user and _HINT.search(user):
        return "rationalize"
    lowered = user.lower() if lowered is None else lowered
    return "counterfactual" if "so that its answer changes" in lowered and _COUNTERFACTUAL.search(user) else None


def derived_reply(kind: str, line, user: str, sample: int) -> str | None:
    """Sample `sample` of the reply to a rationalization or counterfactual request about script line
    `line` (None: a question not in the script): its scripted completions, else for rationalization
    a short rationale reaching the hint (None: no answer)."""
    scripted = getattr(line, kind, None) if line is not None else None
    if scripted:
        return scripted[sample % len(scripted)]
    if kind == "rationalize":
        hint = _HINT.search(user).group(1).strip()
        return (f"Working through the quantities the question gives, step by step, leads to {hint}. "
                f"The answer is {hint}.")
    return None


def json_reply(status: int, obj, headers: dict | None = None):
    return status, headers or {}, json.dumps(obj).encode("utf-8")


def answered(teacher, body: dict, fault: str | None) -> tuple[list[str], list[str], bool]:
    """The LoopbackTeacher's answers to a chat request, with a truncated or empty fault applied, billed:
    (texts, finish reasons, whether it was an expansion request)."""
    texts, expand = teacher.answer(body)
    # A generated text says whether it stopped or ran out of tokens (loopback/model.py); a scripted one stops.
    finish = [getattr(t, "finish", "stop") for t in texts]
    if fault == "truncated":
        texts, finish = [t[: len(t) // 2] for t in texts], ["length"] * len(texts)
    elif fault == "empty":
        texts = [""] * len(texts)
    bill(teacher, body, len(texts))
    return texts, finish, expand


def socratic_reply(text: str) -> str:
    """A scripted chain of thought as the decomposition a Socratic request asks for: each sentence before the
    answer becomes the answer of a sub-question ("What is 5 + 2?" for a sentence with that sum), then the
    scripted answer and whatever followed it. A text already decomposed, or without an answer to end on,
    is answered as scripted (a malformed decomposition)."""
    from kdpipe.socratic import has_steps

    final = _FINAL.search(text)
    if has_steps(text) or final is None:
        return text
    sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text[: final.start()].strip()) if x.strip()]
    if not sentences:
        return text
    lines = []
    for i, sentence in enumerate(sentences, 1):
        sum_ = _EQUATION.search(sentence)
        asked = f"What is {sum_.group(1)}?" if sum_ else ("What does the problem tell us?" if i == 1
                                                          else "What follows from that?")
        lines += [f"Q{i}: {asked}", f"A{i}: {sentence}"]
    return "\n".join(lines) + "\n" + text[final.start():].lstrip()


def fake_logprobs(text: str, top: int) -> dict:
    """A choice's `logprobs` for a scripted text: the text cut into word-sized tokens, each with a
    distribution drawn from a hash of the token and its place (the same text gets the same numbers),
    the token itself the most likely; the alternatives leave some mass to tokens not listed."""
    content = []
    for pos, token in enumerate(_TOKEN.findall(text)):
        rng = random.Random(hashlib.sha256(f"{pos}\0{token}".encode()).digest())
        p = rng.uniform(0.5, 0.99)
        alts = [a for a in _ALTERNATIVES if a != token]
        rng.shuffle(alts)
        listed = [(token, p)] + [(a, (1 - p) * 0.5 ** (j + 1)) for j, a in enumerate(alts[: max(top - 1, 0)])]
        content.append({**_entry(token, p), "top_logprobs": [_entry(t, q) for t, q in listed[:top]]})
    return {"content": content}


def _logprobs(text: str, top: int) -> dict:
    """A text's own logprobs (a local model's answer carries them), cut to `top` alternatives, else fake ones."""
    own = getattr(text, "logprobs", None)
    if own is None:
        return fake_logprobs(text, top)
    return {"content": [{**item, "top_logprobs": item["top_logprobs"][:top]} for item in own["content"]]}


def _entry(token: str, p: float) -> dict:
    return {"token": token, "logprob": math.log(p), "bytes": list(token.encode("utf-8"))}


def chat_completion(completion_id: str, body: dict, texts: list[str], finish: list[str],
                    logprobs: bool = True) -> dict:
    """A chat.completion object, as the OpenAI API returns it; with the tokens' logprobs when the
    body asks for them and `logprobs` (False: a server that ignores the request)."""
    top = int(body.get("top_logprobs") or 0) if body.get("logprobs") and logprobs else None
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                     **({} if top is None else {"logprobs": _logprobs(t, top)})}
                    for i, (t, f) in enumerate(zip(texts, finish))],
        "usage": usage(body.get("messages") or [], texts),
    }
