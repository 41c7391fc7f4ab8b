"""The Translator API: properties, options, unicode, big batches, and errors with the library's messages."""
import os
import shutil

import pytest

import taskmoe
from conftest import SENTENCES


def test_properties(demo, demo_dir):
    assert demo.task.name == "en-de" and isinstance(demo.task, taskmoe.Task)
    assert (demo.task.source, demo.task.target, demo.task.target_tag) == ("en", "de", "<2de>")
    assert demo.config["model"]["d_model"] == 256 and demo.config["moe"]["num_experts"] == 8
    assert demo.isa in ("generic", "avx2", "avx512") and demo.isa == taskmoe.active_isa()
    assert demo.max_input_length() == demo.config["model"]["max_positions"] - 2
    assert "en-de" in repr(demo)
    assert taskmoe.__version__.count(".") == 2


def test_results_carry_texts_tokens_and_scores(demo):
    r = demo.translate_batch(["Could not open the file."], beam_size=4, num_hypotheses=3)[0]
    assert len(r) == 3 == len(r.hypotheses) == len(r.scores) == len(r.tokens)
    assert r.scores == sorted(r.scores, reverse=True)
    assert [h.text for h in r] == r.hypotheses and [h.normalized_score for h in r] == r.scores
    assert r[-1].tokens == r.tokens[-1] and not r.truncated
    with pytest.raises(IndexError):
        r[3]
    best = r[0]
    # normalized_score = score / (tokens + EOS)^length_penalty with the default penalty 1.
    assert best.normalized_score == pytest.approx(best.score / (len(best.tokens) + 1), rel=1e-5)
    assert demo.translate_batch(["Could not open the file."], return_scores=False)[0][0].score == 0


def test_token_api_equals_text_api(demo):
    texts = SENTENCES[:6]
    by_text = demo.translate_batch(texts, beam_size=3)
    by_tokens = demo.translate_batch_tokens([demo.encode(t) for t in texts], beam_size=3)
    assert [r.tokens for r in by_text] == [r.tokens for r in by_tokens]
    assert [r.hypotheses for r in by_text] == [r.hypotheses for r in by_tokens]


def test_target_prefix_and_decoding_options(demo):
    r = demo.translate_batch(["Could not open the file."], beam_size=2, target_prefix="Die Datei")[0]
    assert r.hypotheses[0].startswith("Die Datei")
    prefix = demo.encode("Es")
    r = demo.translate_batch_tokens([demo.encode("Could not open the file.")], target_prefix=prefix)[0]
    assert r.tokens[0][:len(prefix)] == prefix
    short = demo.translate_batch(["The selected printer is not available."], beam_size=1, max_decoding_length=3)[0]
    assert len(short.tokens[0]) <= 3
    long_min = demo.translate_batch(["Open file"], beam_size=1, min_decoding_length=6)[0]
    assert len(long_min.tokens[0]) >= 6
    blocked = demo.translate_batch(["file file file file file file"], beam_size=1, no_repeat_ngram_size=1)[0]
    assert len(set(blocked.tokens[0])) == len(blocked.tokens[0])


def test_unicode_round_trips_as_str(demo):
    texts = ["Café naïve Straße", "🙂👍🏽🇩🇪", "שלום عالم", "日本語", "a\x00b", "\u200f\u202etext"]
    for r in demo.translate_batch(texts, beam_size=1):
        assert isinstance(r.hypotheses[0], str)
    # Non-ASCII output text comes back decoded, not as bytes or escapes.
    out = demo.translate_batch(["Could not open the file."], beam_size=4)[0].hypotheses[0]
    assert "ö" in out or out.isascii()
    with pytest.raises(UnicodeEncodeError):
        demo.translate_batch(["fine", "lone surrogate \ud800"])


def test_blank_and_truncated_inputs(demo):
    r = demo.translate_batch(["", "  \t"])
    assert [x.hypotheses for x in r] == [[""], [""]] and [x.tokens for x in r] == [[[]], [[]]]
    long_text = " ".join(["file"] * 400)
    cut = demo.translate_batch([long_text], beam_size=1, max_decoding_length=4)[0]
    assert cut.truncated
    assert demo.translate_batch([long_text], beam_size=1, max_decoding_length=4, max_input_length=3)[0].truncated
    with pytest.raises(taskmoe.InvalidArgumentError, match="more than max_input_length 3"):
        demo.translate_batch([long_text], max_input_length=3, truncate_input=False)


