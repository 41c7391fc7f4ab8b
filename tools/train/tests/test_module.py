"""The exporter checked through the taskmoe Python module, all in one process: train a tiny model
with the PyTorch reference, export it, convert a task with taskmoe.convert, translate and score
with taskmoe.Translator, and compare with the reference's own greedy / beam outputs and
log-probabilities.

Run: /usr/bin/python3 -m unittest discover -s tools/train/tests   (scripts/test.sh runs it with
the module installed in build/venv, so there it never skips)
"""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(TRAIN))
sys.path.insert(0, TRAIN)

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import taskmoe
except ImportError:  # pragma: no cover
    taskmoe = None
try:
    import sentencepiece
except ImportError:  # pragma: no cover
    sentencepiece = None

SPM = os.path.join(ROOT, "tests", "data", "fixtures", "sentencepiece.model")
TEXTS = ["Open file", "Save the current document under a new name", "Fichier", "Error",
         "The selected printer is not available."]


@unittest.skipIf(torch is None, "python3-torch is not installed: exporter check skipped")
@unittest.skipIf(sentencepiece is None, "python3-sentencepiece is not installed: exporter check skipped")
@unittest.skipIf(taskmoe is None, "the taskmoe Python module is not built/installed: exporter check skipped "
                                  "(pip install --no-build-isolation . into a venv, docs/python.md; "
                                  "scripts/test.sh does)")
class ExportThroughModuleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import make_fixtures as mf
        from taskmoe_ref.checkpoint_io import export_checkpoint
        from taskmoe_ref.model import TaskMoEModel

        torch.manual_seed(0)
        cls.mf = mf
        cls.sp = sentencepiece.SentencePieceProcessor(model_file=SPM)
        cls.tmp = tempfile.TemporaryDirectory()
        # The fixtures' task_target setup (pre-norm, relu, task-routed MoE in both stacks), briefly
        # trained to copy so that outputs end with </s> and beams finish.
        cfg = mf.make_config(cls.sp.get_piece_size(), "task:target", "task:target", "pre", "relu", "sinusoidal", True)
        cls.model = TaskMoEModel(cfg)
        mf.randomize(cls.model, 77)
        mf.fit_copy_task(cls.model, 150, 78)
        cls.checkpoint = os.path.join(cls.tmp.name, "ckpt")
        export_checkpoint(cls.model, SPM, cls.checkpoint, "float32")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def convert(self, task, quantization):
        out = os.path.join(self.tmp.name, "%s.%s.tmoe" % (task, quantization))
        taskmoe.convert(self.checkpoint, task, out, quantization=quantization, overwrite=True)
        return taskmoe.Translator(out)

    def test_list_tasks_is_the_exported_config(self):
        self.assertEqual([t.name for t in taskmoe.list_tasks(self.checkpoint)],
                         [t.name for t in self.model.cfg.tasks])

    def test_float32_file_translates_exactly_as_the_reference(self):
        from taskmoe_ref.decode import beam_search, greedy, source_ids
        eos = self.model.cfg.model.eos_id
        max_len = self.mf.MAX_LEN
        for task in [t.name for t in self.model.cfg.tasks]:
            with self.subTest(task=task):
                tr = self.convert(task, "float32")
                srcs = [source_ids(self.model, self.sp, text, task) for text in TEXTS]
                ref = greedy(self.model, srcs, [task] * len(srcs), max_len)
                got = tr.translate_batch(TEXTS, beam_size=1, max_decoding_length=max_len)
                self.assertEqual([r.tokens[0] for r in got],
                                 [h.tokens[:-1] if h.tokens and h.tokens[-1] == eos else h.tokens for h in ref])
                for r, h in zip(got, ref):
                    self.assertAlmostEqual(r[0].score, h.score, delta=1e-4 * max(1.0, abs(h.score)))
                beams = beam_search(self.model, srcs, [task] * len(srcs), beam_size=4, length_penalty=1.0,
                                    max_len=max_len, num_hypotheses=2)
                got = tr.translate_batch(TEXTS, beam_size=4, num_hypotheses=2, max_decoding_length=max_len)
                for r, hyps in zip(got, beams):
                    self.assertEqual(r.tokens, [h.tokens[:-1] if h.tokens[-1] == eos else h.tokens for h in hyps])

    def test_scores_equal_the_references_teacher_forced_log_probabilities(self):
        from taskmoe_ref.decode import source_ids
        task = "en-de"
        tr = self.convert(task, "float32")
        m = self.model.cfg.model
        tid = torch.tensor([self.model.cfg.task_index(task)])
        targets = [self.sp.encode(t) for t in ["Datei öffnen", "Fehler", "Die Datei", ""]]
        for text in TEXTS[:3]:
            src = source_ids(self.model, self.sp, text, task)
            results = tr.score_batch_tokens([src[1:-1]] * len(targets), targets)
            with torch.no_grad():
                mem, pad, _ = self.model.encode(torch.tensor([src]), tid)
                for tgt, r in zip(targets, results):
                    logits, _ = self.model.decode(torch.tensor([[m.bos_id] + tgt]), mem, pad, tid)
                    logp = torch.log_softmax(logits[0].double(), dim=-1)
                    expected = [float(logp[i, t]) for i, t in enumerate(tgt + [m.eos_id])]
                    self.assertEqual(r.tokens, tgt + [m.eos_id])
                    for a, b in zip(r.log_probs, expected):
                        self.assertAlmostEqual(a, b, delta=1e-4 * max(1.0, abs(b)))

    def test_int8_file_stays_close_to_the_reference(self):
        from taskmoe_ref.decode import greedy, source_ids
        task = "de-en"
        tr = self.convert(task, "int8")
        exact = self.convert(task, "float32")
        srcs = [source_ids(self.model, self.sp, text, task) for text in TEXTS]
        ref = greedy(self.model, srcs, [task] * len(srcs), self.mf.MAX_LEN)
        # int8 is not bit-exact: compare scores of the reference's own outputs, not argmax paths.
        eos = self.model.cfg.model.eos_id
        tgts = [h.tokens[:-1] for h in ref if h.tokens and h.tokens[-1] == eos]
        srcp = [s[1:-1] for s, h in zip(srcs, ref) if h.tokens and h.tokens[-1] == eos]
        self.assertTrue(tgts)
        for a, b in zip(tr.score_batch_tokens(srcp, tgts), exact.score_batch_tokens(srcp, tgts)):
            self.assertAlmostEqual(a.score, b.score, delta=0.1 * max(1.0, abs(b.score)))


if __name__ == "__main__":
    unittest.main()
