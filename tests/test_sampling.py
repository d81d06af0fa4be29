"""Samplers: AR (greedy / sample / beam, KV cache, batching, EOS) and diffusion (uniform, mask)."""

from __future__ import annotations

import pytest
import torch
from conftest import DECODER_ARCHS, tiny_model

from ar2diff.models.backbone import Backbone
from ar2diff.noise.base import StepRule
from ar2diff.noise.mask import MaskNoise, reveal, reveal_plan
from ar2diff.noise.uniform import UniformNoise
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.diffusion import DiffusionSampling, cut, diffusion_generate

PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 12, 13, 14]]
EOS, PAD = 2, 0


def _hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                         eos_token_id=EOS, pad_token_id=PAD)
    seq = out[0, len(prompt):].tolist()
    return seq[: seq.index(EOS)] if EOS in seq else seq


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_greedy_equals_transformers_generate_batched_and_alone(arch):
    model = tiny_model(arch)
    bb = Backbone(model)
    cfg = ARSampling(max_new_tokens=12)
    batched = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        assert got[0] == _hf_greedy(model, prompt, 12)
        assert ar_generate(bb, [prompt], cfg, EOS, PAD)[0] == got


def test_t5_greedy_batched_equals_alone():
    bb = Backbone(tiny_model("t5"))
    cfg = ARSampling(max_new_tokens=8)
    batched = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        assert ar_generate(bb, [prompt], cfg, EOS, PAD)[0] == got
        ref = bb.model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                                eos_token_id=EOS, pad_token_id=PAD)[0, 1:].tolist()
        assert got[0] == (ref[: ref.index(EOS)] if EOS in ref else ref)


def test_greedy_stops_at_eos():
    bb = Backbone(tiny_model("llama"))
    first = ar_generate(bb, PROMPTS[:1], ARSampling(max_new_tokens=6), EOS, PAD)[0][0]
    # declare the third generated token to be EOS: generation must stop before it
    stopped = ar_generate(bb, PROMPTS[:1], ARSampling(max_new_tokens=6), first[2], PAD)[0][0]
    assert stopped == first[: first.index(first[2])]


def test_sampling_is_seeded_and_batch_independent():
    bb = Backbone(tiny_model("llama"))
    cfg = ARSampling(strategy="sample", temperature=1.5, top_p=0.9, completions=3,
                     max_new_tokens=10, seed=4)
    batched = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    assert batched == ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    assert [ar_generate(bb, [p], cfg, EOS, PAD)[0] for p in PROMPTS] == batched
    assert len(batched[0]) == 3 and len({tuple(s) for s in batched[0]}) > 1
    other = ar_generate(bb, PROMPTS, ARSampling(**{**cfg.__dict__, "seed": 5}), EOS, PAD)
    assert other != batched


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_beam_search(arch):
    bb = Backbone(tiny_model(arch))
    greedy = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=8), EOS, PAD)
    one_beam = ar_generate(bb, PROMPTS, ARSampling(strategy="beam", num_beams=1,
                                                   max_new_tokens=8), EOS, PAD)
    assert one_beam == greedy
    cfg = ARSampling(strategy="beam", num_beams=4, max_new_tokens=8)
    beams = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    assert [ar_generate(bb, [p], cfg, EOS, PAD)[0] for p in PROMPTS] == beams


def _logprob(bb, prompt, continuation):
    seq = torch.tensor([prompt + continuation])
    logp = bb.model(input_ids=seq).logits.log_softmax(-1)[0]
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(continuation))


def test_beam_finds_a_likelier_sequence_than_greedy_without_length_penalty():
    bb = Backbone(tiny_model("llama", seed=3))
    greedy = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=6), EOS, PAD)
    beam = ar_generate(bb, PROMPTS, ARSampling(strategy="beam", num_beams=8, max_new_tokens=6,
                                               length_penalty=0.0), EOS, PAD)
    for p, g, b in zip(PROMPTS, greedy, beam, strict=True):
        if len(g[0]) == len(b[0]) == 6:  # neither finished: compare total log-probability
            assert _logprob(bb, p, b[0]) >= _logprob(bb, p, g[0]) - 1e-4


