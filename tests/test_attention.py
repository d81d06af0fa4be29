"""Attention layouts: who sees whom, proved on tiny random models of every family."""

from __future__ import annotations

import pytest
import torch
from conftest import ALL_ARCHS, DECODER_ARCHS, tiny_model

from ar2diff.data.batching import Example, collate
from ar2diff.models.attention import INPUT, PAD, TARGET, allowed_keys, position_ids
from ar2diff.models.backbone import Backbone, _pack

EXAMPLES = [Example((5, 6, 7, 8), (9, 10, 11, 12, 13)), Example((5, 14, 7), (9, 10, 11, 12, 13))]


def hidden_states(bb: Backbone, batch, fed, layout):
    """Decoder-only: last hidden state at every packed position, plus the roles."""
    tokens, roles, _ = _pack(batch, fed)
    mask = bb.attention_mask(allowed_keys(roles, roles, layout))
    out = bb.model.base_model(input_ids=tokens, attention_mask=mask,
                              position_ids=position_ids(roles), use_cache=False)
    return out.last_hidden_state, roles


def test_mask_table():
    roles = torch.tensor([[INPUT, INPUT, TARGET, TARGET, PAD]])
    causal = allowed_keys(roles, roles, "causal")[0]
    prefix = allowed_keys(roles, roles, "prefix")[0]
    diff = allowed_keys(roles, roles, "diffusion")[0]
    assert causal[0].tolist() == [True, False, False, False, False]
    assert prefix[0].tolist() == [True, True, False, False, False]  # input bidirectional
    assert prefix[2].tolist() == [True, True, True, False, False]  # target causal
    assert diff[2].tolist() == [True, True, True, True, False]  # target bidirectional
    assert diff[0].tolist() == [True, True, False, False, False]  # input never sees targets
    assert diff[4].tolist() == [False, False, False, False, True]  # padding: itself only
    causal_in = allowed_keys(roles, roles, "diffusion-causal-input")[0]
    assert causal_in[0].tolist() == [True, False, False, False, False]  # input causal
    assert causal_in[1].tolist() == [True, True, False, False, False]
    assert causal_in[2].tolist() == diff[2].tolist()  # target bidirectional
    with pytest.raises(ValueError, match="unknown attention layout"):
        allowed_keys(roles, roles, "sideways")


@pytest.mark.parametrize("arch", DECODER_ARCHS)
@pytest.mark.parametrize("layout", ["causal", "prefix", "diffusion", "diffusion-causal-input"])
def test_target_change_never_changes_inputs(arch, layout):
    bb = Backbone(tiny_model(arch))
    batch = collate(EXAMPLES, 0)
    fed2 = batch.target_ids.clone()
    fed2[:, 2] = 3
    h1, roles = hidden_states(bb, batch, batch.target_ids, layout)
    h2, _ = hidden_states(bb, batch, fed2, layout)
    inputs = roles == INPUT
    assert torch.equal(h1[inputs], h2[inputs])
    targets = roles == TARGET
    assert not torch.allclose(h1[targets], h2[targets])


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_causal_layout_never_looks_ahead(arch):
    bb = Backbone(tiny_model(arch))
    batch = collate(EXAMPLES[:1], 0)
    for j in range(1, 9):  # change packed position j (inputs 0-3, targets 4-8)
        b2 = collate(EXAMPLES[:1], 0)
        fed = b2.target_ids.clone()
        if j < 4:
            b2.input_ids[0, j] = 3
        else:
            fed[0, j - 4] = 3
        h1, _ = hidden_states(bb, batch, batch.target_ids, "causal")
        h2, _ = hidden_states(bb, b2, fed, "causal")
        assert torch.equal(h1[0, :j], h2[0, :j])
        assert not torch.allclose(h1[0, j:], h2[0, j:])


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_diffusion_and_prefix_layouts_look_ahead_where_they_should(arch):
    bb = Backbone(tiny_model(arch))
    batch = collate(EXAMPLES[:1], 0)
    fed = batch.target_ids.clone()
    fed[0, 3] = 3  # change target 3 (packed position 7)
    for layout, sees_future_target in (("diffusion", True), ("prefix", False)):
        h1, _ = hidden_states(bb, batch, batch.target_ids, layout)
        h2, _ = hidden_states(bb, batch, fed, layout)
        changed = not torch.allclose(h1[0, 4:7], h2[0, 4:7])
        assert changed == sees_future_target, layout
    b2 = collate(EXAMPLES[:1], 0)
    b2.input_ids[0, 3] = 3  # a later input token changes earlier inputs in the prefix layout
    h1, _ = hidden_states(bb, batch, batch.target_ids, "prefix")
    h2, _ = hidden_states(bb, b2, batch.target_ids, "prefix")
    assert not torch.allclose(h1[0, :3], h2[0, :3])


@pytest.mark.parametrize("layout", ["causal", "diffusion"])
def test_t5_decoder_layouts(layout):
    bb = Backbone(tiny_model("t5"))
    batch = collate(EXAMPLES[:1], 0)
    fed = batch.target_ids.clone()
    fed[0, 3] = 3
    l1 = bb.target_logits(batch, batch.target_ids, layout, shift=False)
    l2 = bb.target_logits(batch, fed, layout, shift=False)
    assert torch.equal(l1[0, :3], l2[0, :3]) == (layout == "causal")
    enc = bb.model.get_encoder()
    e1 = enc(input_ids=batch.input_ids).last_hidden_state
    assert torch.equal(e1, enc(input_ids=batch.input_ids).last_hidden_state)


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_causal_layout_equals_the_original_model(arch):
    model = tiny_model(arch)
    bb = Backbone(model)
    batch = collate([Example((1, 5, 6, 7), (8, 9, 10))], 0)
    ours = bb.target_logits(batch, batch.target_ids, "causal", shift=True)
    seq = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])
    theirs = model(input_ids=seq).logits[:, 3:6]
    assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("layout", ["causal", "prefix", "diffusion", "diffusion-causal-input"])
@pytest.mark.parametrize("shift", [False, True])
def test_prefix_cache_and_batching_match_full_forward(arch, layout, shift):
    bb = Backbone(tiny_model(arch))
    batch = collate(EXAMPLES, 0)
    full = bb.target_logits(batch, batch.target_ids, layout, shift)
    state = bb.encode_prefix(batch.input_ids, batch.input_mask, layout)
    cached = bb.logits_from_prefix(state, batch.target_ids, layout, shift)
    assert (full - cached).abs().max() < 1e-5
    alone = collate(EXAMPLES[1:], 0)
    single = bb.target_logits(alone, alone.target_ids, layout, shift)
    assert (full[1] - single[0]).abs().max() < 1e-5
