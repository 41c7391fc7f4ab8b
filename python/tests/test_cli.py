"""The module's results equal the C++ CLI's (taskmoe-translate) on the demo model, option by option."""
import os
import subprocess

import pytest

import taskmoe
from conftest import SENTENCES


def run_cli(cli, model, lines, *args):
    text = "\n".join(lines) + "\n"
    p = subprocess.run([cli, "--model", model, "--quiet", *args], input=text.encode("utf-8"),
                       capture_output=True, check=False)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return p.stdout.decode("utf-8").split("\n")[:-1]


def parse_nbest(lines):
    out = {}
    for line in lines:
        index, text, score = line.split(" ||| ")
        out.setdefault(int(index), []).append((text, float(score)))
    return out


@pytest.fixture(scope="module")
def cli_tmoe(convert_cli, demo_dir, tmp_path_factory):
    """The same task converted by taskmoe-convert, so both conversion paths are compared too."""
    out = str(tmp_path_factory.mktemp("cli") / "en-de.tmoe")
    subprocess.run([convert_cli, "--checkpoint", demo_dir, "--task", "en-de", "--output", out, "--quiet"],
                   check=True)
    return out


@pytest.mark.parametrize("beam", [1, 4])
def test_one_best_texts_equal_the_cli(translate_cli, cli_tmoe, demo, beam):
    expected = run_cli(translate_cli, cli_tmoe, SENTENCES, "--beam", str(beam))
    got = [r.hypotheses[0] for r in demo.translate_batch(SENTENCES, beam_size=beam)]
    assert len(expected) == len(SENTENCES)
    assert got == expected


def test_nbest_texts_and_scores_equal_the_cli(translate_cli, cli_tmoe, demo):
    expected = parse_nbest(run_cli(translate_cli, cli_tmoe, SENTENCES, "--beam", "4", "--n-best", "3",
                                   "--length-penalty", "0.6", "--max-length", "40"))
    results = demo.translate_batch(SENTENCES, beam_size=4, num_hypotheses=3, length_penalty=0.6,
                                   max_decoding_length=40)
    for i, r in enumerate(results):
        assert [t for t, _ in expected[i]] == r.hypotheses, SENTENCES[i]
        # The CLI prints %.6f of the same float.
        assert [s for _, s in expected[i]] == [float("%.6f" % s) for s in r.scores], SENTENCES[i]


def test_sampling_with_a_seed_equals_the_cli(translate_cli, cli_tmoe, demo):
    expected = run_cli(translate_cli, cli_tmoe, SENTENCES, "--sampling-topk", "8", "--sampling-temperature",
                       "0.8", "--seed", "1234")
    got = demo.translate_batch(SENTENCES, beam_size=1, sampling_topk=8, sampling_temperature=0.8, seed=1234)
    assert [r.hypotheses[0] for r in got] == expected


def test_threads_and_small_batches_equal_the_cli(translate_cli, cli_tmoe, demo_tmoe):
    expected = run_cli(translate_cli, cli_tmoe, SENTENCES, "--beam", "2", "--batch-size", "3", "--threads", "2")
    t = taskmoe.Translator(demo_tmoe, threads=2)
    got = [r.hypotheses[0] for r in t.translate_batch(SENTENCES, beam_size=2, max_batch_size=3)]
    assert got == expected


def test_checkpoint_mode_equals_the_cli(translate_cli, demo_dir):
    lines = SENTENCES[:5]
    p = subprocess.run([translate_cli, "--checkpoint", demo_dir, "--task", "en-fr", "--beam", "4", "--quiet"],
                       input=("\n".join(lines) + "\n").encode(), capture_output=True, check=True)
    expected = p.stdout.decode("utf-8").split("\n")[:-1]
    t = taskmoe.Translator.from_checkpoint(demo_dir, "en-fr")
    assert [r.hypotheses[0] for r in t.translate_batch(lines, beam_size=4)] == expected


def test_both_conversions_hold_the_same_tensors(cli_tmoe, demo_tmoe):
    # The files differ only in the "created" time stamp of the metadata: same size, same model.
    assert os.path.getsize(cli_tmoe) == os.path.getsize(demo_tmoe)
    a, b = taskmoe.Translator(cli_tmoe), taskmoe.Translator(demo_tmoe)
    assert a.config == b.config and a.task == b.task
