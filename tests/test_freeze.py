"""SUNDAE freezing: stable, confident positions settle and an input ends once all have."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from ar2diff.models.backbone import Backbone
from ar2diff.noise.mask import MaskNoise
from ar2diff.noise.uniform import UniformNoise
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate
from ar2diff.sampling.freeze import freeze_step

PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 12, 13, 14]]
EOS, PAD = 2, 0


def test_a_position_freezes_when_drawn_again_confidently_and_then_keeps_its_token():
    before = torch.tensor([[5, 6, 7, 8]])
    old_logp = torch.full((1, 4), -0.5)
    drawn = torch.tensor([[5, 6, 9, 3]])  # same token at 0 and 1, new ones at 2 and 3
    drawn_logp = torch.tensor([[math.log(0.95), math.log(0.5), math.log(0.99), -0.1]])
    frozen = torch.tensor([[False, False, False, True]])  # 3 froze earlier
    new, logp, frozen, done = freeze_step(before, drawn, drawn_logp, old_logp, frozen, 0.9)
    assert new.tolist() == [[5, 6, 9, 8]]  # the frozen 8 stays, the others take the draw
    assert logp[0, 3].item() == -0.5 and logp[0, 0].item() == pytest.approx(math.log(0.95))
    assert frozen.tolist() == [[True, False, False, True]]  # 1 is unsure, 2 changed
    assert not done


def test_an_input_is_done_when_every_position_up_to_a_frozen_end_is_frozen():
    before = torch.tensor([[5, EOS, 7], [4, 4, 4]])
    zeros = torch.zeros((2, 3))
    frozen = torch.tensor([[True, False, False], [True, True, True]])
    _, _, after, done = freeze_step(before, before.clone(), zeros, zeros, frozen, 0.9, (PAD, EOS))
    assert after.all() and done  # everything drawn again with probability 1
    low = torch.full((2, 3), math.log(0.1))
    _, _, after, done = freeze_step(before, before.clone(), low, low, frozen, 0.9, (PAD, EOS))
    assert not done  # the end token itself is not frozen yet
    frozen = torch.tensor([[True, True, False], [True, True, True]])
    _, _, _, done = freeze_step(before, before.clone(), low, low, frozen, 0.9, (PAD, EOS))
    assert done  # position 2 lies after a frozen end
    _, _, _, done = freeze_step(before, before.clone(), low, low, frozen, 0.9)
    assert not done  # without end tokens every position counts


def test_freezing_ends_inputs_sooner_as_it_loosens_and_stays_batch_independent():
    bb = Backbone(tiny_model("llama"))
    with torch.no_grad():  # sharper distributions: some positions become confident
        bb.model.lm_head.weight *= 3
    base = DiffusionSampling(steps=24, candidates=2, target_length=8, temperature=1.0, seed=3,
                             eos_stop=False)
    plain = diffusion_generate(bb, PROMPTS, base, UniformNoise(40), PAD, EOS)
    assert all(r.steps == 24 for r in plain)
    steps = []
    for freeze in (0.999, 0.7, 0.5, 0.3, 1e-9):
        cfg = DiffusionSampling(**{**base.__dict__, "freeze": freeze})
        res = diffusion_generate(bb, PROMPTS, cfg, UniformNoise(40), PAD, EOS)
        alone = [diffusion_generate(bb, [p], cfg, UniformNoise(40), PAD, EOS)[0] for p in PROMPTS]
        assert [r.all_samples for r in alone] == [r.all_samples for r in res]
        assert [r.steps for r in alone] == [r.steps for r in res]
        steps.append(sum(r.steps for r in res))
        if freeze == 0.999:  # nothing is that sure: the plain sampler's T steps and samples
            assert [r.all_samples for r in res] == [r.all_samples for r in plain]
    assert steps == sorted(steps, reverse=True) and steps[0] == 72
    assert steps[-1] < 72 / 2 and any(steps[-1] < s < 72 for s in steps)


def test_freezing_is_for_sundae_noise():
    bb = Backbone(tiny_model("llama"))
    with pytest.raises(ValueError, match="SUNDAE"):
        diffusion_generate(bb, PROMPTS, DiffusionSampling(freeze=0.9), MaskNoise(39), PAD, EOS)
    with pytest.raises(ValueError, match="freeze=1.5"):
        diffusion_generate(bb, PROMPTS, DiffusionSampling(freeze=1.5), UniformNoise(40), PAD, EOS)


def test_freeze_option_is_checked_where_it_is_given():
    from ar2diff.decoding import DecodeOptions
    from ar2diff.errors import Ar2DiffError

    assert DecodeOptions(freeze=0.9).freeze == 0.9
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(Ar2DiffError, match="--freeze"):
            DecodeOptions(freeze=bad)
