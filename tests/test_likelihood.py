"""Log-likelihoods: exact AR scores, and the masked-diffusion bound (seeded, shrinking spread,
rising as the model learns the scored text)."""

import pytest
import torch

from ar2diff.errors import Ar2DiffError
from ar2diff.likelihood import ar_log_likelihoods, diffusion_bounds, document_pairs, truncate_pair
from ar2diff.models.backbone import Backbone
from ar2diff.noise.mask import MaskNoise, mask_exactly
from ar2diff.noise.uniform import UniformNoise
from ar2diff.rng import example_generator
from tests.conftest import tiny_model

MASK = 39
PAIRS = [([1, 5, 6, 7], [8, 9, 10]), ([1, 11], [12, 13, 14, 15, 16, 17]), ([1], [20])]


def test_ar_log_likelihood_is_the_models_own_and_batch_independent():
    model = tiny_model("llama")
    scores = ar_log_likelihoods(Backbone(model), PAIRS, batch_size=3)
    for (ctx, cont), (score, _) in zip(PAIRS, scores, strict=True):
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        want = logp[torch.arange(len(ctx) - 1, len(ids[0]) - 1), ids[0, len(ctx):]].sum()
        assert score == pytest.approx(float(want), abs=1e-4)
    alone = [ar_log_likelihoods(Backbone(model), [p])[0] for p in PAIRS]
    assert [s for s, _ in alone] == pytest.approx([s for s, _ in scores], abs=1e-5)


def test_greedy_flag_is_true_for_the_models_own_argmax():
    model = tiny_model("llama")
    ids = [1, 5]
    for _ in range(3):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    (_, greedy), (_, other) = ar_log_likelihoods(
        Backbone(model), [(ids[:2], ids[2:]), (ids[:2], [(ids[2] + 1) % 40, *ids[3:]])])
    assert greedy and not other


def test_truncate_and_document_pairs():
    assert truncate_pair([1, 2, 3], [4, 5], 3) == ([2, 3], [4, 5])
    assert truncate_pair([1], [4, 5, 6, 7], 2) == ([5], [6, 7])
    assert document_pairs([7, 8, 9, 10, 11], 1, 2, 3) == [([1], [7, 8]), ([1, 7, 8], [9, 10]),
                                                         ([8, 9, 10], [11])]


def test_mask_exactly_masks_between_one_and_all_real_tokens():
    targets = torch.arange(3, 11).repeat(200, 1)
    real = torch.ones_like(targets, dtype=torch.bool)
    real[:, 5:] = False
    fed, weights = mask_exactly(targets, real, MASK, [example_generator(0, i) for i in range(200)])
    counts = (fed == MASK).sum(1)
    assert counts.min() == 1 and counts.max() == 5 and not (fed[:, 5:] == MASK).any()
    assert torch.allclose(weights, 5 / counts.float())


def _bounds(model, samples, seed=0, batch_size=8, pairs=PAIRS):
    return diffusion_bounds(Backbone(model), MaskNoise(MASK), pairs, samples, seed=seed,
                            batch_size=batch_size)


def test_diffusion_bound_is_seeded_batch_independent_and_below_zero():
    model = tiny_model("llama")
    first, again = _bounds(model, 8), _bounds(model, 8, batch_size=3)
    assert [b.mean for b in first] == pytest.approx([b.mean for b in again], abs=1e-5)
    assert [b.mean for b in _bounds(model, 8, seed=1)] != pytest.approx([b.mean for b in first])
    alone = _bounds(model, 8, pairs=PAIRS[1:2])[0]
    assert alone.mean == pytest.approx(first[1].mean, abs=1e-5)
    assert all(b.mean < 0 and b.variance >= 0 for b in first)


def test_diffusion_bound_spread_shrinks_with_samples():
    model = tiny_model("llama")
    pair = PAIRS[1:2]
    few = [_bounds(model, 4, seed=s, pairs=pair)[0].mean for s in range(12)]
    many = [_bounds(model, 64, seed=s, pairs=pair)[0].mean for s in range(12)]
    assert torch.tensor(many).std() < 0.6 * torch.tensor(few).std()
    assert _bounds(model, 64, pairs=pair)[0].stderr < _bounds(model, 4, pairs=pair)[0].stderr


def test_diffusion_bound_rises_as_the_model_trains_on_the_text():
    model = tiny_model("llama")
    backbone, noise = Backbone(model), MaskNoise(MASK)
    pair = PAIRS[1:2]
    before = _bounds(model, 16, pairs=pair)[0]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    from ar2diff.data.batching import Example, collate
    batch = collate([Example(tuple(pair[0][0]), tuple(pair[0][1]))] * 8, pad_id=0)
    model.train()
    for step in range(30):
        gens = [example_generator(step, i) for i in range(8)]
        loss = -noise.elbo_terms(backbone, batch, gens, False, "diffusion").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = _bounds(model, 16, pairs=pair)[0]
    assert after.mean > before.mean + 3 * (before.stderr + after.stderr)


def test_uniform_noise_refuses_with_one_line():
    with pytest.raises(Ar2DiffError, match="uniform noise has no tractable bound"):
        diffusion_bounds(Backbone(tiny_model("llama")), UniformNoise(40), PAIRS, 4)
    with pytest.raises(Ar2DiffError, match="samples=1"):
        diffusion_bounds(Backbone(tiny_model("llama")), MaskNoise(MASK), PAIRS, 1)