@pytest.mark.parametrize("arch,penalty,mask_id", [("llama", 1.0, None), ("t5", 1.0, None),
                                                  ("llama", 1.5, None), ("llama", 1.0, 39),
                                                  ("t5", 1.5, 39)])
def test_diffusion_is_seeded_and_batch_independent(arch, penalty, mask_id):
    bb = Backbone(tiny_model(arch))
    cfg = DiffusionSampling(steps=4, candidates=3, target_length=7, seed=1, temperature=0.7,
                            repetition_penalty=penalty)
    noise = UniformNoise(40) if mask_id is None else MaskNoise(mask_id)
    batched = diffusion_generate(bb, PROMPTS, cfg, noise, PAD, EOS)
    again = diffusion_generate(bb, PROMPTS, cfg, noise, PAD, EOS)
    assert [r.all_samples for r in batched] == [r.all_samples for r in again]
    for prompt, res in zip(PROMPTS, batched, strict=True):
        alone = diffusion_generate(bb, [prompt], cfg, noise, PAD, EOS)[0]
        assert alone.all_samples == res.all_samples
        assert res.tokens == res.all_samples[max(range(3), key=res.all_scores.__getitem__)]
    other = diffusion_generate(bb, PROMPTS, DiffusionSampling(**{**cfg.__dict__, "seed": 2}),
                               noise, PAD, EOS)
    assert [r.all_samples for r in other] != [r.all_samples for r in batched]


def _record_fed_targets(bb: Backbone, monkeypatch) -> list[torch.Tensor]:
    """The target tokens fed to the model at each denoising step, recorded as they pass."""
    from ar2diff.sampling.fast_blocks import BlockCache

    calls = []
    original, lean = bb.hidden_from_prefix, BlockCache.hidden

    def spy(state, fed, layout, shift):
        calls.append(fed.clone())
        return original(state, fed, layout, shift)

    def lean_spy(cache, fed, shift):  # the lean pass over the target
        calls.append(fed.clone())
        return lean(cache, fed, shift)

    monkeypatch.setattr(bb, "hidden_from_prefix", spy)
    monkeypatch.setattr(BlockCache, "hidden", lean_spy)
    return calls


def test_diffusion_runs_t_steps_from_uniform_noise(monkeypatch):
    bb = Backbone(tiny_model("llama"))
    calls = _record_fed_targets(bb, monkeypatch)
    cfg = DiffusionSampling(steps=5, candidates=8, target_length=64)
    diffusion_generate(bb, PROMPTS[:1], cfg, UniformNoise(40), PAD, EOS)
    assert len(calls) == 5
    start = calls[0]
    assert start.shape == (8, 64)
    counts = torch.bincount(start.flatten(), minlength=40).float()
    assert counts.min() > 0  # every vocabulary entry can appear
    assert counts.std() / counts.mean() < 0.3


def test_repetition_penalty_hits_tokens_found_at_other_positions():
    from ar2diff.sampling.diffusion import penalize_repeats

    current = torch.tensor([[1, 2, 2, 3]])  # one sample, vocabulary of 5
    counts = torch.bincount(current[0], minlength=5)[None]
    out = penalize_repeats(torch.zeros((1, 4, 5)), current, counts, 4.0)[0].exp()
    # position 0 holds token 1: tokens 2 and 3 stand elsewhere (probability / 4); its own 1 not
    assert out[0].tolist() == pytest.approx([1, 1, 0.25, 0.25, 1])
    # position 1 holds one of two 2s: the other 2 counts, and so do 1 and 3
    assert out[1].tolist() == pytest.approx([1, 0.25, 0.25, 0.25, 1])


