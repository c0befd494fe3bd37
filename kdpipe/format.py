"""`kdpipe format`: filtered records -> prompt/completion rows for TRL's SFTTrainer.

Styles (one example per kept teacher sample, so several samples of a
question give several examples, as in Fine-tune-CoT):

    dss    Distilling step-by-step: two rows per sample, task "label"
           ("predict: <question>" -> answer) and task "rationale"
           ("explain: <question>" -> rationale); `train` weights the
           rationale rows, `eval` asks only the label task.
    cot    one row, task "cot": question -> rationale + "The answer is X."
    label  one row, task "answer": question -> the teacher's answer only
    gold   one row per record, task "answer": question -> the gold answer
           (needs no teacher: works on seed records)

Every row: {"id", "sample", "task", "split", "prompt", "completion"}; prompt
and completion are chat messages by default, plain strings with --no-chat.
The split is decided per record id (all rows of one question land on the same
side), the rows are shuffled with --seed, and the prompt format is stored in
`<out>.meta.json` under "prompt_format" so that `eval` asks the student the
way it was trained (`render_prompt` with `PromptFormat.from_dict`).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kdpipe import answers
from kdpipe.errors import KdpipeError, UsageError
from kdpipe.records import Record, check_outputs_differ, read_records, write_meta, write_records

STYLES = ("dss", "cot", "label", "gold")
PROMPT_TASKS = ("label", "rationale", "cot", "answer")


@dataclass
class PromptFormat:
    """How questions are put to the student and answers written back; stored with the data."""

    style: str = "dss"
    chat: bool = True
    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    choices_header: str = "Answer Choices:"
    choice_template: str = "({letter}) {text}"
    answer_sentence: str = "The answer is {answer}."
    # Plain-text (--no-chat) prompts end with this, so that the completion starts a new
    # token: TRL tokenizes prompt + completion as one string, and a prompt running
    # straight into its answer ("Compute 12 + 5" + "17") merges tokens across the
    # boundary, training on a context eval never asks with. Chat prompts end with the
    # chat template's own generation prompt instead.
    plain_prompt_end: str = "\n"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "PromptFormat":
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown prompt format field(s) {', '.join(sorted(unknown))}")
        fmt = cls(**obj)
        fmt.validate()
        return fmt

    def validate(self) -> None:
        problems = []
        if self.style not in STYLES:
            problems.append(f"--style must be one of {', '.join(STYLES)}, got {self.style!r}")
        problems += _template_problems("the answer sentence", self.answer_sentence, ("answer",))
        problems += _template_problems("the choice template", self.choice_template, ("letter", "text"))
        if not self.plain_prompt_end or not self.plain_prompt_end[-1].isspace():
            problems.append("the plain-text prompt end must end in whitespace (a token boundary)")
        if self.style == "dss" and self.label_prefix.strip() == self.rationale_prefix.strip():
            problems.append("the label and rationale prefixes must differ")
        if problems:
            raise UsageError("; ".join(problems))


def _template_problems(what: str, template: str, names: tuple[str, ...]) -> list[str]:
    """Problems of a str.format template that must hold exactly the fields `names`."""
    import string

    wanted = " and ".join("{" + n + "}" for n in names)
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
        template.format(**{n: "x" for n in names})
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        return [f"{what} {template!r} is not a valid template ({type(e).__name__}: {e}); it must contain "
                f"{wanted}, and literal braces are written {{{{ and }}}}"]
    # Each field plain ({answer}, not {answer:>5}): eval finds the answer by the text around it.
    if not set(names) <= used or not all("{" + n + "}" in template for n in names):
        return [f"{what} must contain {wanted}"]
    return []


def _question_block(fmt: PromptFormat, question: str, choices: list[str] | None) -> str:
    if not choices:
        return question.strip()
    options = "\n".join(fmt.choice_template.format(letter=answers.LETTERS[i], text=c)
                        for i, c in enumerate(choices))
    return f"{question.strip()}\n{fmt.choices_header}\n{options}"


def render_prompt(fmt: PromptFormat, question: str, choices: list[str] | None, task: str) -> str:
    """The prompt text for a task: "label", "rationale" (dss), "cot" or "answer".

    In chat form it is the user message; in plain-text form the whole prompt, ending with
    `plain_prompt_end`. `format` writes training rows with it and `eval` asks with it.
    """
    if task not in PROMPT_TASKS:
        raise ValueError(f"task must be one of {', '.join(PROMPT_TASKS)}, got {task!r}")
    prefix = {"label": fmt.label_prefix, "rationale": fmt.rationale_prefix}.get(task, "")
    text = prefix + _question_block(fmt, question, choices)
    return text if fmt.chat else text + fmt.plain_prompt_end


def inference_task(fmt: PromptFormat) -> str:
    """The task a trained student is asked at inference: dss "label", cot "cot", else "answer"."""
    return {"dss": "label", "cot": "cot"}.get(fmt.style, "answer")


def render_answer(fmt: PromptFormat, answer: str, choices: list[str] | None = None) -> str:
    """An answer as the student writes it: "(c) option text" for choices, else the canonical answer.

    `answers.canonical_answer` reads it back to the same canonical answer.
    """
    if choices:
        i = answers.match_choice(answer, choices)
        if i is not None:
            return fmt.choice_template.format(letter=answers.LETTERS[i], text=choices[i])
    return answer


def render_completion(fmt: PromptFormat, task: str, answer: str, choices: list[str] | None,
                      rationale: str | None = None) -> str:
    """The completion text for a task: the answer, the rationale, or rationale + answer sentence."""
    if task == "rationale":
        return rationale.strip()
    shown = render_answer(fmt, answer, choices)
    if task == "cot":
        return f"{rationale.strip()} {fmt.answer_sentence.format(answer=shown)}"
    return shown


def answer_in_sentence(fmt: PromptFormat, text: str) -> str | None:
    """The raw answer a completion states in `fmt`'s answer sentence (the text where
    `{answer}` stands, after the last occurrence of the sentence's lead-in), or None
    when the completion has no such sentence. A sentence that starts with `{answer}`
    has no lead-in to find: None (the caller falls back to the generic markers).
    """
    before, _, after = fmt.answer_sentence.partition("{answer}")
    lead, tail = _literal(before).strip(), _literal(after).strip()
    at = text.rfind(lead) if lead else -1
    if at < 0:
        return None
    rest = text[at + len(lead):].strip().split("\n", 1)[0].strip()
    if tail and rest.endswith(tail):
        rest = rest[: -len(tail)].strip()
    return rest or None


def _literal(template_part: str) -> str:
    return template_part.replace("{{", "{").replace("}}", "}")


def load_prompt_format(obj: object, where: str) -> PromptFormat:
    """A stored prompt format (from `<sft>.meta.json` or a run's prompt_format.json), checked;
    a KdpipeError naming `where` when it is not one."""
    if not isinstance(obj, dict):
        raise KdpipeError(f"{where}: the prompt format must be a JSON object, got {type(obj).__name__}")
    try:
        return PromptFormat.from_dict(obj)
    except (ValueError, TypeError, UsageError) as e:
        raise KdpipeError(f"{where}: the stored prompt format is not valid: {e}") from None


# ------------------------------------------------------------------ the stage


@dataclass
class FormatOptions:
    style: str = "dss"
    chat: bool = True
    val_frac: float = 0.1
    seed: int = 0
    label_prefix: str = PromptFormat.label_prefix
    rationale_prefix: str = PromptFormat.rationale_prefix
    answer_sentence: str = PromptFormat.answer_sentence

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(style=self.style, chat=self.chat, label_prefix=self.label_prefix,
                            rationale_prefix=self.rationale_prefix, answer_sentence=self.answer_sentence)

    def validate(self) -> None:
        problems = []
        if not (0.0 <= self.val_frac < 1.0):
            problems.append(f"--val-frac must be in [0, 1), got {self.val_frac}")
        try:
            self.prompt_format().validate()
        except UsageError as e:
            problems.append(str(e))
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class FormatResult:
    records: int
    rows: int
    train: int
    val: int
    skipped: Counter


def val_ids(ids: list[str], val_frac: float, seed: int) -> set[str]:
    """round(n * val_frac) record ids, chosen by a hash of seed and id (stable, order-free)."""
    n_val = round(len(ids) * val_frac)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode("utf-8")).hexdigest())
    return set(ranked[:n_val])


def examples_of(rec: Record, fmt: PromptFormat, skipped: Counter) -> list[tuple[int | None, str, str, str]]:
    """(sample index, task, prompt text, completion text) for one record."""
    q, ch = rec.question, rec.choices
    if fmt.style == "gold":
        if rec.gold is None:
            skipped["no gold answer"] += 1
            return []
        return [(None, "answer", render_prompt(fmt, q, ch, "answer"), render_answer(fmt, rec.gold, ch))]
    rows = []
    usable = [s for s in rec.samples if s.ok and s.reason is None]
    if len(usable) < len(rec.samples):
        skipped["sample not usable (error or filtered out)"] += len(rec.samples) - len(usable)
    if not rec.samples:
        skipped["record without teacher samples"] += 1
    for s in usable:
        if fmt.style in ("dss", "cot") and not (s.rationale and s.rationale.strip()):
            skipped["sample without rationale"] += 1
            continue
        if fmt.style == "dss":
            rows.append((s.index, "label", render_prompt(fmt, q, ch, "label"), render_answer(fmt, s.answer, ch)))
            rows.append((s.index, "rationale", render_prompt(fmt, q, ch, "rationale"),
                         render_completion(fmt, "rationale", s.answer, ch, s.rationale)))
        elif fmt.style == "cot":
            rows.append((s.index, "cot", render_prompt(fmt, q, ch, "cot"),
                         render_completion(fmt, "cot", s.answer, ch, s.rationale)))
        else:
            rows.append((s.index, "answer", render_prompt(fmt, q, ch, "answer"), render_answer(fmt, s.answer, ch)))
    return rows


def run_format(inp: str | Path, out: str | Path, opts: FormatOptions | None = None) -> FormatResult:
    opts = opts or FormatOptions()
    opts.validate()
    inp, out = Path(inp), Path(out)
    check_outputs_differ([inp], [out])
    started = time.time()
    fmt = opts.prompt_format()
    records = list(read_records(inp))
    held = val_ids([r.id for r in records], opts.val_frac, opts.seed)
    skipped: Counter = Counter()
    rows = []
    for rec in records:
        split = "val" if rec.id in held else "train"
        for sample, task, prompt, completion in examples_of(rec, fmt, skipped):
            if opts.chat:
                prompt = [{"role": "user", "content": prompt}]
                completion = [{"role": "assistant", "content": completion}]
            rows.append({"id": rec.id, "sample": sample, "task": task, "split": split,
                         "prompt": prompt, "completion": completion})
    if not rows:
        why = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "no records"
        raise KdpipeError(f"{inp}: no training examples for style {opts.style} ({why})")
    random.Random(opts.seed).shuffle(rows)
    write_records(out, rows)
    counts = {"records": len(records), "rows": len(rows), "tasks": dict(Counter(r["task"] for r in rows)),
              "train": sum(r["split"] == "train" for r in rows), "val": sum(r["split"] == "val" for r in rows),
              "skipped": dict(skipped)}
    write_meta(out, stage="format", params=asdict(opts), inputs=[inp], counts=counts, started=started,
               extra={"prompt_format": fmt.to_dict()})
    return FormatResult(records=len(records), rows=len(rows), train=counts["train"], val=counts["val"],
                        skipped=skipped)

