"""translate_iterable / score_iterable: lazy, bounded, order preserved, same results as a batch."""
import itertools

import pytest

import taskmoe
from conftest import SENTENCES


def test_results_come_in_input_order_and_equal_translate_batch(demo):
    texts = [SENTENCES[(i * 5) % len(SENTENCES)] + (" %d" % i) for i in range(90)]
    expected = [r.hypotheses for r in demo.translate_batch(texts, beam_size=2, max_decoding_length=20)]
    got = [r.hypotheses for r in demo.translate_iterable(iter(texts), max_batch_size=4, beam_size=2,
                                                         max_decoding_length=20)]
    assert got == expected
    got = [r.hypotheses for r in demo.translate_iterable((t for t in texts), max_batch_size=500,
                                                         batch_type="tokens", beam_size=2, max_decoding_length=20)]
    assert got == expected


def test_the_source_is_read_lazily_with_a_bounded_buffer(demo):
    pulled = []

    def source():
        for i in itertools.count():  # endless
            pulled.append(i)
            yield "Open file %d" % i

    results = demo.translate_iterable(source(), max_batch_size=2, buffer_size=5, beam_size=1,
                                      max_decoding_length=6)
    assert pulled == []  # nothing is read before the first result is asked for
    first = next(results)
    assert len(pulled) <= 6 and isinstance(first, taskmoe.TranslationResult)
    taken = [first] + list(itertools.islice(results, 11))
    assert len(taken) == 12 and len(pulled) <= 16
    # The default buffer is 16 batches of examples, as CTranslate2 reads ahead.
    pulled.clear()
    next(demo.translate_iterable(source(), max_batch_size=3, beam_size=1, max_decoding_length=4))
    assert len(pulled) <= 3 * 16 + 1


def test_empty_iterables_and_bad_arguments(demo):
    assert list(demo.translate_iterable([])) == []
    with pytest.raises(taskmoe.InvalidArgumentError, match="max_batch_size must be >= 1"):
        list(demo.translate_iterable(["a"], max_batch_size=0))
    with pytest.raises(taskmoe.InvalidArgumentError, match="beam_size must be >= 1"):
        list(demo.translate_iterable(["a"], beam_size=0))


def test_score_iterable_equals_score_batch(demo):
    src = [s for s in SENTENCES if s.strip()]
    tgt = [r.hypotheses[0] for r in demo.translate_batch(src, beam_size=1)]
    expected = [r.log_probs for r in demo.score_batch(src, tgt)]
    got = [r.log_probs for r in demo.score_iterable(iter(src), iter(tgt), max_batch_size=2)]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, abs=1e-5)
    with pytest.raises(taskmoe.InvalidArgumentError, match="different lengths"):
        list(demo.score_iterable(src, tgt[:-1]))
