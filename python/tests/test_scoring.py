"""score_batch: forced decoding against the PyTorch reference's scores and log-probabilities
(tests/data/fixtures/<setup>/reference.json), and against the module's own translations."""
import json
import math
import os

import pytest

import taskmoe
from conftest import SENTENCES


def reference(fixture_dir, setup):
    with open(os.path.join(fixture_dir(setup), "reference.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("setup", ["task_target", "task_pair", "token_task", "dense"])
def test_scores_of_the_references_translations_equal_its_scores(fixture_dir, setup):
    ref = reference(fixture_dir, setup)
    compared = 0
    for case in ref["cases"]:
        t = taskmoe.Translator.from_checkpoint(fixture_dir(setup), case["task"])
        eos = t.config["model"]["eos_id"]
        src = case["source_ids"][1:-1]
        hyps = [h for h in [case["greedy"]] + case["beam4"] if h["tokens"] and h["tokens"][-1] == eos]
        results = t.score_batch_tokens([src] * len(hyps), [h["tokens"][:-1] for h in hyps])
        for h, r in zip(hyps, results):
            assert r.tokens == h["tokens"]
            assert r.score == pytest.approx(h["score"], rel=1e-4, abs=1e-4)
            compared += 1
    assert compared > 0


def test_log_probs_equal_the_log_softmax_of_the_references_logits(fixture_dir):
    ref = reference(fixture_dir, "task_target")
    for case in ref["cases"]:
        t = taskmoe.Translator.from_checkpoint(fixture_dir("task_target"), case["task"])
        vocab, eos = t.config["model"]["vocab_size"], t.config["model"]["eos_id"]
        dec = case["decoder_input"]  # [bos, t1, t2]; logits at each of the 3 positions
        logits = case["logits"]["data"]
        r = t.score_batch_tokens([case["source_ids"][1:-1]], [dec[1:]])[0]
        assert len(r.log_probs) == len(dec)
        for k in range(len(dec)):
            row = logits[k * vocab:(k + 1) * vocab]
            m = max(row)
            lse = m + math.log(sum(math.exp(x - m) for x in row))
            token = dec[k + 1] if k + 1 < len(dec) else eos
            assert r.log_probs[k] == pytest.approx(row[token] - lse, rel=1e-4, abs=1e-4)


def test_scoring_a_translation_gives_its_score(demo):
    texts = [s for s in SENTENCES if s.strip()]
    results = demo.translate_batch(texts, beam_size=4, max_decoding_length=200)
    scored = demo.score_batch(texts, [r.hypotheses[0] for r in results], max_batch_size=3)
    for text, r, s in zip(texts, results, scored):
        if s.tokens[:-1] != r.tokens[0]:
            continue  # detokenize + re-encode is not always the identity (e.g. " ⁇ " for <unk>)
        assert s.score == pytest.approx(r[0].score, rel=1e-4, abs=1e-4), text
    tok = demo.score_batch_tokens([demo.encode(t) for t in texts], [r.tokens[0] for r in results])
    for r, s in zip(results, tok):
        assert s.score == pytest.approx(r[0].score, rel=1e-4, abs=1e-4)
        assert len(s.log_probs) == len(s.tokens) == len(r.tokens[0]) + 1


def test_scoring_errors(demo):
    with pytest.raises(taskmoe.InvalidArgumentError, match="score_batch: 2 sources but 1 targets"):
        demo.score_batch(["a", "b"], ["c"])
    with pytest.raises(taskmoe.InvalidArgumentError, match="more than max_positions - 1"):
        demo.score_batch_tokens([[5]], [[5] * 1000])
    with pytest.raises(TypeError):
        demo.score_batch("a", ["b"])
    assert demo.score_batch(["Open file"], [""])[0].tokens == [demo.config["model"]["eos_id"]]
