"""Tests of the PyTorch reference model, trainer pieces and checkpoint export.

Run: /usr/bin/python3 -m unittest discover -s tools/train/tests   (skips when torch is missing)
"""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

if torch is not None:
    from taskmoe_ref.checkpoint_io import export_checkpoint, load_checkpoint, read_safetensors, write_safetensors
    from taskmoe_ref.config import Config, ModelConfig, MoEConfig, StackMoE, Task
    from taskmoe_ref.decode import beam_search, greedy
    from taskmoe_ref.model import TaskMoEModel, route

SETUPS = {
    "task_target": ("task:target", "task:target"),
    "task_pair": ("task:pair", "task:pair"),
    "token_task": ("token", "task:target"),
    "token_token": ("token", "token"),
    "dense": ("dense", "dense"),
}


def tiny_config(enc="task:target", dec="task:target", norm="pre", act="relu", pos="sinusoidal", shared=True):
    tasks = [Task("en-de", "en", "de"), Task("de-en", "de", "en"), Task("en-fr", "en", "fr")]

    def stack(r):
        if r == "dense":
            return StackMoE("dense", [], [])
        keys = sorted({t.target for t in tasks}) if r == "task:target" else [t.name for t in tasks] if r == "task:pair" else []
        return StackMoE(r, [1], keys)

    m = ModelConfig(d_model=16, n_heads=2, d_ff=24, encoder_layers=2, decoder_layers=2, vocab_size=40,
                    max_positions=32, norm=norm, activation=act, positional_encoding=pos, shared_embeddings=shared)
    moe = MoEConfig(num_experts=4, top_k=2, d_ff_expert=12, task_embedding_dim=8, encoder=stack(enc), decoder=stack(dec))
    return Config(m, moe, tasks, {"de": "<2de>", "en": "<2en>", "fr": "<2fr>"})