def test_a_big_batch_keeps_order(demo):
    # 2,000 inputs from a few distinct sentences, shuffled deterministically: every result must be
    # the one-by-one result of its own input, whatever the length sorting did.
    base = [s for s in SENTENCES if s.strip()][:8]
    expected = {s: demo.translate_batch([s], beam_size=1, max_decoding_length=12)[0].hypotheses[0] for s in base}
    texts = [base[(i * 7 + i // 3) % len(base)] for i in range(2000)]
    got = demo.translate_batch(texts, beam_size=1, max_decoding_length=12, max_batch_size=64)
    assert len(got) == len(texts)
    assert [r.hypotheses[0] for r in got] == [expected[t] for t in texts]
    by_tokens = demo.translate_batch(texts[:300], beam_size=1, max_decoding_length=12, max_batch_size=500,
                                     batch_type="tokens")
    assert [r.hypotheses[0] for r in by_tokens] == [expected[t] for t in texts[:300]]


@pytest.mark.parametrize("options, message", [
    (dict(beam_size=0), "beam_size must be >= 1, got 0"),
    (dict(beam_size=2, num_hypotheses=3), "num_hypotheses must be in [1, beam_size = 2], got 3"),
    (dict(beam_size=2, sampling_topk=5), "random sampling (sampling_topk != 1) needs beam_size = 1"),
    (dict(sampling_topp=0.0), "sampling_topp must be in (0, 1]"),
    (dict(max_decoding_length=0), "max_decoding_length must be >= 1"),
    (dict(batch_type="sentences"), "batch_type must be 'examples' or 'tokens', got 'sentences'"),
    (dict(max_batch_size=-1), "max_batch_size must be >= 0, got -1"),
])
def test_bad_options_raise_the_library_message(demo, options, message):
    with pytest.raises(taskmoe.InvalidArgumentError) as e:
        demo.translate_batch(["Open file"], **options)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError) and isinstance(e.value, taskmoe.Error)


def test_kv_cache_precision(demo, demo_tmoe):
    # An int8 file: "auto" keeps the attention caches in float16, so it equals "float16" exactly
    # and differs (slightly) from "float32".
    f16 = taskmoe.Translator(demo_tmoe, kv_cache="float16")
    f32 = taskmoe.Translator(demo_tmoe, kv_cache="float32")
    scores = [[r[0].score for r in t.translate_batch(SENTENCES, beam_size=1)] for t in (demo, f16, f32)]
    assert scores[0] == scores[1]
    assert scores[0] != scores[2]
    with pytest.raises(taskmoe.InvalidArgumentError) as e:
        taskmoe.Translator(demo_tmoe, kv_cache="bfloat16")
    assert str(e.value) == "kv_cache must be 'auto', 'float32' or 'float16', got 'bfloat16'"


def test_int8_weights(demo, demo_tmoe):
    # "full" keeps the file's int8 values, "narrow" requantizes rows to [-64, 64] (the faster AVX2
    # kernel without VNNI); "auto" is one of the two, whichever this CPU's kernel calls for.
    full = taskmoe.Translator(demo_tmoe, int8_weights="full")
    narrow = taskmoe.Translator(demo_tmoe, int8_weights="narrow")
    scores = [[r[0].score for r in t.translate_batch(SENTENCES, beam_size=1)] for t in (demo, full, narrow)]
    assert scores[1] != scores[2]
    assert scores[0] in (scores[1], scores[2])
    with pytest.raises(taskmoe.InvalidArgumentError) as e:
        taskmoe.Translator(demo_tmoe, int8_weights="int7")
    assert str(e.value) == "int8 weights must be auto, full or narrow, got 'int7'"


def test_bad_tokens_and_python_types(demo):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        demo.translate_batch_tokens([[10**6]])
    with pytest.raises(TypeError, match="texts must be a list of str, not str"):
        demo.translate_batch("not a list")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, not int"):
        demo.translate_batch(["a", 2])
    assert len(demo.translate_batch(("a tuple", "works"))) == 2


def test_file_errors(demo_tmoe, demo_dir, tmp_path):
    with pytest.raises(taskmoe.FileError) as e:
        taskmoe.Translator(str(tmp_path / "missing.tmoe"))
    assert isinstance(e.value, OSError) and "missing.tmoe" in str(e.value)
    bad = tmp_path / "bad.tmoe"
    data = bytearray(open(demo_tmoe, "rb").read())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: a checksum error
    bad.write_bytes(bytes(data))
    with pytest.raises(taskmoe.FormatError) as e:
        taskmoe.Translator(str(bad))
    assert e.value.file == str(bad) and str(e.value) == e.value.file + ": " + e.value.problem
    assert not isinstance(e.value, OSError)
    truncated = tmp_path / "short.tmoe"
    truncated.write_bytes(bytes(data[:100]))
    with pytest.raises(taskmoe.FormatError):
        taskmoe.Translator(str(truncated))
    with pytest.raises(taskmoe.InvalidArgumentError, match="holds task 'en-de', but task 'de-en' was requested"):
        taskmoe.Translator(demo_tmoe, expected_task="de-en")
    with pytest.raises(taskmoe.InvalidArgumentError, match="threads must be >= 1"):
        taskmoe.Translator(demo_tmoe, threads=0)
    with pytest.raises(taskmoe.Error, match="xx-yy"):
        taskmoe.Translator.from_checkpoint(demo_dir, "xx-yy")


def test_config_errors_are_format_errors(demo_dir, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(demo_dir, ck)
    cfg = (ck / "config.json").read_text().replace('"d_model": 256', '"d_model": -4')
    (ck / "config.json").write_text(cfg)
    # The checkpoint reader reports a bad config.json as a FormatError naming the file.
    with pytest.raises(taskmoe.FormatError) as e:
        taskmoe.Translator.from_checkpoint(str(ck), "en-de")
    assert e.value.file == str(ck / "config.json")
    assert e.value.problem == "model.d_model: must be > 0, got -4"
    assert issubclass(taskmoe.ConfigError, taskmoe.FormatError)


def test_vocabulary_map(demo, demo_dir, demo_tmoe, tmp_path):
    # A map whose always-line lists the pieces of the full translations (and a rule per source
    # piece adding nothing new): greedy decoding over that shortlist gives the same translations,
    # since each step's full argmax is a candidate. Scores are normalized over the candidates only.
    sentences = [s for s in SENTENCES[:5] if s.strip()]
    full = demo.translate_batch(sentences, beam_size=1)
    sp = __import__("sentencepiece").SentencePieceProcessor(
        model_file=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "models", "demo", "sentencepiece.model"))
    names = [sp.id_to_piece(t) for r in full for t in r.tokens[0]]
    vmap = tmp_path / "vmap.txt"
    vmap.write_text("\t" + " ".join(sorted(set(names))) + "\n", encoding="utf-8")
    t = taskmoe.Translator(demo_tmoe, vocabulary_map=vmap)
    short = t.translate_batch(sentences, beam_size=1, use_vocabulary_map=True)
    assert [r.hypotheses for r in short] == [r.hypotheses for r in full]
    assert all(s.scores[0] >= f.scores[0] for s, f in zip(short, full))  # fewer tokens share the mass
    assert [r.scores for r in t.translate_batch(sentences, beam_size=1)] == [r.scores for r in full]  # off by default
    with pytest.raises(taskmoe.InvalidArgumentError, match="no vocabulary map"):
        demo.translate_batch(sentences, use_vocabulary_map=True)
    (tmp_path / "bad.txt").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(taskmoe.FormatError, match="line 1: no tab"):
        taskmoe.Translator(demo_tmoe, vocabulary_map=tmp_path / "bad.txt")
    assert t.has_vocabulary_map and not demo.has_vocabulary_map
    # The same map embedded by the converter: the file alone translates like the pair above.
    embedded = tmp_path / "embedded.tmoe"
    taskmoe.convert(demo_dir, "en-de", embedded, vocabulary_map=vmap)
    e = taskmoe.Translator(embedded)
    assert e.has_vocabulary_map
    assert [r.scores for r in e.translate_batch(sentences, beam_size=1, use_vocabulary_map=True)] == \
        [r.scores for r in short]
    with pytest.raises(taskmoe.FormatError, match="line 1: no tab"):
        taskmoe.convert(demo_dir, "en-de", tmp_path / "x.tmoe", vocabulary_map=tmp_path / "bad.txt")
    assert not (tmp_path / "x.tmoe").exists()
