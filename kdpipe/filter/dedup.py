"""Near-duplicate and contamination detection that scales: MinHash-LSH in numpy.

Self-Instruct dropped a generated instruction whose ROUGE-L against any
instruction in the pool exceeded 0.7; that is pairwise and quadratic. Here a
question becomes a set of word shingles (k consecutive normalized words), a
MinHash signature estimates the Jaccard similarity of two such sets, and
locality-sensitive hashing (bands of signature rows) proposes only the pairs
likely to be similar. Each proposed pair is then checked against the
threshold exactly: the Jaccard similarity of the two questions' sets of
shingle hashes (a 64-value sketch estimate has a standard deviation of ~0.06,
enough to drop pairs at 0.5 for a 0.6 threshold). A question is dropped only
when it is near an earlier question that was kept, as Self-Instruct compares
with the pool kept so far.

What is held in memory per question is small and fixed: one 64-bit exact
key and BANDS 32-bit band keys, never the text; the shingle hashes (4 bytes a
word) wait in a file and are read back for candidate pairs only. The eval
check of `--against` still uses PERMS one-byte sketch values (an estimate).
Hashing is deterministic (CRC32 of words, fixed seeds), so a rerun drops
exactly the same records.

All the arithmetic is vectorised over batches of questions; Python touches
each question once, to split it into words.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdpipe.keys import key_of_words, words_of  # noqa: F401  (words_of: the words compared)
from kdpipe.errors import InputError
from kdpipe.records import parse_json_line

PERMS = 64  # MinHash permutations
BANDS = 16  # LSH bands of PERMS // BANDS rows: candidates from Jaccard ~0.5 up
ROWS = PERMS // BANDS
SKETCH_BITS = 8  # b-bit minwise hashing (Li & König): one byte per permutation kept for checks

_rng = np.random.default_rng(20230502)  # fixed: signatures must not change between runs
_PERM_A = _rng.integers(1, 2**63, size=PERMS, dtype=np.uint64) | np.uint64(1)
_PERM_B = _rng.integers(0, 2**63, size=PERMS, dtype=np.uint64)
_ROW_MUL = _rng.integers(1, 2**63, size=ROWS, dtype=np.uint64) | np.uint64(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def exact_key(words: list[bytes], choices: list[str] | None = None) -> int:
    """A 64-bit hash of the question key (keys.question_key): equal for the same question."""
    return int.from_bytes(hashlib.blake2b(key_of_words(words, choices), digest_size=8).digest(), "little")


def id_key(record_id: str) -> int:
    """A 64-bit hash of a record id, for finding ids used twice without holding the ids."""
    return int.from_bytes(hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest(), "little")


def id_lines(pairs: list[tuple[int, int]]) -> np.ndarray:
    """(n, 2) uint64 array of (id_key, line number) pairs, for check_unique_ids."""
    return np.array(pairs, dtype=np.uint64).reshape(-1, 2)


def check_unique_ids(inp: Path, ids: np.ndarray) -> None:
    """Fail like load_records on an id used twice in `inp`, given (id_key, line) of every record.

    16 bytes per record instead of the ids themselves; the lines whose hashes
    repeat are read again to compare the ids (hashes can collide).
    """
    order = np.argsort(ids[:, 0], kind="stable")
    keys = ids[order, 0]
    same = keys[1:] == keys[:-1]
    if not same.any():
        return
    repeated = np.r_[same, False] | np.r_[False, same]
    wanted = set(ids[order[repeated], 1].tolist())
    del ids, order, keys
    first: dict[str, int] = {}
    with open(inp, "rb") as fp:
        for lineno, raw in enumerate(fp, start=1):
            if lineno in wanted:
                rec_id = parse_json_line(inp, lineno, raw)["id"]
                if rec_id in first:
                    raise InputError(inp, f"duplicate id {rec_id!r} (first on line {first[rec_id]})", lineno)
                first[rec_id] = lineno


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads nearby inputs over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _WordHashes(dict):
    """word -> CRC32, filled on first sight; cleared when full so memory stays bounded."""

    LIMIT = 1 << 20

    def __missing__(self, word: bytes) -> int:
        h = self[word] = zlib.crc32(word)
        return h


_WORD_HASHES = _WordHashes()


@dataclass
class Words:
    """The words of a batch of questions, as hashes: flat array and per-question lengths."""

    flat: np.ndarray  # uint64
    lengths: np.ndarray  # int64

    @classmethod
    def of(cls, word_lists: list[list[bytes]]) -> "Words":
        if len(_WORD_HASHES) > _WordHashes.LIMIT:
            _WORD_HASHES.clear()
        lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
        flat = np.fromiter(map(_WORD_HASHES.__getitem__, itertools.chain.from_iterable(word_lists)),
                           dtype=np.uint64, count=int(lengths.sum()))
        return cls(flat, lengths)

    def __len__(self) -> int:
        return len(self.lengths)


def shingles(words: Words, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the k-word shingles of each question, and the index of the question each belongs to.

    A question shorter than k words gives one shingle of all its words (an
    empty one a shingle of nothing), so every question has at least one.
    """
    lengths, flat = words.lengths, words.flat
    ends = np.cumsum(lengths)
    starts = ends - lengths
    n_sh = np.maximum(lengths - k + 1, 1)
    owner = np.repeat(np.arange(len(lengths)), n_sh)
    sh_starts = np.cumsum(n_sh) - n_sh
    pos = starts[owner] + (np.arange(len(owner)) - sh_starts[owner])
    padded = np.concatenate([flat, np.zeros(k, dtype=np.uint64)])
    end = ends[owner]
    h = np.full(len(owner), np.uint64(k), dtype=np.uint64)
    for t in range(k):
        w = np.where(pos + t < end, padded[pos + t] + np.uint64(1), np.uint64(0))
        h = _mix64(h * _MIX + w)
    return h, owner


