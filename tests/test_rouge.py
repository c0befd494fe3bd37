"""ROUGE-L F1 by its definition (the one rouge-score implements, without a stemmer), on hand-computed cases."""

import pytest

from kdpipe.rouge import lcs_length, rouge_l, words


def test_known_values():
    # LCS "the quick fox": 3 of 5 predicted words, 3 of 4 reference words
    assert rouge_l("the quick red fox jumps", "The quick brown fox") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert rouge_l("Paris.", "paris") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("a b", "c d") == 0.0


def test_lcs_is_a_subsequence_not_a_substring():
    assert lcs_length("a b c d e".split(), "a x c y e".split()) == 3
    assert words("It's 3:30, OK?") == ["it", "s", "3", "30", "ok"]