def test_chunked_output_projection_matches_whole(monkeypatch):
    import ar2diff.sampling.diffusion as diffusion

    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=3, candidates=4, target_length=9, temperature=0.5)
    whole = diffusion_generate(bb, PROMPTS, cfg, UniformNoise(40), PAD, EOS)
    monkeypatch.setattr(diffusion, "LOGITS_BUDGET", 4 * 40 * 2)  # two positions per chunk
    chunked = diffusion_generate(bb, PROMPTS, cfg, UniformNoise(40), PAD, EOS)
    assert [r.all_samples for r in whole] == [r.all_samples for r in chunked]
    for a, b in zip(whole, chunked, strict=True):
        assert a.all_scores == pytest.approx(b.all_scores)


def test_early_stop_at_a_fixed_point_changes_nothing():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=12, candidates=2, target_length=6, temperature=0.0)
    full = diffusion_generate(bb, PROMPTS, cfg, UniformNoise(40), PAD, EOS)
    early = diffusion_generate(bb, PROMPTS, DiffusionSampling(**{**cfg.__dict__,
                                                                 "early_stop": True}), UniformNoise(40), PAD,
                              EOS)
    assert [r.all_samples for r in early] == [r.all_samples for r in full]
    assert all(r.steps < 12 for r in early) and all(r.steps == 12 for r in full)


def test_masked_diffusion_reveals_an_equal_share_per_step_and_keeps_revealed_tokens(monkeypatch):
    bb = Backbone(tiny_model("llama"))
    calls = _record_fed_targets(bb, monkeypatch)
    cfg = DiffusionSampling(steps=4, candidates=3, target_length=7, temperature=0.5)
    res = diffusion_generate(bb, PROMPTS[:1], cfg, MaskNoise(39), PAD, EOS)[0]
    assert torch.equal(calls[0], torch.full((3, 7), 39))  # starts from all masks
    masked = [int((c == 39).sum(1)[0]) for c in calls]
    assert masked == [7, 5, 3, 1] and all(bool(((c == 39).sum(1) == m).all())
                                          for c, m in zip(calls, masked, strict=True))
    for before, after in zip(calls, calls[1:], strict=False):  # revealed tokens never change again
        kept = before != 39
        assert torch.equal(after[kept], before[kept])
    assert res.steps == 4 and all(39 not in s for s in res.all_samples)


def test_masked_diffusion_stops_once_every_position_is_revealed():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=10, candidates=2, target_length=6, seed=3)
    steps = [r.steps for r in diffusion_generate(bb, PROMPTS, cfg, MaskNoise(39), PAD, EOS)]
    assert steps == [6] * 3


def test_reveal_keeps_the_most_confident_masked_positions():
    x = torch.tensor([[9, 5, 9, 9]])  # mask id 9; position 1 already revealed
    drawn = torch.tensor([[1, 2, 3, 4]])
    drawn_logp = torch.tensor([[-0.5, 0.0, -2.0, -0.1]])
    new, logp = reveal(x, drawn, drawn_logp, drawn_logp, torch.zeros(1, 4), 9, (0, 4, 2))
    assert new.tolist() == [[1, 5, 9, 4]]  # ceil(3 / 2) = 2 positions: the two most confident
    assert logp[0].tolist() == pytest.approx([-0.5, 0.0, 0.0, -0.1])
    new, _ = reveal(x, drawn, drawn_logp, drawn_logp, torch.zeros(1, 4), 9, (0, 3, 2))  # [0, 3)
    assert new.tolist() == [[1, 5, 9, 9]]  # ceil(2 / 2) = 1 position, inside the block


def test_reveal_plan_shares_steps_over_blocks_left_to_right():
    assert reveal_plan(6, 3, 0) == [(0, 6, 3)]
    assert reveal_plan(4, 10, 0) == [(0, 4, 4)]  # at most one step per token
    assert reveal_plan(7, 5, 3) == [(0, 3, 2), (3, 6, 2), (6, 7, 1)]
    assert reveal_plan(6, 2, 2) == [(0, 2, 1), (2, 4, 1), (4, 6, 1)]  # at least one per block


