"""ROUGE-L F-measure (Lin, 2004): the longest common subsequence of words, as Google's
`rouge-score` computes it without stemming (lower case, runs of letters and digits as words).

Written here rather than taken from `rouge-score`: that package ships as a source archive
only and brings nltk (for its Porter stemmer, which kdpipe does not use); the measure is an
LCS over word lists (tests/test_rouge.py).
"""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^a-z0-9]+")


def words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of a prediction against a reference, 0.0 when either has no words."""
    p, r = words(prediction), words(reference)
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)
