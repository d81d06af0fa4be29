"""Block diffusion (BD3-LM): the block-causal training layout, the exact cache of finished
blocks, block-by-block sampling that stops at the end token, and training through the config."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from ar2diff.data.batching import Example, collate
from ar2diff.errors import Ar2DiffError
from ar2diff.models.attention import INPUT, PAD, TARGET, block_diffusion_keys
from ar2diff.models.backbone import Backbone
from ar2diff.noise.mask import MaskNoise
from ar2diff.sampling.block_diffusion import block_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate

PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 12, 13, 14]]
EOS, PAD_ID, MASK = 2, 0, 39


def test_block_layout_lets_noisy_blocks_see_earlier_clean_blocks_only():
    # input (2), noisy target (4), clean target (4); blocks of 2
    roles = torch.tensor([[INPUT] * 2 + [TARGET] * 8])
    blocks = torch.tensor([[-1, -1, 0, 0, 1, 1, 0, 0, 1, 1]])
    clean = torch.tensor([[False] * 6 + [True] * 4])
    ok = block_diffusion_keys(roles, blocks, clean)[0].int()
    assert ok[4].tolist() == [1, 1, 0, 0, 1, 1, 1, 1, 0, 0]  # noisy block 1: own block, clean 0
    assert ok[2].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # noisy block 0: input and itself
    assert ok[8].tolist() == [1, 1, 0, 0, 0, 0, 1, 1, 1, 1]  # clean block 1: clean blocks 0, 1
    assert ok[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # input: input only
    causal = block_diffusion_keys(roles, blocks, clean, "causal")[0].int()
    assert causal[0].tolist()[:2] == [1, 0]
    pad = block_diffusion_keys(torch.tensor([[PAD, INPUT]]), torch.tensor([[-1, -1]]),
                               torch.tensor([[False, False]]))[0]
    assert pad[0].tolist() == [True, False]  # a padding query sees itself only


@pytest.mark.parametrize("shift,layout", [(False, "diffusion"), (True, "diffusion"),
                                          (True, "diffusion-causal-input")])
def test_cached_blocks_give_the_training_forward_logits(shift, layout):
    """Denoising block b over a cache of the clean blocks before it equals the one-pass training
    forward over [input][noisy][clean] (fp32)."""
    torch.manual_seed(0)
    bb = Backbone(tiny_model("llama"), block_size=3)
    prompt, x0 = [1, 5, 6, 7], torch.randint(3, 39, (1, 9))
    fed = torch.where(torch.rand(1, 9) < 0.5, MASK, x0)
    batch = collate([Example(tuple(prompt), tuple(x0[0].tolist()))], PAD_ID)
    with torch.no_grad():
        train = bb.target_logits(batch, fed, layout, shift)  # [1, 9, V]
    state = bb.encode_prefix(batch.input_ids, batch.input_mask, layout)
    worst = 0.0
    for b in range(3):
        lo, hi = 3 * b, 3 * b + 3
        cached = bb.logits_from_prefix(state, fed[:, lo:hi], layout, shift)
        worst = max(worst, float((cached - train[:, lo:hi]).abs().max()))
        state = bb.extend_prefix(state, x0[:, lo:hi])
    assert worst <= 1e-4
    # the noisy copy of another block does not change a block's logits
    other = fed.clone()
    other[:, 6:] = MASK
    assert torch.allclose(bb.target_logits(batch, other, layout, shift)[:, :6], train[:, :6], atol=1e-5)


@pytest.mark.parametrize("shift,layout", [(False, "diffusion"), (True, "diffusion-causal-input")])
def test_a_cache_pass_shared_with_the_next_step_equals_two_passes(shift, layout):
    torch.manual_seed(0)
    bb = Backbone(tiny_model("llama"), block_size=3)
    batch = collate([Example((1, 5, 6, 7), ()), Example((1, 9), ())], PAD_ID)
    clean, fed = torch.randint(3, 39, (2, 3)), torch.full((2, 3), MASK)
    fed[:, 1] = 17

    def start():
        return bb.encode_prefix(batch.input_ids, batch.input_mask, layout)

    two = bb.extend_prefix(start(), clean)
    apart = bb.hidden_from_prefix(two, fed, layout, shift)
    one, together = bb.extend_and_hidden(start(), clean, fed, layout, shift)
    assert float((together - apart).abs().max()) <= 1e-5
    assert float((one.last_hidden - two.last_hidden).abs().max()) <= 1e-5
    assert torch.equal(one.roles, two.roles)
    for a, b in zip(one.cache.layers, two.cache.layers, strict=True):  # the same cache after
        assert a.keys.shape == b.keys.shape and float((a.keys - b.keys).abs().max()) <= 1e-5
    nxt = torch.full((2, 3), MASK)
    assert float((bb.hidden_from_prefix(one, nxt, layout, shift)
                  - bb.hidden_from_prefix(two, nxt, layout, shift)).abs().max()) <= 1e-5


def test_block_sampling_is_seeded_batch_independent_and_reveals_block_by_block():
    bb = Backbone(tiny_model("llama"), block_size=4)
    cfg = DiffusionSampling(steps=12, candidates=2, target_length=12, temperature=0.7, seed=1,
                            layout="diffusion", shift=True)
    seen = []
    res = block_generate(bb, PROMPTS, cfg, MaskNoise(MASK), PAD_ID, EOS,
                         on_step=lambda i, s, c: seen.append((i, c.clone())))
    alone = [block_generate(bb, [p], cfg, MaskNoise(MASK), PAD_ID, EOS)[0] for p in PROMPTS]
    assert [r.all_samples for r in res] == [r.all_samples for r in alone]
    assert all(r.steps == 12 and r.passes == 12 for r in res)  # cache passes share steps
    first = [c for i, c in seen if i == 0]
    for c in first[:4]:  # while block 0 is denoised, the later blocks stay masked
        assert bool((c[:, 4:] == MASK).all())
    assert not bool((first[3][:, :4] == MASK).any())
    with pytest.raises(ValueError, match="block_generate"):
        diffusion_generate(bb, PROMPTS, cfg, MaskNoise(MASK), PAD_ID, EOS)


def test_block_sampling_stops_at_the_block_where_every_candidate_ended():
    bb = Backbone(tiny_model("llama"), block_size=4)
    cfg = DiffusionSampling(steps=64, candidates=2, target_length=64, temperature=0.0,
                            eos_stop=True, eos_penalty=1e-2, threshold=0.5)  # ends likely
    res = block_generate(bb, PROMPTS, cfg, MaskNoise(MASK), PAD_ID, EOS)
    plain = block_generate(bb, PROMPTS, DiffusionSampling(
        **{**cfg.__dict__, "eos_stop": False}), MaskNoise(MASK), PAD_ID, EOS)
    assert [r.passes for r in res] == [r.steps for r in res]  # no pass besides the steps
    assert max(r.passes for r in res) < min(r.passes for r in plain)
    assert all(len(s) < 64 for r in res for s in r.all_samples)


def test_block_size_in_a_config_is_checked():
    from ar2diff.config import load_config

    with pytest.raises(Ar2DiffError, match="objective.noise=mask"):
        load_config(None, ["objective.block_size=4"])
    with pytest.raises(Ar2DiffError, match="anneal"):
        load_config(None, ["objective.block_size=4", "objective.noise=mask",
                           "objective.anneal_steps=5"])
    with pytest.raises(Ar2DiffError, match="decoder-only"):
        Backbone(tiny_model("t5"), block_size=4)
    with pytest.raises(Ar2DiffError, match="mask_rate_min"):
        load_config(None, ["objective.mask_rate_min=0.8", "objective.mask_rate_max=0.3"])
    cfg = load_config(None, ["objective.noise=mask", "objective.block_size=4",
                             "objective.mask_rate_min=0.3", "objective.mask_rate_max=0.8"])
    assert (cfg.objective.mask_rate_min, cfg.objective.mask_rate_max) == (0.3, 0.8)


def test_block_diffusion_trains_saves_and_decodes_by_blocks(tmp_path):
    from ar2diff.config import load_config
    from ar2diff.generation import DecodeOptions, TextGenerator
    from ar2diff.recipes import finetune_config
    from ar2diff.training.assemble import run_training

    cfg = load_config(None, [
        "data.source=toy", "tokenizer.kind=toy", "model.size=nano", "data.target_length=12",
        "train.progress=false", "train.eval_every=0", "optim.warmup_steps=2", "optim.lr=3e-3",
        "objective.noise=mask", "objective.unroll=1", "objective.block_size=4", "objective.shift=true",
        "objective.mask_rate_min=0.3", "objective.mask_rate_max=0.8",
        "train.steps=30", "train.batch_size=16", "data.toy_task=copy", f"train.out_dir={tmp_path}"])
    result = run_training(cfg)
    first = sum(r["loss"] for r in result.history[:5]) / 5
    last = sum(r["loss"] for r in result.history[-5:]) / 5
    assert last < 0.8 * first
    gen = TextGenerator.load(str(result.model_dir))
    assert gen.meta.block_size == 4 and gen.backbone.block_size == 4
    opts = DecodeOptions(mode="diffusion", max_new_tokens=12, steps=12, threshold=0.9)
    ids = gen.generate_ids([gen.encode_prompt("copy : 1 2 3", chat=False)], opts)[0][0]
    assert gen.tokenizer.mask_token_id not in ids and len(ids) <= 12
    ft = finetune_config(str(result.model_dir), "squad", "diffusion", str(tmp_path / "ft"))
    assert ft.objective.block_size == 4 and ft.objective.anneal_steps == 0


@pytest.mark.parametrize("shift", [False, True])
def test_the_lean_block_pass_equals_the_model_forward(shift):
    from ar2diff.sampling.fast_blocks import block_cache

    torch.manual_seed(0)
    bb = Backbone(tiny_model("llama"), block_size=3)
    batch = collate([Example((1, 5, 6, 7), ())], PAD_ID)

    def start():
        return bb.encode_prefix(batch.input_ids, batch.input_mask, "diffusion").repeat_interleave(2)

    state, fast = start(), block_cache(bb, start(), 9)
    assert fast is not None
    blocks = torch.randint(3, 39, (2, 9))
    noisy = torch.where(torch.rand(2, 9) < 0.5, MASK, blocks)
    worst = float((fast.hidden(noisy[:, :3], shift)
                   - bb.hidden_from_prefix(state, noisy[:, :3], "diffusion", shift)).abs().max())
    for lo in (3, 6):  # the finished block joins the cache with the next block's first step
        clean, fed = blocks[:, lo - 3:lo], noisy[:, lo:lo + 3]
        state, model = bb.extend_and_hidden(state, clean, fed, "diffusion", shift)
        worst = max(worst, float((fast.extend_and_hidden(clean, fed, shift) - model).abs().max()))
        again = fast.hidden(fed, shift)  # a later step of the same block
        worst = max(worst, float((again - model).abs().max()))
    assert worst <= 1e-5


def test_block_sampling_gives_the_same_tokens_with_and_without_the_lean_pass():
    bb = Backbone(tiny_model("llama"), block_size=4)
    cfg = DiffusionSampling(steps=16, candidates=2, target_length=16, temperature=0.7, seed=2,
                            layout="diffusion", shift=True, threshold=0.3)
    fast = block_generate(bb, PROMPTS, cfg, MaskNoise(MASK), PAD_ID, EOS)
    slow = block_generate(bb, PROMPTS, DiffusionSampling(**{**cfg.__dict__, "fast": False}),
                          MaskNoise(MASK), PAD_ID, EOS)
    assert [r.all_samples for r in fast] == [r.all_samples for r in slow]
    assert [s for r in fast for s in r.all_scores] == pytest.approx(
        [s for r in slow for s in r.all_scores], abs=1e-5)
    assert [r.passes for r in fast] == [r.passes for r in slow]
