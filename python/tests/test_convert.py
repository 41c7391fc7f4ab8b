"""taskmoe.convert and taskmoe.list_tasks against the checkpoint and the translator."""
import json
import os

import pytest

import taskmoe


def test_list_tasks_follows_the_checkpoint(demo_dir):
    with open(os.path.join(demo_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    tasks = taskmoe.list_tasks(demo_dir)
    assert [t.name for t in tasks] == [t["name"] for t in cfg["tasks"]]
    assert all(t.target_tag == cfg["target_tags"][t.target] for t in tasks) if "target_tags" in cfg else True


@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_convert_then_translate(demo_dir, tmp_path, quantization):
    out = str(tmp_path / ("fr-en.%s.tmoe" % quantization))
    info = taskmoe.convert(demo_dir, "fr-en", out, quantization=quantization)
    assert info["path"] == out and info["file_size"] == os.path.getsize(out) and info["tensor_count"] > 0
    t = taskmoe.Translator(out)
    assert t.task.name == "fr-en"
    text = t.translate_batch(["Sélectionnez un dossier."], beam_size=4)[0].hypotheses[0]
    assert text
    v = taskmoe.verify(demo_dir, "fr-en", out, probes=4)
    assert v["probes"] == 4
    if quantization == "float32":  # extraction is exact: same as the full checkpoint
        full = taskmoe.Translator.from_checkpoint(demo_dir, "fr-en")
        assert full.translate_batch(["Sélectionnez un dossier."], beam_size=4)[0].hypotheses[0] == text
        assert v["identical"] == 4 and v["max_abs_logit_diff"] == 0
    elif quantization == "int8":  # rounded weights: close, not equal
        assert v["max_abs_logit_diff"] > 0
    import pathlib  # paths may be str or os.PathLike everywhere
    by_text = taskmoe.verify(pathlib.Path(demo_dir), "fr-en", pathlib.Path(out),
                             texts=["Sélectionnez un dossier.", "Fichier"])
    assert taskmoe.Translator(pathlib.Path(out)).task.name == "fr-en"
    assert by_text["probes"] == 2


def test_convert_embeddings(demo_dir, tmp_path):
    sizes = {}
    for e in ("int8", "float16", "float32"):
        out = str(tmp_path / ("en-de.%s.tmoe" % e))
        sizes[e] = taskmoe.convert(demo_dir, "en-de", out, embeddings=e)["file_size"]
        assert taskmoe.Translator(out).translate_batch(["Open file"])[0].hypotheses[0]
    default = taskmoe.convert(demo_dir, "en-de", str(tmp_path / "default.tmoe"))["file_size"]
    assert default == sizes["float16"] and sizes["int8"] < sizes["float16"] < sizes["float32"]
    with pytest.raises(taskmoe.InvalidArgumentError, match="expected float16, int8 or float32"):
        taskmoe.convert(demo_dir, "en-de", str(tmp_path / "x.tmoe"), embeddings="int4")
    with pytest.raises(taskmoe.InvalidArgumentError, match="applies to quantization='int8' only"):
        taskmoe.convert(demo_dir, "en-de", str(tmp_path / "y.tmoe"), quantization="float32", embeddings="int8")


def test_convert_errors(demo_dir, tmp_path):
    out = str(tmp_path / "x.tmoe")
    with pytest.raises(taskmoe.Error, match="xx-yy"):
        taskmoe.convert(demo_dir, "xx-yy", out)
    assert not os.path.exists(out)
    with pytest.raises(taskmoe.InvalidArgumentError, match="int4"):
        taskmoe.convert(demo_dir, "en-de", out, quantization="int4")
    taskmoe.convert(demo_dir, "en-de", out)
    with pytest.raises(taskmoe.FileError):
        taskmoe.convert(demo_dir, "en-de", out)  # exists
    taskmoe.convert(demo_dir, "en-de", out, overwrite=True)
    with pytest.raises(taskmoe.FormatError, match="not a checkpoint"):  # the library's choice
        taskmoe.convert(str(tmp_path / "no-such-checkpoint"), "en-de", out, overwrite=True)
    with pytest.raises(taskmoe.FileError):
        taskmoe.convert(demo_dir, "en-de", str(tmp_path / "no" / "dir" / "x.tmoe"))
    with pytest.raises(taskmoe.InvalidArgumentError, match="holds task 'en-de', not 'fr-en'"):
        taskmoe.verify(demo_dir, "fr-en", out)


def test_an_interrupted_conversion_leaves_nothing_behind(demo_dir, tmp_path):
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    out = tmp_path / "x.tmoe"
    old = signal.signal(signal.SIGALRM, interrupt)
    interrupted = 0
    try:
        for delay in (0.002, 0.005, 0.01, 0.02) * 3:
            signal.setitimer(signal.ITIMER_REAL, delay)
            try:
                taskmoe.convert(demo_dir, "en-de", str(out), quantization="float32", overwrite=True)
                signal.setitimer(signal.ITIMER_REAL, 0)
                out.unlink()
            except KeyboardInterrupt:
                signal.setitimer(signal.ITIMER_REAL, 0)
                left = sorted(p.name for p in tmp_path.iterdir())
                if left == ["x.tmoe"]:  # the alarm came after convert had returned
                    out.unlink()
                    continue
                interrupted += 1
                assert left == []  # no output, no temporary file
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert interrupted > 0