def test_threshold_reveals_every_confident_position_and_at_least_one():
    x = torch.tensor([[9, 9, 9, 9], [9, 9, 9, 9]])
    drawn = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    p = torch.tensor([[0.95, 0.5, 0.92, 0.1], [0.6, 0.5, 0.4, 0.3]])
    rule = StepRule(threshold=0.9)
    new, _ = reveal(x, drawn, p.log(), p.log(), torch.zeros(2, 4), 9, (0, 4, 4), rule)
    assert new.tolist() == [[1, 9, 3, 9], [5, 9, 9, 9]]  # two pass; none pass: the likeliest
    # factor rule, f = 1: n = 2 since 3 * (1 - 0.92) < 1 but 4 * (1 - 0.5) >= 1
    new, _ = reveal(x, drawn, p.log(), p.log(), torch.zeros(2, 4), 9, (0, 4, 4), StepRule(factor=1))
    assert new.tolist() == [[1, 9, 3, 9], [5, 9, 9, 9]]
    new, _ = reveal(x, drawn, p.log(), p.log(), torch.zeros(2, 4), 9, (2, 4, 4), rule)
    assert new.tolist() == [[9, 9, 3, 9], [9, 9, 7, 9]]  # only inside the block [2, 4)


def test_left_to_right_order_reveals_the_leftmost_masked_positions_and_confident_runs():
    x = torch.tensor([[9, 5, 9, 9, 9], [9, 9, 9, 9, 9]])  # row 0: position 1 already revealed
    drawn = torch.tensor([[1, 2, 3, 4, 6], [5, 6, 7, 8, 1]])
    p = torch.tensor([[0.2, 1.0, 0.95, 0.3, 0.99], [0.95, 0.5, 0.92, 0.99, 0.99]])
    lp = p.log()
    in_order = StepRule(in_order=True)
    new, _ = reveal(x, drawn, lp, lp, torch.zeros(2, 5), 9, (0, 5, 2), in_order)
    assert new.tolist() == [[1, 5, 3, 9, 9], [5, 6, 7, 9, 9]]  # ceil(4/2), ceil(5/2) leftmost
    new, _ = reveal(x, drawn, lp, lp, torch.zeros(2, 5), 9, (2, 5, 3), in_order)
    assert new.tolist() == [[9, 5, 3, 9, 9], [9, 9, 7, 9, 9]]  # inside the block [2, 5)
    # threshold 0.9: the leftmost, then each next one while it passes (0.3 / 0.5 break the run)
    rule = StepRule(threshold=0.9, in_order=True)
    new, _ = reveal(x, drawn, lp, lp, torch.zeros(2, 5), 9, (0, 5, 5), rule)
    assert new.tolist() == [[1, 5, 9, 9, 9], [5, 9, 9, 9, 9]]
    first = torch.tensor([[9, 5, 3, 9, 9], [5, 9, 9, 9, 9]])
    new, _ = reveal(first, drawn, lp, lp, torch.zeros(2, 5), 9, (0, 5, 5), rule)
    assert new.tolist() == [[1, 5, 3, 9, 9], [5, 6, 9, 9, 9]]  # the leftmost is due first
    # by confidence instead, threshold 0.9 takes 0.95 and 0.99 wherever they stand
    new, _ = reveal(x, drawn, lp, lp, torch.zeros(2, 5), 9, (0, 5, 5), StepRule(threshold=0.9))
    assert new.tolist() == [[9, 5, 3, 9, 6], [5, 9, 7, 8, 1]]
    # factor 1: the n-th position in order passes while (n + 1)(1 - c_n) < 1
    p2 = torch.tensor([[0.6, 0.9, 0.7, 0.99, 0.99]]).log()
    args = (x[1:], drawn[1:], p2, p2, torch.zeros(1, 5), 9, (0, 5, 5))
    new, _ = reveal(*args, StepRule(factor=1, in_order=True))
    assert new.tolist() == [[5, 6, 9, 9, 9]]  # 2 * 0.4, 3 * 0.1 pass; 4 * 0.3 does not
    new, _ = reveal(*args, StepRule(factor=1))  # sorted: 0.99, 0.99, 0.9 pass; 5 * 0.3 does not
    assert new.tolist() == [[9, 6, 9, 8, 1]]


