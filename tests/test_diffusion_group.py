"""Diffusion of several inputs in shared forward passes gives each input its tokens alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_model

from ar2diff.models.backbone import Backbone
from ar2diff.noise.mask import MaskNoise
from ar2diff.noise.uniform import UniformNoise
from ar2diff.sampling.block_diffusion import block_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate
from ar2diff.sampling.diffusion_group import diffusion_generate_group
from ar2diff.sampling.steps import StepRecord, diffusion_start

EOS, PAD = 2, 0
SAME_LENGTH = [[1, 9, 9, 3], [1, 5, 6, 7], [1, 12, 13, 14], [1, 5, 6, 7]]


def _noise(kind: str):
    return MaskNoise(39) if kind == "mask" else UniformNoise(39)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["mask", "uniform"])
def test_a_group_gives_each_input_its_result_alone(dtype, kind):
    bb = Backbone(tiny_model("llama").to(dtype))
    cfg = DiffusionSampling(steps=4, candidates=2, target_length=8, temperature=1.0, block_length=4
                            if kind == "mask" else 0)
    inputs, seeds = SAME_LENGTH[1:], [3, 4, 5]  # the last input repeats the first with another seed
    noise = _noise(kind)
    together = diffusion_generate_group(bb, inputs, seeds, cfg, noise, PAD, EOS)
    for x, seed, got in zip(inputs, seeds, together, strict=True):
        alone = diffusion_generate(bb, [x], replace(cfg, seed=seed), noise, PAD, EOS)[0]
        assert got.all_samples == alone.all_samples and got.all_scores == alone.all_scores
    assert together[1].all_samples != together[2].all_samples or \
        together[1].all_scores != together[2].all_scores  # seeds matter


def test_inputs_of_other_lengths_run_one_by_one_with_the_same_results():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=3, candidates=2, target_length=6, temperature=1.0)
    inputs = [[1, 5], [1, 9, 9, 3, 4]]
    steps = []
    got = diffusion_generate_group(bb, inputs, [0, 1], cfg, MaskNoise(39), PAD, EOS,
                                   on_step=lambda i, s, c: steps.append((i, s)))
    for x, seed, res in zip(inputs, [0, 1], got, strict=True):
        assert res.all_samples == diffusion_generate(bb, [x], replace(cfg, seed=seed), MaskNoise(39),
                                                     PAD, EOS)[0].all_samples
    assert steps == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_the_step_record_replays_a_masked_decoding():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=4, candidates=2, target_length=8, temperature=1.0, seed=7)
    noise = MaskNoise(39)
    record = StepRecord(diffusion_start(noise, cfg.seed, SAME_LENGTH[0], 2, 8))
    res = diffusion_generate(bb, SAME_LENGTH[:1], cfg, noise, PAD, EOS,
                             on_step=lambda i, s, c: record.add(c))[0]
    assert record.steps == 4 and record.canvases[0] == [[39] * 8] * 2
    assert all(39 not in row for row in record.canvases[-1])
    for row in range(2):  # every position revealed once, two per step (8 positions / 4 steps)
        assert sorted(j for s in range(1, 5) for j in record.changed(s)[row]) == list(range(8))
        assert all(len(record.changed(s)[row]) == 2 for s in range(1, 5))
    assert min(min(r) for r in record.last_change()) == 1
    best = res.all_scores.index(res.score)
    assert res.all_samples[best] == res.tokens


def test_a_few_rows_per_input_run_one_by_one():
    bb = Backbone(tiny_model("llama"))
    cfg = DiffusionSampling(steps=2, candidates=1, target_length=4, temperature=1.0)
    order = []
    got = diffusion_generate_group(bb, SAME_LENGTH[:2], [0, 1], cfg, MaskNoise(39), PAD, EOS,
                                   on_step=lambda i, s, c: order.append(i))
    assert order == [0, 0, 1, 1]  # input by input, not step by step
    assert got[1].all_samples == diffusion_generate(bb, SAME_LENGTH[1:2], replace(cfg, seed=1),
                                                    MaskNoise(39), PAD, EOS)[0].all_samples


@pytest.mark.parametrize("rules", [{"threshold": 0.5, "eos_stop": True},
                                   {"eos_stop": True, "eos_penalty": 0.3, "block_length": 4},
                                   {"threshold": 0.5, "eos_stop": True, "order": "left-to-right"}],
                         ids=["threshold", "schedule", "left-to-right"])
def test_inputs_that_finish_at_different_steps_keep_their_results_alone(rules):
    bb = Backbone(tiny_model("gpt2"))
    with torch.no_grad():  # distinct positions and sharper distributions: confidences spread out
        bb.model.transformer.wpe.weight *= 10
        bb.model.lm_head.weight *= 10
    cfg = DiffusionSampling(steps=16, candidates=2, target_length=16, temperature=0.5, **rules)
    seeds = [0, 1, 2, 3]
    together = diffusion_generate_group(bb, SAME_LENGTH, seeds, cfg, MaskNoise(39), PAD, EOS)
    alone = [diffusion_generate(bb, [x], replace(cfg, seed=s), MaskNoise(39), PAD, EOS)[0]
             for x, s in zip(SAME_LENGTH, seeds, strict=True)]
    assert [r.all_samples for r in together] == [r.all_samples for r in alone]
    assert [r.steps for r in together] == [r.steps for r in alone]
    assert len({r.steps for r in alone}) > 1  # they did finish at different steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rules", [{}, {"threshold": 0.4, "eos_stop": True, "eos_penalty": 0.05},
                                   {"threshold": 0.4, "eos_stop": True, "eos_penalty": 0.05,
                                    "order": "left-to-right"}],
                         ids=["schedule", "threshold-eos", "left-to-right"])
@pytest.mark.parametrize("fast", [True, False], ids=["lean", "model-forward"])
def test_block_diffusion_groups_give_each_run_its_result_alone(dtype, rules, fast):
    """Runs of one prompt (a request's completions) and prompts of one length share block
    passes, and each keeps its own steps, stop and tokens."""
    bb = Backbone(tiny_model("llama").to(dtype), block_size=4)
    with torch.no_grad():  # sharper distributions: confidences and end tokens spread out
        bb.model.lm_head.weight *= 3
    cfg = DiffusionSampling(steps=24, candidates=1, target_length=24, temperature=1.0,
                            layout="diffusion", shift=True, fast=fast, **rules)
    inputs = [SAME_LENGTH[1]] * 4 + SAME_LENGTH[2:3]
    seeds = [0, 1, 2, 3, 0]
    steps = []
    together = diffusion_generate_group(bb, inputs, seeds, cfg, MaskNoise(39), PAD, EOS,
                                        on_step=lambda i, s, c: steps.append((i, s)))
    alone = [block_generate(bb, [x], replace(cfg, seed=s), MaskNoise(39), PAD, EOS)[0]
             for x, s in zip(inputs, seeds, strict=True)]
    assert [r.all_samples for r in together] == [r.all_samples for r in alone]
    assert [r.all_scores for r in together] == [r.all_scores for r in alone]
    assert [r.passes for r in together] == [r.passes for r in alone]
    assert [sum(1 for j, _ in steps if j == i) for i in range(5)] == [r.steps for r in alone]
    if rules:  # the rules did end runs apart
        assert len({r.steps for r in alone}) > 1
    assert len({tuple(r.tokens) for r in together[:4]}) > 1  # the seeds matter


def test_completions_of_a_block_model_share_passes_with_the_results_of_runs_alone():
    bb = Backbone(tiny_model("llama"), block_size=4)
    cfg = DiffusionSampling(steps=8, candidates=1, target_length=8, temperature=1.0,
                            layout="diffusion", shift=True)
    order = []
    diffusion_generate_group(bb, [SAME_LENGTH[0]] * 3, [5, 6, 7], cfg, MaskNoise(39), PAD, EOS,
                             on_step=lambda i, s, c: order.append(i))
    assert order[:3] == [0, 1, 2]  # step by step, not run by run
    few = replace(cfg, target_length=2)  # blocks of 4 over 2 positions: still 4 rows a pass
    assert diffusion_generate_group(bb, [SAME_LENGTH[0]] * 2, [5, 6], few, MaskNoise(39), PAD,
                                    EOS)[1].all_samples == block_generate(
        bb, [SAME_LENGTH[0]], replace(few, seed=6), MaskNoise(39), PAD, EOS)[0].all_samples


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fast", [True, False], ids=["lean", "model-forward"])
def test_block_prompts_of_different_lengths_give_each_its_result_alone(dtype, fast, monkeypatch):
    """Through the lean pass each prompt keeps its own cache (no padding) and shares the
    passes' linear layers, and prompts that ended leave the passes; through the model's forward
    each length is a group of its own."""
    from ar2diff.sampling.fast_blocks import BlockCache

    kept, keep = [], BlockCache.keep
    monkeypatch.setattr(BlockCache, "keep", lambda self, p: kept.append(list(p)) or keep(self, p))
    bb = Backbone(tiny_model("llama").to(dtype), block_size=4)
    with torch.no_grad():
        bb.model.lm_head.weight *= 3
    cfg = DiffusionSampling(steps=24, candidates=2, target_length=24, temperature=1.0,
                            layout="diffusion", shift=True, fast=fast, threshold=0.4,
                            eos_stop=True, eos_penalty=0.3)  # ends at blocks 0 to 5
    inputs = [[1, 5], [1, 9, 9, 3, 4], [1, 5, 6, 7], [1, 7], [1, 9, 9, 3, 4, 8, 8, 8, 2]]
    seeds = [0, 1, 2, 3, 4]
    order = []
    together = diffusion_generate_group(bb, inputs, seeds, cfg, MaskNoise(39), PAD, EOS,
                                        on_step=lambda i, s, c: order.append(i))
    alone = [block_generate(bb, [x], replace(cfg, seed=s), MaskNoise(39), PAD, EOS)[0]
             for x, s in zip(inputs, seeds, strict=True)]
    assert [r.all_samples for r in together] == [r.all_samples for r in alone]
    assert [r.all_scores for r in together] == [r.all_scores for r in alone]
    assert [r.passes for r in together] == [r.passes for r in alone]
    first = order[:5] if fast else order[:2]  # lean: all five in the first step; else by length
    assert first == ([0, 1, 2, 3, 4] if fast else [0, 3])
    assert bool(kept) == fast  # some prompts ended blocks before others and left the passes
