"""Write the bundled example task: short arithmetic word problems.

    python data/make_example.py

writes data/example/questions.jsonl (questions with gold answers: the seed
source of `make demo`) and data/example/teacher.jsonl (the scripted teacher:
for every question, two step-by-step completions in the shape real teachers
produce, including some wrong answers and some that run on into an invented
next question, plus a pool of further questions the teacher proposes when
asked to expand). Deterministic: the same files every time.
"""

import json
import random
from pathlib import Path

NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Yuki"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "stamps", "cards",
         "balloons", "coins", "buttons", "crayons", "oranges", "beads", "toy cars"]
PLACES = ["box", "bag", "basket", "jar", "crate", "drawer"]


def problem(rng: random.Random):
    """One (question, answer, reasoning steps) triple from a random template."""
    n, m, it, pl = rng.choice(NAMES), rng.choice(NAMES), rng.choice(ITEMS), rng.choice(PLACES)
    a, b, c = rng.randint(2, 40), rng.randint(2, 20), rng.randint(2, 9)
    kind = rng.randrange(9)
    if kind == 0:
        return (f"{n} has {a} {it}. {m} gives {n} {b} more. How many {it} does {n} have now?", a + b,
                [f"{n} starts with {a} {it}.", f"{m} gives {b} more, so {a} + {b} = {a + b}."])
    if kind == 1:
        a = a + b
        return (f"{n} had {a} {it} and gave {b} of them to {m}. How many {it} does {n} have left?", a - b,
                [f"{n} had {a} {it}.", f"After giving away {b}, {a} - {b} = {a - b}."])
    if kind == 2:
        return (f"There are {c} {pl}s with {b} {it} in each {pl}. How many {it} are there in all?", c * b,
                [f"Each of the {c} {pl}s holds {b} {it}.", f"{c} * {b} = {c * b}."])
    if kind == 3:
        total = b * c
        return (f"{n} shares {total} {it} equally among {c} friends. How many {it} does each friend get?",
                total // c, [f"{total} {it} are split into {c} equal parts.", f"{total} / {c} = {total // c}."])
    if kind == 4:
        d = rng.randint(1, a + b - 1)
        return (f"{n} has {a} {it}, buys {b} more and then loses {d}. How many {it} does {n} have now?",
                a + b - d, [f"{n} starts with {a} and buys {b}: {a} + {b} = {a + b}.",
                            f"Losing {d} leaves {a + b} - {d} = {a + b - d}."])
    if kind == 5:
        return (f"{n} reads {b} pages every day. How many pages does {n} read in {c} days?", b * c,
                [f"{n} reads {b} pages a day for {c} days.", f"{b} * {c} = {b * c}."])
    if kind == 6:
        return (f"A {pl} holds {a} {it} and another {pl} holds {b} {it}. How many more {it} are in the "
                f"first {pl} than in the second?" if a > b else
                f"A {pl} holds {b} {it} and another {pl} holds {a} {it}. How many more {it} are in the "
                f"first {pl} than in the second?", abs(a - b),
                [f"The first {pl} has {max(a, b)} and the second has {min(a, b)}.",
                 f"{max(a, b)} - {min(a, b)} = {abs(a - b)}."])
    if kind == 7:
        price = rng.randint(2, 12)
        return (f"One {it[:-1]} costs {price} dollars. How much do {c} {it} cost?", price * c,
                [f"Each costs {price} dollars and {n} buys {c}.", f"{price} * {c} = {price * c}."])
    x = rng.randint(1, 10)
    return (f"{n} has {a} {it} and {m} has {x} more than {n}. How many {it} do they have together?",
            a + a + x, [f"{m} has {a} + {x} = {a + x}.", f"Together they have {a} + {a + x} = {a + a + x}."])


def completions(rng: random.Random, question: str, answer: int, steps: list[str], pool: list[str]) -> list[str]:
    """Two teacher completions: mostly right, sometimes wrong, sometimes running on."""
    outs = []
    for k in range(2):
        wrong = rng.random() < 0.12
        said = answer + rng.choice([-2, -1, 1, 2, 10]) if wrong else answer
        body = " ".join(steps) if not wrong else " ".join(steps[:-1] + [f"That makes {said}."])
        end = rng.choice([f" The answer is {said}.", f" So the answer is {said}.", f"\nAnswer: {said}"])
        text = body + end
        if rng.random() < 0.25:  # runs on into an invented next example, as real few-shot teachers do
            text += f"\n\nQ: {rng.choice(pool)}\nA: Let's think. The answer is {rng.randint(1, 99)}"
        outs.append(text)
    return outs


def main() -> None:
    rng = random.Random(20261123)
    seen, items = set(), []
    while len(items) < 400:
        q, a, steps = problem(rng)
        if q not in seen:
            seen.add(q)
            items.append((q, a, steps))
    seeds, expansion = items[:280], items[280:]
    all_questions = [q for q, _, _ in items]
    out = Path(__file__).parent / "example"
    out.mkdir(exist_ok=True)
    with open(out / "questions.jsonl", "w") as fp:
        for q, a, _ in seeds:
            fp.write(json.dumps({"question": q, "answer": a}) + "\n")
    with open(out / "teacher.jsonl", "w") as fp:
        for i, (q, a, steps) in enumerate(items):
            line = {"question": q, "completions": completions(rng, q, a, steps, all_questions)}
            if i >= len(seeds):
                line["expand"] = True
            fp.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