def test_an_end_token_settles_the_positions_after_it():
    x = torch.tensor([[9, 9, 9, 9, 9]])
    drawn = torch.tensor([[4, 2, 5, 6, 7]])  # EOS = 2 drawn at position 1, most confident
    lp = torch.tensor([[-1.0, -0.1, -2.0, -2.0, -2.0]])
    rule = StepRule(end_ids=(0, 2), fill_id=0)
    new, logp = reveal(x, drawn, lp, lp, torch.zeros(1, 5), 9, (0, 5, 5), rule)
    assert new.tolist() == [[9, 2, 0, 0, 0]] and logp[0, 2:].tolist() == [0, 0, 0]
    new, _ = reveal(x, drawn, lp, lp, torch.zeros(1, 5), 9, (0, 5, 5), StepRule())
    assert new.tolist() == [[9, 2, 9, 9, 9]]


def test_cut_at_first_pad_or_eos():
    assert cut([5, 6, 2, 7], {0, 2}) == [5, 6]
    assert cut([5, 0, 2], {0, 2}) == [5]
    assert cut([5, 6], {0, 2}) == [5, 6]


@pytest.mark.parametrize("noise", [UniformNoise(40), MaskNoise(39)], ids=["uniform", "mask"])
def test_diffusion_makes_no_host_round_trip_per_step(monkeypatch, noise):
    """The canvas, draws, scores and pick stay on the model's device: what the host reads does
    not grow with the number of steps (and nothing is read while denoising)."""
    bb = Backbone(tiny_model("llama"))
    calls: dict[str, int] = {}
    for name in ("cpu", "item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    seen = []
    for steps in (3, 6):
        calls.clear()
        cfg = DiffusionSampling(steps=steps, candidates=2, target_length=6)
        diffusion_generate(bb, PROMPTS, cfg, noise, PAD, EOS)
        seen.append(dict(calls))
    assert seen[0] == seen[1] and seen[0].get("cpu") == 3 * len(PROMPTS)  # results, at the end
    assert "item" not in seen[0] and "__bool__" not in seen[0]


@pytest.mark.parametrize("noise", [UniformNoise(40), MaskNoise(39)], ids=["uniform", "mask"])
def test_bfloat16_diffusion_does_not_depend_on_the_batch(noise):
    """Prompts of very different lengths, in bf16: each gets what it gets alone, whatever the
    split of the request (padding a prompt's cache changes attention's rounding)."""
    bb = Backbone(tiny_model("llama").to(torch.bfloat16))
    gen = torch.Generator().manual_seed(0)
    prompts = [[1, *torch.randint(3, 39, (k,), generator=gen).tolist()] for k in (4, 40, 9, 70)]
    cfg = DiffusionSampling(steps=6, candidates=4, target_length=16, temperature=0.2)
    together = diffusion_generate(bb, prompts, cfg, noise, PAD, EOS)
    halves = [r for part in (prompts[:2], prompts[2:])
              for r in diffusion_generate(bb, part, cfg, noise, PAD, EOS)]
    alone = [diffusion_generate(bb, [p], cfg, noise, PAD, EOS)[0] for p in prompts]
    assert [r.all_samples for r in together] == [r.all_samples for r in alone]
    assert [r.all_samples for r in halves] == [r.all_samples for r in alone]
    assert [r.all_scores for r in together] == [r.all_scores for r in alone]


def test_step_hook_sees_every_canvas_and_the_last_is_the_result():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=4, candidates=2, target_length=6, temperature=0.5)
    seen: list[tuple[int, int, torch.Tensor]] = []
    res = diffusion_generate(bb, PROMPTS[:2], cfg, MaskNoise(39), PAD, EOS,
                             on_step=lambda i, s, c: seen.append((i, s, c.clone())))
    assert [(i, s) for i, s, _ in seen] == [(i, s) for i in range(2) for s in range(4)]
    assert [int((c == 39).sum()) for i, s, c in seen if i == 0] == [8, 4, 2, 0]
    assert res == diffusion_generate(bb, PROMPTS[:2], cfg, MaskNoise(39), PAD, EOS)