def minhash(words: Words, k: int) -> np.ndarray:
    """MinHash signatures (n, PERMS) of uint32 over the k-word shingles of each question."""
    return _minhash_of(*shingles(words, k), len(words))


def _minhash_of(h: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    out = np.empty((n, PERMS), dtype=np.uint32)
    if not n:  # a chunk whose records all went to the record and chunk rules
        return out
    first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    # Slices of ~32k shingles keep the (shingles x PERMS) temporary in cache.
    step = 512
    for lo in range(0, len(first), step):
        a, b = first[lo], first[lo + step] if lo + step < len(first) else len(h)
        # Multiply-shift hashing: one cheap universal hash per permutation.
        vals = np.multiply(h[a:b, None], _PERM_A[None, :])
        np.add(vals, _PERM_B[None, :], out=vals)
        np.right_shift(vals, np.uint64(32), out=vals)
        out[lo:lo + step] = np.minimum.reduceat(vals, first[lo:lo + step] - a, axis=0)
    return out


def band_keys(sig: np.ndarray) -> np.ndarray:
    """(n, BANDS) uint32 keys: two questions share a key when a whole band of rows agrees."""
    rows = sig.reshape(len(sig), BANDS, ROWS).astype(np.uint64)
    acc = (rows * _ROW_MUL[None, None, :]).sum(axis=2, dtype=np.uint64)
    return (_mix64(acc) >> np.uint64(32)).astype(np.uint32)


def sketch(sig: np.ndarray) -> np.ndarray:
    """(n, PERMS) uint8: the low byte of each signature value, enough to estimate Jaccard."""
    return (sig & 0xFF).astype(np.uint8)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard estimates from pairs of sketches (rows of a and b), corrected for byte collisions."""
    match = (a == b).mean(axis=1)
    chance = 1.0 / (1 << SKETCH_BITS)
    return np.clip((match - chance) / (1.0 - chance), 0.0, 1.0)


@dataclass
class Features:
    """What the filter keeps of each question for the set-wide rules."""

    exact: np.ndarray  # (n,) uint64
    bands: np.ndarray  # (n, BANDS) uint32
    sketch: np.ndarray  # (n, PERMS) uint8; for the eval check, not kept for the set-wide rules
    shingle_sets: np.ndarray  # uint32, flat: the distinct shingle hashes of each question, sorted
    set_sizes: np.ndarray  # (n,) uint32: how many of them each question has

    def select(self, keep: np.ndarray) -> "Features":
        """The features of the questions where `keep` is true."""
        owner = np.repeat(np.arange(len(self.set_sizes)), self.set_sizes)
        return Features(self.exact[keep], self.bands[keep], self.sketch[keep],
                        self.shingle_sets[keep[owner]], self.set_sizes[keep])


def features(word_lists: list[list[bytes]], choices: list[list[str] | None], k: int,
             words: Words | None = None) -> Features:
    words = words if words is not None else Words.of(word_lists)
    h, owner = shingles(words, k)
    sig = _minhash_of(h, owner, len(words))
    exact = np.fromiter((exact_key(w, c) for w, c in zip(word_lists, choices)), dtype=np.uint64,
                        count=len(word_lists))
    sets, sizes = shingle_sets(h, owner, len(words))
    return Features(exact, band_keys(sig), sketch(sig), sets, sizes)


def apart(feats: Features, mask) -> None:
    """Keep the questions of `mask` out of the near-duplicate search: a counterfactual edit is a
    near-copy of its source by design. Each gets band keys of its own, drawn from its exact key, so
    LSH proposes it with no other question (an identical one is the duplicate rule's)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        salt = np.arange(1, BANDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        mixed = (feats.exact[mask, None] ^ salt) * np.uint64(0xBF58476D1CE4E5B9)
        feats.bands[mask] = (mixed >> np.uint64(32)).astype(np.uint32)


def shingle_sets(h: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each question's distinct shingle hashes (high 32 bits), sorted, flat; and their counts.

    About 4 bytes a word: the filter keeps them in a file, not in memory, and
    reads back only those of candidate pairs.
    """
    keyed = (owner.astype(np.uint64) << np.uint64(32)) | (h >> np.uint64(32))
    keyed.sort()  # (np.unique is ~20x slower here: it hashes first)
    first = np.ones(len(keyed), dtype=bool)
    first[1:] = keyed[1:] != keyed[:-1]
    keyed = keyed[first]
    sizes = np.bincount((keyed >> np.uint64(32)).astype(np.int64), minlength=n).astype(np.uint32)
    return (keyed & np.uint64(0xFFFFFFFF)).astype(np.uint32), sizes


def pair_jaccard(pairs: np.ndarray, sets: np.ndarray, sizes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of each pair (rows of question indices).

    The two sets of a pair are concatenated under the pair's number and sorted:
    a value seen twice is in both. Batches bound the temporary arrays.
    """
    out = np.empty(len(pairs), dtype=np.float64)
    lo = 0
    while lo < len(pairs):
        total = np.cumsum(sizes[pairs[lo:, 0]].astype(np.int64) + sizes[pairs[lo:, 1]])
        hi = lo + max(1, int(np.searchsorted(total, 1 << 19, side="right")))
        a, b = pairs[lo:hi, 0], pairs[lo:hi, 1]
        la, lb = sizes[a].astype(np.int64), sizes[b].astype(np.int64)
        both = la + lb
        pid = np.repeat(np.arange(hi - lo), both)
        pos = np.arange(len(pid)) - (np.cumsum(both) - both)[pid]
        in_a = pos < la[pid]
        src = np.where(in_a, offsets[a][pid] + pos, offsets[b][pid] + pos - la[pid])
        keyed = (pid.astype(np.uint64) << np.uint64(32)) | sets[src]
        keyed.sort()
        twice = keyed[1:] == keyed[:-1]
        inter = np.bincount((keyed[1:][twice] >> np.uint64(32)).astype(np.int64), minlength=hi - lo)
        out[lo:hi] = inter / (both - inter)
        lo = hi
    return out


def first_of_exact(exact: np.ndarray) -> np.ndarray:
    """For each key, the index of its first occurrence (itself when it is the first)."""
    _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


def near_duplicate_of(bands: np.ndarray, sets: np.ndarray, sizes: np.ndarray, threshold: float,
                      eligible: np.ndarray | None = None) -> np.ndarray:
    """For each question, the earliest earlier KEPT question it nearly duplicates, else -1.

    Questions are taken in order; one is dropped (linked) when the exact
    Jaccard similarity of its shingle set with a kept earlier question reaches
    the threshold, as Self-Instruct compares each new instruction with the pool
    kept so far. So a~b, b~c with a not~c keeps a and c, drops b.

    Candidates are the questions sharing an LSH band key (MinHash rows); within
    a band's group each member is checked against the group's first member and
    its predecessor in the group, which keeps the work linear however large a
    group grows. Only `eligible` questions (default all) take part: the filter
    leaves out exact duplicates, which are dropped anyway.
    """
    n = len(bands)
    dup_of = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dup_of
    pairs = []
    for b in range(bands.shape[1]):
        order = np.argsort(bands[:, b], kind="stable")
        if eligible is not None:
            order = order[eligible[order]]
        keys = bands[order, b]
        new_group = np.r_[True, keys[1:] != keys[:-1]]
        later = np.flatnonzero(~new_group)
        if not len(later):
            continue
        group_start = np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
        member = order[later]
        pairs.append(np.stack([order[group_start[later]], member], axis=1))
        pairs.append(np.stack([order[later - 1], member], axis=1))
    if not pairs:
        return dup_of
    pairs = np.concatenate(pairs)
    # Each pair once, as (earlier, later), sorted by the later question, then the earlier.
    codes = np.unique(np.maximum(pairs[:, 0], pairs[:, 1]) * n + np.minimum(pairs[:, 0], pairs[:, 1]))
    pairs = np.stack([codes % n, codes // n], axis=1)
    del codes
    offsets = np.cumsum(sizes, dtype=np.int64) - sizes
    similar = pairs[pair_jaccard(pairs, sets, sizes, offsets) >= threshold]
    kept = [True] * n
    # In order of the later question: whether each earlier one is kept is settled by then.
    for earlier, later in similar.tolist():
        if kept[later] and kept[earlier]:
            kept[later] = False
            dup_of[later] = earlier
    return dup_of


class EvalIndex:
    """The questions of eval sets, for decontaminating training data against them.

    A training question is contaminated when it shares one long n-gram (GPT-3
    used 13 words) with an eval question, or when it is a near-duplicate of one
    (the same MinHash-LSH test as for training questions).
    """

    def __init__(self, ids: list[str], word_lists: list[list[bytes]], ngram: int, shingle: int,
                 threshold: float):
        self.ids, self.ngram, self.shingle, self.threshold = ids, ngram, shingle, threshold
        words = Words.of(word_lists)
        grams, owner = shingles(words, ngram)
        order = np.argsort(grams, kind="stable")
        self._grams, self._gram_owner = grams[order], owner[order]
        sig = minhash(words, shingle)
        self._sketch = sketch(sig)
        bands = band_keys(sig)
        self._bands = []
        for b in range(bands.shape[1]):
            order = np.argsort(bands[:, b], kind="stable")
            self._bands.append((bands[order, b], order))

    def _lookup(self, sorted_keys: np.ndarray, owners: np.ndarray, queries: np.ndarray):
        at = np.searchsorted(sorted_keys, queries)
        at_c = np.minimum(at, len(sorted_keys) - 1)
        found = (at < len(sorted_keys)) & (sorted_keys[at_c] == queries)
        return found, owners[at_c]

    def contaminated(self, words: Words, feats: Features) -> list[str | None]:
        """For each training question, why it is contaminated ("...eval id"), or None."""
        n = len(words)
        why: list[str | None] = [None] * n
        if not n or not self.ids:
            return why
        grams, owner = shingles(words, self.ngram)
        found, ev = self._lookup(self._grams, self._gram_owner, grams)
        for i, e in zip(owner[found][::-1], ev[found][::-1]):  # reversed: the first hit wins
            why[i] = f"shares a {self.ngram}-word span with eval question {self.ids[e]}"
        for b, (keys, owners) in enumerate(self._bands):
            found, ev = self._lookup(keys, owners, feats.bands[:, b])
            cand = np.flatnonzero(found)
            if not len(cand):
                continue
            sim = estimated_jaccard(feats.sketch[cand], self._sketch[ev[cand]])
            for i, e, s in zip(cand, ev[cand], sim):
                if s >= self.threshold and why[i] is None:
                    why[i] = f"near-duplicate of eval question {self.ids[e]} (Jaccard ~{s:.2f})"
        return why