def rand_batch(n=6, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    srcs = [[4 + int(x) for x in torch.randint(0, vocab - 4, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g)] + [3]
            for _ in range(n)]
    return srcs


@unittest.skipIf(torch is None, "python3-torch is not installed: reference-model tests skipped "
                                "(scripts/install-deps.sh installs it)")
class ReferenceModelTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)

    def test_routing_softmax_topk_renormalised_with_tie(self):
        w = torch.tensor([[1.0], [2.0], [2.0], [0.0]])
        p, idx, g = route(w, torch.tensor([[1.0]]), 2)
        self.assertEqual(idx[0].tolist(), [1, 2])          # tie: lower index first
        self.assertAlmostEqual(float(g[0, 0]), 0.5, places=6)
        e = torch.exp(torch.tensor([1.0, 2.0, 2.0, 0.0]))
        self.assertTrue(torch.allclose(p[0], e / e.sum()))

    def test_task_routing_sends_every_token_of_a_task_to_the_same_experts(self):
        model = TaskMoEModel(tiny_config("task:target", "task:pair")).train()
        srcs = rand_batch(6)
        src = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in srcs], batch_first=True)
        tids = torch.tensor([0, 1, 2, 0, 1, 2])
        _, pad, auxes = model.encode(src, tids)
        _, top1 = auxes[0]
        keep_rows = (~pad).nonzero()
        for r in range(6):
            experts = {int(top1[i]) for i, (b, _) in enumerate(keep_rows.tolist()) if b == r}
            self.assertEqual(len(experts), 1)
            expected, _ = model.task_route(model.cfg.tasks[int(tids[r])].name, "encoder", 1)
            self.assertEqual(experts, {expected[0]})

    def test_task_routed_layer_equals_its_two_experts_with_fixed_gates(self):
        model = TaskMoEModel(tiny_config()).eval()
        layer = model.decoder.layers[1]
        x = torch.randn(3, 5, 16)
        tv = model.decoder.task_vec(torch.tensor([1, 1, 1]))
        y, _ = layer.moe(x, tv)
        experts, gates = model.task_route("de-en", "decoder", 1)
        ref = torch.zeros_like(x)
        for e, g in zip(experts, gates):
            w1, b1 = layer.moe.experts.fc1.weight[e], layer.moe.experts.fc1.bias[e]
            w2, b2 = layer.moe.experts.fc2.weight[e], layer.moe.experts.fc2.bias[e]
            ref += g * F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)
        self.assertTrue(torch.allclose(y, ref, atol=1e-6))

    def test_incremental_decoding_equals_full_recomputation(self):
        for name, (enc, dec) in SETUPS.items():
            for norm, act, pos, shared in (("pre", "relu", "sinusoidal", True), ("post", "gelu", "learned", False)):
                with self.subTest(setup=name, norm=norm):
                    model = TaskMoEModel(tiny_config(enc, dec, norm, act, pos, shared)).eval()
                    srcs = rand_batch(4)
                    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in srcs], batch_first=True)
                    tids = torch.tensor([0, 1, 2, 1])
                    tgt = torch.randint(4, 40, (4, 6))
                    tgt[:, 0] = 2
                    with torch.no_grad():
                        mem, pad, _ = model.encode(src, tids)
                        full, _ = model.decode(tgt, mem, pad, tids)
                        cache = [dict() for _ in model.decoder.layers]
                        steps = [model.decode(tgt[:, t:t + 1], mem, pad, tids, cache=cache, start=t)[0] for t in range(6)]
                    self.assertTrue(torch.allclose(full, torch.cat(steps, 1), atol=1e-5))

    def test_padding_does_not_change_outputs(self):
        model = TaskMoEModel(tiny_config("token", "task:target")).eval()
        srcs = rand_batch(5)
        tasks = ["en-de", "de-en", "en-fr", "en-de", "en-fr"]
        batched = greedy(model, srcs, tasks, max_len=10)
        for s, t, h in zip(srcs, tasks, batched):
            alone = greedy(model, [s], [t], max_len=10)[0]
            self.assertEqual(alone.tokens, h.tokens)

    def test_beam_one_equals_greedy_and_beam_scores_are_sorted(self):
        model = TaskMoEModel(tiny_config()).eval()
        srcs, tasks = rand_batch(5), ["en-de", "de-en", "en-fr", "en-de", "en-fr"]
        g = greedy(model, srcs, tasks, max_len=12)
        b1 = beam_search(model, srcs, tasks, beam_size=1, max_len=12, length_penalty=0.0)
        for x, y in zip(g, b1):
            self.assertEqual(x.tokens, y[0].tokens)
        b4 = beam_search(model, srcs, tasks, beam_size=4, max_len=12, num_hypotheses=4)
        for hyps in b4:
            self.assertGreaterEqual(len(hyps), 1)
            norm = [h.normalized for h in hyps]
            self.assertEqual(norm, sorted(norm, reverse=True))

    def test_a_few_training_steps_reduce_the_loss(self):
        model = TaskMoEModel(tiny_config("token", "task:target")).train()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        srcs = rand_batch(8, seed=3)
        src = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in srcs], batch_first=True)
        tout = src.clone()                       # learn to copy
        tin = torch.cat([torch.full((8, 1), 2), tout[:, :-1]], 1)
        tids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        losses = []
        for _ in range(60):
            logits, aux = model(src, tin, tids)
            loss = F.cross_entropy(logits.reshape(-1, 40), tout.reshape(-1), ignore_index=0)
            total = loss + 0.01 * TaskMoEModel.balance_loss(aux)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(loss))
        self.assertLess(losses[-1], 0.5 * losses[0])

    def test_export_then_import_gives_identical_outputs(self):
        for name, (enc, dec) in SETUPS.items():
            with self.subTest(setup=name), tempfile.TemporaryDirectory() as d:
                model = TaskMoEModel(tiny_config(enc, dec)).eval()
                spm = os.path.join(d, "sp.model")
                with open(spm, "wb") as f:
                    f.write(b"not a real model")
                out = os.path.join(d, "ckpt")
                export_checkpoint(model, spm, out, "float32")
                again = load_checkpoint(out)
                srcs, tasks = rand_batch(4), ["en-de", "de-en", "en-fr", "de-en"]
                self.assertEqual([h.tokens for h in greedy(model, srcs, tasks, 10)],
                                 [h.tokens for h in greedy(again, srcs, tasks, 10)])
                for k, v in model.state_dict().items():
                    self.assertTrue(torch.equal(v, again.state_dict()[k]), k)
                self.assertEqual(sorted(os.listdir(out)), ["config.json", "model.safetensors", "sentencepiece.model"])

    def test_safetensors_round_trip_all_dtypes(self):
        with tempfile.TemporaryDirectory() as d:
            t = {"a": torch.randn(3, 5), "b": torch.randn(7).half(), "c": torch.randn(2, 2, 2).bfloat16()}
            write_safetensors(os.path.join(d, "x.safetensors"), t)
            back = read_safetensors(os.path.join(d, "x.safetensors"))
            for k in t:
                self.assertEqual(back[k].dtype, t[k].dtype)
                self.assertTrue(torch.equal(back[k], t[k]))

    def test_config_validation_names_the_problem(self):
        cfg = tiny_config()
        cfg.moe.encoder.task_keys = ["de"]
        with self.assertRaisesRegex(ValueError, "task_keys lacks 'en'"):
            cfg.validate()
        d = tiny_config().to_dict()
        self.assertEqual(Config.from_dict(d).to_dict(), d)


if __name__ == "__main__":
    unittest.main()
