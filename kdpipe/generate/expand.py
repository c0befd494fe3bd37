"""`generate --mode expand`: the teacher writes new questions in the style of the seeds (Self-Instruct /
LaMini), or, from `kdpipe probe`'s hard questions, new ones of the same kind and difficulty (Lion)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter

from kdpipe import answers
from kdpipe.errors import UsageError
from kdpipe.keys import question_key
from kdpipe.records import Record
from kdpipe.teacher.budget import NOT_SENT
from kdpipe.teacher.client import ChatRequest, TeacherConfig, complete

NEW_PER_REQUEST = 8  # questions asked for in one expansion request
MAX_EMPTY_ROUNDS = 3  # expansion rounds in a row without a new question before giving up


_LIST_ITEM = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•]|Q\d*[.:])\s+(.*\S)\s*$")
_QUESTION_PREFIX = re.compile(r"^(?:\*\*)?(?:new\s+)?question\s*\d*\s*[:.]\s*(?:\*\*)?\s*", re.I)


def parse_question_list(text: str | None) -> list[str]:
    """New questions from a numbered list, a bullet list or a JSON array (of strings or
    of objects with a "question" field); an item may run over several lines."""
    if not text or not text.strip():
        return []
    s = answers.unfenced(text)
    if s.startswith("["):
        try:
            items = json.loads(s)
        except ValueError:
            items = None
        if isinstance(items, list):
            out = [i.get("question") if isinstance(i, dict) else i for i in items]
            return [_clean_question(q) for q in out if isinstance(q, str) and _clean_question(q)]
    questions: list[list[str]] = []
    open_item = False  # a blank line closes an item: what follows it is commentary, not question
    for line in s.splitlines():
        m = _LIST_ITEM.match(line)
        if m:
            questions.append([m.group(1)])
            open_item = True
        elif not line.strip():
            open_item = False
        elif open_item:
            questions[-1].append(line.strip())
    return [q for q in (_clean_question("\n".join(parts)) for parts in questions) if q]


def _clean_question(q: str) -> str:
    return _QUESTION_PREFIX.sub("", q.strip()).strip().strip("*").strip()


def expand_prompt_name(seeds) -> str:
    """Instruction seeds get the Self-Instruct prompt (new tasks, with inputs where needed); the questions
    `kdpipe probe` found hard get expand_hard.txt (new questions of that kind and difficulty); others expand.txt."""
    if seeds and all(r.task == "instruction" for r in seeds):
        return "expand_instruction.txt"
    return "expand_hard.txt" if probed(seeds) else "expand.txt"


def probed(seeds) -> bool:
    """Seeds written by `kdpipe probe` (each carries the student's answer and whether it was wrong)."""
    return bool(seeds) and all("probe" in r.provenance for r in seeds)


def render_expand_prompt(template: str, examples: list[str], num: int) -> str:
    listing = "\n".join(f"{i}. {q}" for i, q in enumerate(examples, 1))
    return template.replace("{k}", str(len(examples))).replace("{examples}", listing).replace("{num}", str(num))


def expand(seeds, template, config: TeacherConfig, opts, cache, stats, on_progress,
           send=complete):
    """New seed records written by the teacher from sampled seeds (`opts`: GenerateOptions); returns
    (records, counts)."""
    name, digest, text = template
    tasks = sorted({r.task for r in seeds})
    if "choice" in tasks:
        raise UsageError("--mode expand writes numeric and text questions; multiple-choice seeds are not supported")
    pools = {t: [r for r in seeds if r.task == t] for t in tasks}
    seen = {question_key(r.question) for r in seeds}
    new: list[Record] = []
    counts: Counter = Counter()
    teacher = {**config.provenance(), "prompt": name, "prompt_digest": digest}
    hard_seeds = probed(seeds)
    loop = {} if opts.round is None else {"round": opts.round}
    j, empty_rounds = 0, 0
    while len(new) < opts.num_new and empty_rounds < MAX_EMPTY_ROUNDS:
        missing = opts.num_new - len(new)
        batch = -(-missing // NEW_PER_REQUEST)  # duplicates and failures are made up in the next round
        plans = [(_hard_plan(seeds, pools, opts, j + b) if hard_seeds else _expansion_plan(pools, tasks, opts, j + b))
                 for b in range(batch)]
        # Request j is sample j of the expansion: two requests that happen to show the same seeds
        # are still two draws from the teacher, cached apart.
        requests = [ChatRequest([{"role": "user", "content": render_expand_prompt(
                        text, [r.question for r in chosen], NEW_PER_REQUEST)}], n=1, first_sample=j + b)
                    for b, (_, chosen) in enumerate(plans)]
        results = send(config, requests, cache, stats, on_progress)
        before = len(new)
        # Requests are read in their own order, not in the order they finished: same output every run.
        counts["requests"] += len(plans)
        for (task, chosen), (c,) in zip(plans, results):
            if c.error is not None:
                counts[c.error if c.error in (NOT_SENT, "malformed") else "transport"] += 1
                continue
            proposed = parse_question_list(c.text)
            if c.finish_reason == "length" and proposed:
                # Cut off by --max-tokens: the last item is the one being written ("... How").
                proposed.pop()
                counts["truncated"] += 1
            for q in proposed:
                counts["proposed"] += 1
                key = question_key(q)
                if not key or key in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(key)
                hard = [r.id for r in chosen if r.provenance.get("probe", {}).get("hard")]
                new.append(Record(id=_new_id(task, q), question=q, task=task, provenance={
                    "source": "expand", "inspired_by": [r.id for r in chosen], **loop,
                    **({"inspired_by_hard": hard} if hard_seeds else {}), "teacher": teacher}))
                if len(new) == opts.num_new:
                    break
            if len(new) == opts.num_new:
                break
        j += batch
        empty_rounds = empty_rounds + 1 if len(new) == before else 0
        if counts[NOT_SENT]:  # the spending cap was reached (or a dry run): no further rounds
            break
    counts["written"] = len(new)
    counts["short_of_target"] = opts.num_new - len(new)
    return new, dict(counts)


def _expansion_plan(pools, tasks, opts, j: int) -> tuple[str, list[Record]]:
    """The task and seed examples of expansion request j: a pure function of (seed, j)."""
    task = tasks[j % len(tasks)]
    rng = random.Random(f"{opts.seed or 0}:{j}")
    pool = pools[task]
    return task, rng.sample(pool, min(opts.seeds_per_prompt, len(pool)))


def _hard_plan(seeds, pools, opts, j: int) -> tuple[str, list[Record]]:
    """Expansion request j from probed seeds: one seed drawn from them all decides the task, so the
    new questions follow the kinds the student failed (round robin over tasks would not), and the
    other examples come from its task. A pure function of (seed, j)."""
    rng = random.Random(f"hard:{opts.seed or 0}:{j}")
    anchor = rng.choice(seeds)
    others = [r for r in pools[anchor.task] if r is not anchor]
    return anchor.task, [anchor, *rng.sample(others, min(opts.seeds_per_prompt - 1, len(others)))]


def _new_id(task: str, question: str) -> str:
    return "x-" + hashlib.sha256(f"{task}\0{question}".encode("utf-8")).hexdigest()[:16]