@pytest.mark.parametrize("confidence", ["probability", "margin", "entropy"])
def test_threshold_decoding_takes_fewer_steps_as_it_loosens_and_stays_batch_independent(confidence):
    bb = Backbone(tiny_model("gpt2"))
    with torch.no_grad():  # distinct positions, sharper distributions: confidences spread out
        bb.model.transformer.wpe.weight *= 10
        bb.model.lm_head.weight *= 10
    base = DiffusionSampling(steps=12, candidates=2, target_length=12, temperature=0.0,
                             confidence=confidence)
    one = diffusion_generate(bb, PROMPTS, base, MaskNoise(39), PAD, EOS)
    assert all(r.steps == 12 for r in one)
    steps = []
    for threshold in (0.999999, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 1e-6):
        cfg = DiffusionSampling(**{**base.__dict__, "threshold": threshold})
        res = diffusion_generate(bb, PROMPTS, cfg, MaskNoise(39), PAD, EOS)
        alone = [diffusion_generate(bb, [p], cfg, MaskNoise(39), PAD, EOS)[0] for p in PROMPTS]
        assert [r.all_samples for r in alone] == [r.all_samples for r in res]
        steps.append(sum(r.steps for r in res))
        if threshold == 0.999999:  # nothing passes: one (the likeliest) per step, as T = L
            assert [r.all_samples for r in res] == [r.all_samples for r in one]
    assert steps == sorted(steps, reverse=True) and steps[0] == 36 and steps[-1] == 3
    assert any(3 < s < 36 for s in steps)


def test_eos_stop_ends_a_sample_at_its_end_token(monkeypatch):
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=16, candidates=1, target_length=16, temperature=0.0,
                            eos_stop=True, eos_penalty=1e-3)  # a penalty < 1 makes ends likely
    plain = diffusion_generate(bb, PROMPTS[:1], DiffusionSampling(
        **{**cfg.__dict__, "eos_stop": False}), MaskNoise(39), PAD, EOS)[0]
    calls = _record_fed_targets(bb, monkeypatch)
    res = diffusion_generate(bb, PROMPTS[:1], cfg, MaskNoise(39), PAD, EOS)[0]
    assert plain.steps == 16
    assert res.steps == len(calls) < 16
    assert EOS in calls[-1].tolist()[0] or PAD in calls[-1].tolist()[0]


def test_eos_penalty_delays_the_end():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=16, candidates=4, target_length=16, temperature=1.0, seed=5)
    lengths = {}
    for penalty in (1.0, 1e6):
        c = DiffusionSampling(**{**cfg.__dict__, "eos_penalty": penalty})
        res = diffusion_generate(bb, PROMPTS, c, MaskNoise(39), PAD, EOS)
        lengths[penalty] = sum(len(s) for r in res for s in r.all_samples)
    assert lengths[1e6] == 16 * 4 * len(PROMPTS) > lengths[1.0]


@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_left_to_right_order_fills_each_canvas_from_the_left_and_stays_batch_independent(threshold):
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=8, candidates=2, target_length=8, temperature=1.0, seed=3,
                            order="left-to-right", threshold=threshold, eos_stop=False)
    seen = []
    res = diffusion_generate(bb, PROMPTS, cfg, MaskNoise(39), PAD, EOS,
                             on_step=lambda i, s, c: seen.append((i, c.clone())))
    for _, canvas in seen:  # the masked positions of every row are a suffix
        masked = (canvas == 39).long()
        assert torch.equal(masked, masked.cummax(1).values)
    if threshold == 0:  # one position per step
        assert all(r.steps == 8 for r in res)
    else:  # confident runs ahead take fewer steps
        assert sum(r.steps for r in res) < 8 * len(PROMPTS)
    alone = [diffusion_generate(bb, [p], cfg, MaskNoise(39), PAD, EOS)[0] for p in PROMPTS]
    assert [r.all_samples for r in alone] == [r.all_samples for r in res]
    if threshold == 0:  # another order gives other samples
        by_conf = diffusion_generate(bb, PROMPTS, DiffusionSampling(
            **{**cfg.__dict__, "order": "confidence"}), MaskNoise(39), PAD, EOS)
        assert [r.all_samples for r in by_conf] != [r.all_samples for r in res]


