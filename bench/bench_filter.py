"""Benchmark of `kdpipe filter`: time, throughput, peak memory and near-duplicate recall.

    python bench/bench_filter.py [--sizes 10000,100000,1000000] [--runs 3]
    python bench/bench_filter.py --phases 100000 [--cprofile filter.prof]   # where the CPU goes

Synthetic short records (a math-word-problem-like question of 18-30 words,
one teacher sample with a rationale, gold answer) go through every rule:
about 5% of the samples are teacher errors, 20% have a wrong answer, 5% of
the records have no gold and three samples (self-consistency), 1% have a
too-short rationale, 2% are exact copies (case and spacing changed) of an
earlier question, 3% are planted near-copies (one word replaced, inserted or
dropped) and 0.5% copy an eval question (decontamination with --against).

Printed per size: median wall seconds of `run_filter` in a fresh process, its
CPU seconds (all processes; on a shared machine the wall time depends on the
load, the CPU time much less), records/s, peak RSS of the largest process, the recall of the planted copies (dropped as
duplicate/near_duplicate, or contaminated for eval copies; counted over the
copies whose original reached those rules) and the false positives (records
not planted but dropped by one of those three rules).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VOCAB = [f"{a}{b}" for a in ("ap", "pe", "ba", "ki", "mo", "su", "ra", "te", "lo", "vi", "do", "ne")
         for b in ("ples", "ars", "nanas", "ttens", "ney", "gar", "ins", "ams", "aves", "sits", "gs",
                   "sts", "rks", "nds", "lls", "ts", "ps", "rs", "ms", "ks")]
NAMES = ["Jack", "Maria", "Ali", "Chen", "Priya", "Olga", "Tom", "Ana", "Kofi", "Lena"]


def make_question(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    words = [rng.choice(NAMES), "has", str(a)] + rng.choices(VOCAB, k=rng.randint(8, 16)) + \
            ["and", "buys", str(b), "more."] + ["How", "many"] + rng.choices(VOCAB, k=3) + ["now?"]
    return " ".join(words), a + b


def planted_near_copy(rng: random.Random, question: str) -> str:
    words = question.split()
    i = rng.randrange(len(words))
    op = rng.choice(("replace", "insert", "delete"))
    if op == "replace":
        words[i] = rng.choice(VOCAB)
    elif op == "insert":
        words.insert(i, rng.choice(VOCAB))
    else:
        del words[i]
    return " ".join(words)


def synth(n: int, path: Path, eval_path: Path, seed: int = 0) -> dict[str, str]:
    """Write n records and an eval file; return {planted copy id: id of the question it copies}."""
    rng = random.Random(seed)
    planted, questions = {}, []
    evals = [make_question(rng) for _ in range(max(100, n // 1000))]
    with open(eval_path, "w") as fp:
        for i, (q, ans) in enumerate(evals):
            fp.write(json.dumps({"id": f"e{i}", "question": q, "task": "numeric", "gold": str(ans)}) + "\n")
    with open(path, "w") as fp:
        for i in range(n):
            r = rng.random()
            rid = f"r{i}"
            if r < 0.02 and questions:
                src, ans, src_id = rng.choice(questions)
                q = "  ".join(src.upper().split())
                planted[rid] = src_id
            elif r < 0.05 and questions:
                src, ans, src_id = rng.choice(questions)
                q = planted_near_copy(rng, src)
                planted[rid] = src_id
            elif r < 0.055:
                q, ans = rng.choice(evals)
                planted[rid] = "eval"
            else:
                q, ans = make_question(rng)
                if len(questions) < 50_000:
                    questions.append((q, ans, rid))
                elif rng.random() < 0.1:
                    questions[rng.randrange(len(questions))] = (q, ans, rid)
            rec = {"id": rid, "question": q, "task": "numeric", "gold": str(ans)}
            k = rng.random()
            if k < 0.05:
                rec["samples"] = [{"index": 0, "text": "", "error": "empty", "detail": "no text"}]
            elif k < 0.10:
                del rec["gold"]
                answers_ = [ans, ans, ans + rng.choice((0, 1))]
                rec["samples"] = [{"index": j, "rationale": f"We add the two amounts {j}: {ans} in all.",
                                   "answer": str(a), "text": "..."} for j, a in enumerate(answers_)]
            else:
                wrong = k < 0.30
                a = ans + 1 if wrong else ans
                rationale = "So it is." if 0.30 <= k < 0.31 else f"{q.split()[0]} has the first amount " \
                    f"and buys more, so the total is {a}."
                rec["samples"] = [{"index": 0, "text": f"{rationale} The answer is {a}.",
                                   "rationale": rationale, "answer": str(a), "finish_reason": "stop"}]
            fp.write(json.dumps(rec) + "\n")
    return planted


CHILD = """
import json, resource, sys, time
from kdpipe.filter import FilterOptions, run_filter
inp, out, rej, ev = sys.argv[1:5]
t = time.perf_counter()
rep = run_filter(inp, out, FilterOptions(against=[ev]), rejected=rej)
sec = time.perf_counter() - t
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": sec, "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                  "rss_mib": max(me.ru_maxrss, kids.ru_maxrss) / 1024, "report": rep.to_dict()}))
"""


def measure(n: int, runs: int, workdir: Path) -> dict:
    inp, ev = workdir / f"in{n}.jsonl", workdir / f"eval{n}.jsonl"
    planted = synth(n, inp, ev)
    results = []
    for _ in range(runs):
        out, rej = workdir / "out.jsonl", workdir / "rej.jsonl"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        res = subprocess.run([sys.executable, "-c", CHILD, inp, out, rej, ev], env=env, check=True,
                             capture_output=True, text=True)
        results.append(json.loads(res.stdout))
    dropped, early = {}, set()
    with open(rej) as fp:
        for line in fp:
            obj = json.loads(line)
            rule = obj["reason"]
            dropped[obj["id"]] = rule
            if rule not in ("duplicate", "near_duplicate", "contaminated"):
                early.add(obj["id"])
    # A copy whose original went for another reason (wrong answer, ...) is rightly kept as the
    # first of its cluster: recall counts the copies whose original reached the dedup rules.
    reachable = {c for c, src in planted.items() if c not in early and src not in early}
    wanted = {c: ("contaminated",) if planted[c] == "eval" else ("duplicate", "near_duplicate")
              for c in reachable}
    caught = sum(dropped.get(c) in rules for c, rules in wanted.items())
    false_pos = sum(1 for i, rule in dropped.items()
                    if rule in ("duplicate", "near_duplicate", "contaminated") and i not in planted)
    return {"n": n, "seconds": statistics.median(r["seconds"] for r in results),
            "cpu": statistics.median(r["cpu"] for r in results),
            "rss_mib": max(r["rss_mib"] for r in results), "recall": caught / max(1, len(reachable)),
            "planted": len(reachable), "false_pos": false_pos, "report": results[-1]["report"]}


# --phases: the stage's functions timed in one process (--workers 1), CPU seconds, each wrapped where
# run_filter finds it. Indented: inside the first pass, which runs per chunk of input lines (in worker
# processes on a large input); the rest needs the whole set.
PHASES = [("kdpipe.filter", "_first_pass", "first pass: per record, parallel by chunk"),
          ("kdpipe.filter", "parse_json_line", "  JSON parse of each line"),
          ("kdpipe.filter", "record_at", "  dict -> Record, schema checks"),
          ("kdpipe.filter", "judge", "  record and sample rules (rules.judge)"),
          ("kdpipe.filter.dedup", "words_of", "  words of each question"),
          ("kdpipe.filter.dedup", "id_key", "  id hashes"),
          ("kdpipe.filter.dedup", "features", "  dedup features: exact key, MinHash, shingle hashes"),
          ("kdpipe.filter.dedup", "EvalIndex.contaminated", "  contamination against the eval index"),
          ("kdpipe.filter.dedup", "check_unique_ids", "whole set: ids used twice")]


def phases(n: int, workdir: Path, cprofile: str | None) -> None:
    import collections
    import importlib
    import time

    sys.path.insert(0, str(REPO))
    from kdpipe.filter import FilterOptions, run_filter, rules_in

    inp, ev = workdir / f"in{n}.jsonl", workdir / f"eval{n}.jsonl"
    synth(n, inp, ev)
    spent: collections.Counter = collections.Counter()

    def timed(owner, name, label):
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - t
        setattr(owner, name, wrapper)

    for module, path, label in PHASES:
        owner = importlib.import_module(module)
        *outer, name = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        timed(owner, name, label)
    for rule in rules_in("set", FilterOptions()):
        timed(type(rule), "earlier", f"whole set: {rule.name} (hash index, exact check of candidates)")
    profile = None
    if cprofile:
        import cProfile

        profile = cProfile.Profile(time.process_time)
        profile.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run_filter(inp, workdir / "out.jsonl", FilterOptions(against=[ev], workers=1), rejected=workdir / "rej.jsonl")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profile:
        profile.disable()
        profile.dump_stats(cprofile)
    print(f"{n} records, one process: {cpu:.2f} CPU s ({n / cpu:,.0f} records per CPU second), {wall:.1f} s wall"
          f"{' (under cProfile)' if cprofile else ''}; load average {os.getloadavg()[0]:.1f}")
    inner = sum(v for label, v in spent.items() if label.startswith("  "))
    first = spent[PHASES[0][2]]
    rest = cpu - sum(spent.values()) + inner
    spent["  rest of the first pass (reading, writing survivors and rejects, gathering hashes)"] = first - inner
    order = [p[2] for p in PHASES[:-1]]
    for label in order + sorted(set(spent) - set(order), key=lambda label: not label.startswith(" ")):
        print(f"{spent[label]:8.2f} s {100 * spent[label] / cpu:5.1f} %  {label}")
    print(f"{rest:8.2f} s {100 * rest / cpu:5.1f} %  the rest (second pass: copying survivors out; options, meta)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--phases", type=int, metavar="N", help="time the stage's phases on N records instead")
    ap.add_argument("--cprofile", metavar="FILE", help="with --phases: also write a cProfile (CPU time) here")
    args = ap.parse_args()
    if args.phases:
        with tempfile.TemporaryDirectory() as d:
            phases(args.phases, Path(d), args.cprofile)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'records':>9} {'seconds':>8} {'CPU s':>7} {'records/s':>10} {'peak RSS MiB':>12} {'planted':>8} "
          f"{'recall':>7} {'false pos':>9}   (load average before: {os.getloadavg()[0]:.1f})")
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            m = measure(n, args.runs, Path(d))
            print(f"{n:>9} {m['seconds']:>8.2f} {m['cpu']:>7.1f} {n / m['seconds']:>10.0f} {m['rss_mib']:>12.0f} "
                  f"{m['planted']:>8} {m['recall']:>7.3f} {m['false_pos']:>9}", flush=True)


if __name__ == "__main__":
    main()
