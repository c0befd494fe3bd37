"""The label-mode teacher prompts: one template per task, rendered per record.

`generate --mode label` sends these requests and `eval --teacher` asks them again,
so both hit the same cache entries.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from kdpipe import answers
from kdpipe.errors import InputError
from kdpipe.records import Record, text_digest
from kdpipe.teacher.client import ChatRequest

# The default prompts ship inside the package (kdpipe/prompts/, package data); the
# repository's top-level prompts/ is a symlink to them for the Makefile and users.
PROMPTS_DIR = resources.files("kdpipe") / "prompts"


def read_prompt(path) -> tuple[str, str, str]:
    """(file name, digest, text) of a prompt template: a path, or a packaged default."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(path, f"cannot read the prompt template: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise InputError(path, "the prompt template is not valid UTF-8", line) from None
    return path.name, text_digest(text), text


def label_prompts(records: list[Record], prompt: Path | None) -> dict[str, tuple[str, str, str]]:
    """Task -> (file name, digest, text) of its prompt: --prompt for every task, else prompts/<task>.txt."""
    tasks = sorted({r.task for r in records})
    return {t: read_prompt(prompt or PROMPTS_DIR / f"{t}.txt") for t in tasks}


def label_requests(records: list[Record], prompts: dict[str, tuple[str, str, str]],
                   samples: int) -> list[ChatRequest]:
    """The label-mode teacher request of each record (`samples` samples): what generate sends
    and `eval --teacher` asks again, so both share the response cache."""
    return [LabelRequest(prompts[r.task][2], r, samples) for r in records]


class LabelRequest(ChatRequest):
    """A label-mode request whose prompt is rendered when its messages are first read: the client
    reads them as it sends, so rendering 10,000 prompts does not hold back the first request."""

    def __init__(self, template: str, record: Record, samples: int):
        super().__init__(None, samples, id=record.id)
        self._template, self._record = template, record

    @property
    def messages(self) -> list[dict[str, str]]:
        if self._messages is None:
            self._messages = [{"role": "user", "content": render_label_prompt(self._template, self._record)}]
        return self._messages

    @messages.setter
    def messages(self, value) -> None:  # the dataclass __init__ sets it
        self._messages = value


def render_label_prompt(template: str, record: Record) -> str:
    """Fill {question} and {choices} ("(a) option" lines); a prompt without {choices} gets
    the options after the question, so a choice question never loses its options."""
    options = "\n".join(f"({answers.LETTERS[i]}) {c}" for i, c in enumerate(record.choices or []))
    question = record.question
    if options and "{choices}" not in template:
        question = f"{question}\nAnswer Choices:\n{options}"
    return template.replace("{choices}", options).replace("{question}", question)