def test_threshold_needs_masked_noise():
    bb = Backbone(tiny_model("llama"))
    with pytest.raises(ValueError, match="masked noise"):
        diffusion_generate(bb, PROMPTS, DiffusionSampling(threshold=0.9), UniformNoise(40), PAD, EOS)
    with pytest.raises(ValueError, match="masked noise"):
        diffusion_generate(bb, PROMPTS, DiffusionSampling(order="left-to-right"), UniformNoise(40),
                           PAD, EOS)


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_token_hook_sees_every_token_and_can_stop(strategy):
    bb = Backbone(tiny_model("llama"))
    cfg = ARSampling(strategy=strategy, max_new_tokens=8, completions=2, seed=1)
    seen = []
    out = ar_generate(bb, PROMPTS, cfg, EOS, PAD, on_token=lambda t, tok: seen.append(tok.tolist()))
    assert out == ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    rows = [c for per_input in out for c in per_input]
    for r, row in enumerate(rows):
        assert [step[r] for step in seen][: len(row)] == row

    def stop(t, tok):
        if t == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ar_generate(bb, PROMPTS, cfg, EOS, PAD, on_token=stop)


def test_token_hook_can_end_single_rows_and_the_rest_go_on():
    bb = Backbone(tiny_model("llama"))
    cfg = ARSampling(max_new_tokens=8, completions=1)
    full = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    out = ar_generate(bb, PROMPTS, cfg, EOS, PAD, on_token=lambda t, tok: {1} if t == 2 else None)
    assert out[1] == [full[1][0][:3]] and out[0] == full[0] and out[2] == full[2]


def test_generate_with_stop_sequences_ends_ar_rows_early_with_the_same_text(tmp_path):
    from conftest import save_tiny_model_folder

    from ar2diff.decoding import DecodeOptions
    from ar2diff.generation import TextGenerator
    from ar2diff.stops import cut_at_stops

    gen = TextGenerator.load(str(save_tiny_model_folder(tmp_path / "m")), device="cpu")
    inputs = [gen.encode_prompt(p, False) for p in ("copy : 1 2 3", "sort : 3 1")]
    opts = DecodeOptions(mode="ar", max_new_tokens=12, chat=False, completions=2,
                         strategy="sample", temperature=1.0, seed=4)
    full = gen.generate_ids(inputs, opts)
    texts = [gen.tokenizer.decode(c, skip_special_tokens=True) for row in full for c in row]
    words = texts[0].split(" ")
    assert len(words) >= 4, texts[0]
    stop = " " + words[2]
    early = gen.generate_ids(inputs, opts, [stop])
    flat = [c for row in early for c in row]
    for text, tokens, whole in zip(texts, flat, [c for row in full for c in row], strict=True):
        assert cut_at_stops(gen.tokenizer.decode(tokens, skip_special_tokens=True), [stop]) == \
            cut_at_stops(text, [stop])
        assert tokens == whole[:len(tokens)]
    assert len(flat[0]) < len(full[0][0])


@pytest.mark.parametrize("noise", [UniformNoise(40), MaskNoise(39)], ids=["uniform", "mask"])
@pytest.mark.parametrize("shift", [False, True])
def test_the_lean_target_pass_gives_the_model_forward_tokens(noise, shift):
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=5, candidates=3, target_length=7, temperature=0.7, seed=4,
                            shift=shift, block_length=2)
    fast = diffusion_generate(bb, PROMPTS, cfg, noise, PAD, EOS)
    slow = diffusion_generate(bb, PROMPTS, DiffusionSampling(**{**cfg.__dict__, "fast": False}),
                              noise, PAD, EOS)
    assert [r.all_samples for r in fast] == [r.all_samples for r in slow]
    assert [s for r in fast for s in r.all_scores] == pytest.approx(
        [s for r in slow for s in r.all_scores], abs=1e-5)
