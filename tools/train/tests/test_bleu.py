"""BLEU/chrF scorer on hand-computed cases (no torch needed)."""
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from taskmoe_ref.bleu import corpus_bleu, corpus_chrf, tokenize_13a  # noqa: E402


class Tokenize13aTest(unittest.TestCase):
    def test_punctuation_split_but_numbers_kept(self):
        self.assertEqual(tokenize_13a("Hello, world."), "Hello , world .")
        self.assertEqual(tokenize_13a("pi is 3.14 and 1,000 items"), "pi is 3.14 and 1,000 items")
        self.assertEqual(tokenize_13a("pages 5-6 (A-B)"), "pages 5 - 6 ( A-B )")
        self.assertEqual(tokenize_13a("don't &amp; \"q\""), "don't & \" q \"")
        self.assertEqual(tokenize_13a("Open %s file?"), "Open % s file ?")


class BleuTest(unittest.TestCase):
    def test_identical_is_100(self):
        b, info = corpus_bleu(["the cat sat on the mat ."], ["the cat sat on the mat ."])
        self.assertAlmostEqual(b, 100.0, places=6)
        self.assertEqual(info["bp"], 1.0)

    def test_hand_computed_precisions(self):
        # unigram 5/6, bigram 3/5, trigram 2/4, 4-gram 1/3, same length -> (1/12)^(1/4)
        b, info = corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
        self.assertAlmostEqual(b, 100 * (1 / 12) ** 0.25, places=6)
        self.assertAlmostEqual(info["precisions"][1], 60.0)

    def test_brevity_penalty_and_exp_smoothing(self):
        # hyp 4 tokens vs ref 6: bp = exp(1 - 6/4); 4-gram has no match -> 100 / (2 * 1)
        b, info = corpus_bleu(["the cat sat down"], ["the cat sat on the mat"])
        p = [75.0, 200 / 3, 50.0, 50.0]
        expected = math.exp(1 - 6 / 4) * math.exp(sum(math.log(x) for x in p) / 4)
        self.assertAlmostEqual(info["precisions"][3], 50.0)
        self.assertAlmostEqual(b, expected, places=6)

    def test_corpus_level_sums_statistics(self):
        hyps, refs = ["a b c d", "e f g h"], ["a b c d", "e f x h"]
        # unigrams 7/8, bigrams 4/6, trigrams 2/4, 4-grams 1/2
        b, _ = corpus_bleu(hyps, refs)
        self.assertAlmostEqual(b, 100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25, places=6)

    def test_no_match_is_zero_and_mismatched_lengths_raise(self):
        self.assertEqual(corpus_bleu(["x y"], ["a b"])[0], 0.0)
        with self.assertRaises(ValueError):
            corpus_bleu(["a"], ["a", "b"])


class ChrfTest(unittest.TestCase):
    def test_identical_is_100(self):
        self.assertAlmostEqual(corpus_chrf(["Hallo Welt"], ["Hallo Welt"]), 100.0, places=6)

    def test_hand_computed(self):
        # order 1: P 1, R 2/3 -> F2 = 10/14; order 2: P 1, R 1/2 -> 5/9; orders 3..6 not effective
        self.assertAlmostEqual(corpus_chrf(["ab"], ["abc"]), 100 * (10 / 14 + 5 / 9) / 2, places=6)

    def test_whitespace_is_ignored(self):
        self.assertAlmostEqual(corpus_chrf(["a b c"], ["abc"]), 100.0, places=6)


if __name__ == "__main__":
    unittest.main()
