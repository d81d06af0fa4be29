"""Objectives: example formats, SUNDAE and mask corruption, the AR / L(1:n) / masked losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from ar2diff.data.batching import Example, collate
from ar2diff.data.formats import causal_lm_example, noise_mask, prefix_lm_example, span_corruption_example
from ar2diff.losses.ar import ar_loss
from ar2diff.models.backbone import Backbone
from ar2diff.noise.mask import MaskNoise, mask_corrupt
from ar2diff.noise.uniform import UniformNoise, uniform_corrupt
from ar2diff.rng import example_generator

SEGMENT = list(range(100, 164))
SENTINELS = list(range(1000, 1100))


def test_causal_lm_example():
    ex = causal_lm_example(SEGMENT, bos_id=1)
    assert ex.input_ids == (1,) and ex.target_ids == tuple(SEGMENT)


def test_prefix_lm_cuts_uniformly_and_keeps_every_token():
    cuts = []
    for i in range(400):
        ex = prefix_lm_example(SEGMENT, example_generator(0, i))
        assert ex.input_ids + ex.target_ids == tuple(SEGMENT)
        assert len(ex.input_ids) >= 1 and len(ex.target_ids) >= 1
        cuts.append(len(ex.input_ids))
    assert min(cuts) < 8 and max(cuts) > 56  # spans the whole range
    again = prefix_lm_example(SEGMENT, example_generator(0, 7))
    assert again == prefix_lm_example(SEGMENT, example_generator(0, 7))


def _reconstruct(ex: Example) -> list[int]:
    spans: dict[int, list[int]] = {}
    current = None
    for tok in ex.target_ids:
        if tok in SENTINELS:
            current = tok
            spans[tok] = []
        else:
            spans[current].append(tok)
    out = []
    for tok in ex.input_ids:
        out += spans[tok] if tok in SENTINELS else [tok]
    return out


def test_span_corruption_is_invertible_with_t5_statistics():
    noise, spans = 0, 0
    for i in range(200):
        seg = list(range(100, 100 + 512))
        ex = span_corruption_example(seg, SENTINELS, example_generator(1, i))
        assert _reconstruct(ex) == seg
        sent_in = [t for t in ex.input_ids if t in SENTINELS]
        assert sent_in == SENTINELS[: len(sent_in)]  # sentinels in order
        spans += len(sent_in)
        noise += len(ex.target_ids) - len(sent_in)
    assert noise / (200 * 512) == pytest.approx(0.15, abs=0.005)
    assert noise / spans == pytest.approx(3.0, abs=0.1)


def test_noise_mask_short_segments():
    for n in range(2, 12):
        mask = noise_mask(n, example_generator(0, n))
        assert len(mask) == n and 0 < sum(mask) < n


def test_uniform_corruption_rate_and_determinism():
    targets = torch.arange(10, 10 + 200).repeat(300, 1)
    gens = [example_generator(3, i) for i in range(300)]
    noisy = uniform_corrupt(targets, 50_000, gens)
    frac = (noisy != targets).float().mean(1)
    # r ~ U(0, 1): the fraction replaced per row is spread over [0, 1] with mean 1/2
    assert frac.mean() == pytest.approx(0.5, abs=0.05)
    assert frac.min() < 0.05 and frac.max() > 0.95
    assert int(noisy.max()) < 50_000 and int(noisy.min()) >= 0
    again = uniform_corrupt(targets[:1], 50_000, [example_generator(3, 0)])
    assert torch.equal(again[0], noisy[0])  # per-example generator: batch-independent


def _batch():
    return collate([Example((1, 5, 6), (7, 8, 9, 0, 0)), Example((1, 4), (3, 7, 0, 0, 0))], 0)


def test_ar_loss_equals_hf_causal_lm_loss():
    model = tiny_model("llama")
    seq = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])
    batch = collate([Example((1,), (5, 6, 7, 8, 9, 10))], 0)
    total, n = ar_loss(Backbone(model), batch, "causal")
    assert n == 6
    assert float(total / n) == pytest.approx(float(model(input_ids=seq, labels=seq).loss), abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_sundae_single_pass_is_cross_entropy_over_all_target_positions(arch):
    bb = Backbone(tiny_model(arch))
    batch = _batch()
    gens = lambda: [example_generator(0, i) for i in range(2)]  # noqa: E731
    total, n = UniformNoise(40, unroll=1).loss(bb, batch, gens(), False, "diffusion")
    assert n == 10  # padding counts: the length is learned
    fed = uniform_corrupt(batch.target_ids, 40, gens())
    logits = bb.target_logits(batch, fed, "diffusion", shift=False)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target_ids.reshape(-1),
                         reduction="sum")
    assert float(total) == pytest.approx(float(ce), rel=1e-5)


def test_sundae_unrolled_second_pass_uses_argmax_without_gradient():
    bb = Backbone(tiny_model("llama"))
    batch = _batch()
    gens = lambda: [example_generator(0, i) for i in range(2)]  # noqa: E731
    total, _ = UniformNoise(40, unroll=2).loss(bb, batch, gens(), False, "diffusion")
    fed1 = uniform_corrupt(batch.target_ids, 40, gens())
    logits1 = bb.target_logits(batch, fed1, "diffusion", shift=False)
    fed2 = logits1.argmax(-1)
    logits2 = bb.target_logits(batch, fed2, "diffusion", shift=False)
    ce = lambda lg: F.cross_entropy(lg.reshape(-1, lg.shape[-1]),  # noqa: E731
                                    batch.target_ids.reshape(-1), reduction="sum")
    assert float(total) == pytest.approx(float((ce(logits1) + ce(logits2)) / 2), rel=1e-5)
    total.backward()  # gradients flow through both passes' logits, not through the argmax
    assert all(p.grad is not None for p in bb.model.parameters() if p.requires_grad)


def test_sundae_unrolled_second_pass_can_be_fed_a_sample_batch_independently():
    bb = Backbone(tiny_model("llama"))
    batch = _batch()
    gens = lambda: [example_generator(0, i) for i in range(2)]  # noqa: E731
    noise = UniformNoise(40, unroll=2, unroll_input="sample")
    total, _ = noise.loss(bb, batch, gens(), False, "diffusion")
    again, _ = noise.loss(bb, batch, gens(), False, "diffusion")
    argmax, _ = UniformNoise(40, unroll=2).loss(bb, batch, gens(), False, "diffusion")
    assert float(total) == float(again) and float(total) != pytest.approx(float(argmax), rel=1e-4)
    rows = [collate([ex], 0) for ex in (Example((1, 5, 6), (7, 8, 9, 0, 0)),
                                        Example((1, 4), (3, 7, 0, 0, 0)))]
    alone = [noise.loss(bb, rows[i], [example_generator(0, i)], False, "diffusion")[0]
             for i in range(2)]  # each row's sample comes from its own generator only
    assert float(total) == pytest.approx(float(alone[0] + alone[1]), rel=1e-5)


def test_mask_corruption_rate_and_determinism():
    targets = torch.arange(10, 10 + 200).repeat(300, 1)
    gens = [example_generator(3, i) for i in range(300)]
    noisy, rates = mask_corrupt(targets, 7, gens)
    masked = noisy == 7
    assert torch.equal(torch.where(masked, targets, noisy), targets)  # only masks are new
    assert float((masked.float().mean(1) - rates).abs().max()) < 0.15  # each row at its rate
    assert rates.min() >= 1e-3 and rates.max() <= 1 and rates.mean() == pytest.approx(0.5, abs=0.05)
    again, _ = mask_corrupt(targets[:1], 7, [example_generator(3, 0)])
    assert torch.equal(again[0], noisy[0])
    _, clipped = mask_corrupt(targets, 7, [example_generator(3, i) for i in range(300)], 0.3, 0.8)
    assert clipped.min() >= 0.3 and clipped.max() <= 0.8  # BD3-LM's clipped schedule


@pytest.mark.parametrize("arch,shift", [("llama", False), ("llama", True), ("t5", False)])
def test_masked_loss_is_rate_weighted_cross_entropy_over_masked_positions(arch, shift):
    bb = Backbone(tiny_model(arch))
    batch = _batch()
    gens = lambda: [example_generator(0, i) for i in range(2)]  # noqa: E731
    layout = "diffusion-causal-input" if shift else "diffusion"
    total, n = MaskNoise(39).loss(bb, batch, gens(), shift, layout)
    assert n == 10  # the token count covers every target position, padding included
    fed, rates = mask_corrupt(batch.target_ids, 39, gens())
    logits = bb.target_logits(batch, fed, layout, shift)
    ce = F.cross_entropy(logits.transpose(1, 2), batch.target_ids, reduction="none")
    expected = ((fed == 39) * ce / rates[:, None]).sum()
    assert (fed == 39).any() and (fed != 39).any()
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in bb.model.parameters() if p.requires_grad)
