"""The prompt format: how a question is put to the student and its answer written back.

`format` writes rows with it and stores it in the rows' `.meta.json`; `train`
checks lengths with it and `eval` asks the student the way it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from kdpipe import answers
from kdpipe.errors import KdpipeError, UsageError

STYLES = ("dss", "cot", "label", "gold", "response", "kd", "socratic")
PROMPT_TASKS = ("label", "rationale", "cot", "answer", "socratic", "subquestion", "subanswer")
SOCRATIC_ROLES = ("one", "two")
# The fields of one in-context demonstration of the pool (kdpipe/demos.py), and their JSON types.
DEMO_FIELDS = {"id": (str,), "task": (str,), "question": (str,), "choices": (list, type(None)), "completions": (dict,)}


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
    # In-context distillation (format --icl-shots, kdpipe/demos.py): each prompt opens with icl_shots
    # demonstrations drawn from this pool of training records by a hash of icl_seed and the ids. The pool
    # lives here so that it goes wherever the prompt format goes (the rows' .meta.json, the run directory).
    icl_shots: int = 0
    icl_seed: int = 0
    demonstrations: list[dict] = field(default_factory=list)
    # Socratic CoT (kdpipe/socratic_roles.py): "one" model asks and answers its own sub-questions, or "two"
    # roles, a question generator (task subquestion) and a solver (task subanswer) asked in turn.
    socratic_roles: str = "one"
    question_prefix: str = "ask: "
    solver_prefix: str = "solve: "

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
        problems += _demo_problems(self)
        if self.socratic_roles not in SOCRATIC_ROLES:
            problems.append(f"--socratic-roles must be one of {', '.join(SOCRATIC_ROLES)}, got {self.socratic_roles!r}")
        elif self.socratic_roles == "two" and self.style != "socratic":
            problems.append("--socratic-roles two goes with --style socratic")
        elif self.socratic_roles == "two" and self.question_prefix.strip() == self.solver_prefix.strip():
            problems.append("the question generator's and the solver's prefixes must differ")
        if problems:
            raise UsageError("; ".join(problems))


def _demo_problems(fmt: PromptFormat) -> list[str]:
    if not isinstance(fmt.icl_shots, int) or isinstance(fmt.icl_shots, bool) or fmt.icl_shots < 0:
        return [f"--icl-shots must be a whole number >= 0, got {fmt.icl_shots!r}"]
    if not isinstance(fmt.demonstrations, list):
        return ["the demonstrations must be a list"]
    if fmt.icl_shots and not fmt.demonstrations:
        return [f"{fmt.icl_shots} in-context demonstrations asked for, but the pool of demonstrations is empty"]
    for i, d in enumerate(fmt.demonstrations):
        if not isinstance(d, dict) or set(d) != set(DEMO_FIELDS):
            return [f"demonstration {i} must be an object with the fields {', '.join(DEMO_FIELDS)}"]
        wrong = [k for k, types in DEMO_FIELDS.items() if not isinstance(d[k], types)]
        if wrong or not all(isinstance(v, str) for v in d["completions"].values()):
            return [f"demonstration {i}: field {(wrong or ['completions'])[0]!r} has the wrong type"]
    return []


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
    """The prompt text for a task: "label", "rationale" (dss), "cot", "answer" or "socratic".

    In chat form it is the user message; in plain-text form the whole prompt, ending with
    `plain_prompt_end`. `format` writes training rows with it and `eval` asks with it (after
    any in-context demonstrations: kdpipe/demos.py).
    """
    text = question_text(fmt, question, choices, task)
    return text if fmt.chat else text + fmt.plain_prompt_end


def question_text(fmt: PromptFormat, question: str, choices: list[str] | None, task: str) -> str:
    """A question as a task puts it (its prefix, the options), without the plain-text prompt end."""
    if task not in PROMPT_TASKS:
        raise ValueError(f"task must be one of {', '.join(PROMPT_TASKS)}, got {task!r}")
    prefix = {"label": fmt.label_prefix, "rationale": fmt.rationale_prefix, "subquestion": fmt.question_prefix,
              "subanswer": fmt.solver_prefix}.get(task, "")
    return prefix + _question_block(fmt, question, choices)


def inference_task(fmt: PromptFormat) -> str:
    """The task a trained student is asked at inference: dss "label", cot and kd "cot", socratic
    "socratic", else "answer"."""
    return {"dss": "label", "cot": "cot", "kd": "cot", "socratic": "socratic"}.get(fmt.style, "answer")


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
    """The raw answer of the first answer sentence of `fmt` in a completion (see
    `answers_in_sentence`), or None when the completion has none."""
    return next(answers_in_sentence(fmt, text), None)


def answers_in_sentence(fmt: PromptFormat, text: str):
    """The raw answers a completion states in `fmt`'s answer sentence, first to last: the
    text where `{answer}` stands after each occurrence of the sentence's lead-in, up to the
    sentence's end. A sentence that starts with `{answer}` has no lead-in to find: nothing
    (the caller falls back to the generic markers).
    """
    before, _, after = fmt.answer_sentence.partition("{answer}")
    lead, tail = _literal(before).strip(), _literal(after).strip()
    if not lead:
        return
    at = text.find(lead)
    while at >= 0:
        rest = text[at + len(lead):].split("\n", 1)[0].strip()
        if tail:
            # The first tail that ends the sentence ("2.5." ends at the second period).
            end = next((i for i in range(len(rest)) if rest.startswith(tail, i)
                        and (i + len(tail) == len(rest) or rest[i + len(tail)].isspace())), None)
            rest = rest[:end].strip() if end is not None else rest
        if rest:
            yield rest
        at = text.find(lead, at + len(lead))


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
