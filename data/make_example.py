"""Write the bundled example task: one-step addition and subtraction word problems with small numbers.

    python data/make_example.py

writes data/example/questions.jsonl (questions with gold answers: the seed
source of `make demo`) and data/example/teacher.jsonl (the scripted teacher:
for every question, two step-by-step completions in the shape real teachers
produce, plus a pool of further questions the teacher proposes when asked to
expand). Deterministic: the same files every time.

The task is sized for a student trained from scratch on a CPU in minutes:
single-digit operands and one operation per question (add, take away,
difference), so the arithmetic is a small table a tiny transformer can learn,
while names, objects and phrasings vary enough that a held-out question is
never one the student saw. The teacher's faults are the ones real few-shot
teachers show: about one completion in nine has a wrong answer, a quarter run
on into an invented next question, and about one in twenty-five is malformed
(no final answer, or the answer as a word).
"""

import json
import random
from pathlib import Path

SEEDS, EXPANSION = 1600, 300

NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Yuki",
         "Zoe", "Aram", "Bea", "Cyrus", "Dev", "Esme", "Finn", "Gia", "Hugo", "Iris", "Jon", "Kira"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "stamps", "cards",
         "balloons", "coins", "buttons", "crayons", "oranges", "beads", "toy cars", "pears", "kites",
         "leaves", "rocks"]
PLACES = ["box", "bag", "basket", "jar", "crate", "drawer", "tray", "bowl"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def problem(rng: random.Random):
    """One (question, answer, reasoning steps) triple from a random template."""
    n, m = rng.sample(NAMES, 2)
    it, pl = rng.choice(ITEMS), rng.choice(PLACES)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    kind = rng.randrange(5)
    if kind == 0:
        return (f"{n} has {a} {it}. {m} gives {n} {b} more. How many {it} does {n} have now?", a + b,
                [f"{n} starts with {a} {it}.", f"{m} gives {b} more, so {a} + {b} = {a + b}."])
    if kind == 1:
        return (f"{n} picks {a} {it} and {m} picks {b} {it}. How many {it} did they pick in all?", a + b,
                [f"{n} picks {a} and {m} picks {b}.", f"Together {a} + {b} = {a + b}."])
    if kind == 2:
        return (f"{n} had {a + b} {it} and gave {b} of them to {m}. How many {it} does {n} have left?", a,
                [f"{n} had {a + b} {it}.", f"After giving away {b}, {a + b} - {b} = {a}."])
    if kind == 3:
        return (f"There were {a + b} {it} in a {pl}. {n} took {b} out. How many {it} are in the {pl} now?", a,
                [f"The {pl} had {a + b} {it}.", f"{n} took {b}, so {a + b} - {b} = {a}."])
    big, small = max(a, b) + 1, min(a, b)
    return (f"{n} has {big} {it} and {m} has {small}. How many more {it} does {n} have than {m}?",
            big - small, [f"{n} has {big} and {m} has {small}.", f"{big} - {small} = {big - small}."])


def completions(rng: random.Random, answer: int, steps: list[str], pool: list[str]) -> list[str]:
    """Two teacher completions: mostly right, sometimes wrong, running on or malformed."""
    outs = []
    for _ in range(2):
        wrong = rng.random() < 0.11
        said = max(0, answer + rng.choice([-2, -1, 1, 2, 10])) if wrong else answer
        if said == answer:
            wrong = False
        body = " ".join(steps) if not wrong else " ".join(steps[:-1] + [f"That makes {said}."])
        x = rng.random()
        if x < 0.02:  # malformed: the reasoning stops before any final answer
            outs.append(steps[0] + " Let me count again")
            continue
        if x < 0.04 and said <= 10:  # malformed: the answer as a word, which no numeric reader takes
            outs.append(f"{body} The answer is {WORDS[said]}.")
            continue
        end = rng.choice([f" The answer is {said}.", f" So the answer is {said}.", f"\nAnswer: {said}"])
        text = body + end
        if rng.random() < 0.25:  # runs on into an invented next example, as real few-shot teachers do
            text += f"\n\nQ: {rng.choice(pool)}\nA: Let's think. The answer is {rng.randint(1, 99)}"
        outs.append(text)
    return outs


def main() -> None:
    rng = random.Random(20261130)
    seen, items = set(), []
    while len(items) < SEEDS + EXPANSION:
        q, a, steps = problem(rng)
        if q not in seen:
            seen.add(q)
            items.append((q, a, steps))
    seeds = items[:SEEDS]
    all_questions = [q for q, _, _ in items]
    out = Path(__file__).parent / "example"
    out.mkdir(exist_ok=True)
    with open(out / "questions.jsonl", "w") as fp:
        for q, a, _ in seeds:
            fp.write(json.dumps({"question": q, "answer": a}) + "\n")
    with open(out / "teacher.jsonl", "w") as fp:
        for i, (q, a, steps) in enumerate(items):
            line = {"question": q, "completions": completions(rng, a, steps, all_questions)}
            if i >= len(seeds):
                line["expand"] = True
            fp.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
