"""The training loop: config, learning, batch-size independence, checkpoints and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ar2diff.config import load_config, parse_overrides
from ar2diff.errors import Ar2DiffError
from ar2diff.models.checkpoint import CHECKSUMS, load_model, sha256
from ar2diff.training.assemble import run_training
from ar2diff.training.loop import checkpoints, load_trainer_state

TOY = ["data.source=toy", "tokenizer.kind=toy", "model.size=nano", "data.target_length=12",
       "train.progress=false", "train.eval_every=0", "optim.warmup_steps=2", "optim.lr=3e-3"]


def _cfg(tmp: Path, *extra: str):
    return load_config(None, [*TOY, f"train.out_dir={tmp}", *extra])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(Ar2DiffError, match="unknown config key 'train.stepz'"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(Ar2DiffError, match="train.steps: expected an integer"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(Ar2DiffError, match="objective.kind"):
        load_config(None, ["objective.kind=magic"])
    with pytest.raises(Ar2DiffError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(Ar2DiffError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(Ar2DiffError, match="multiple"):
        load_config(None, ["train.batch_size=6", "train.micro_batch_size=4"])
    with pytest.raises(Ar2DiffError, match="key=value|section.key=value"):
        parse_overrides(["train.steps"])


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: 7\n  bf16: true\noptim:\n  lr: 1e-3\n")
    cfg = load_config(path, ["train.steps=9", "model.overrides={num_hidden_layers: 3}"])
    assert cfg.train.steps == 9 and cfg.train.bf16 is True and cfg.optim.lr == 1e-3
    assert cfg.model.overrides == {"num_hidden_layers": 3}


@pytest.mark.parametrize("kind", ["diffusion", "ar"])
def test_training_lowers_the_loss(tmp_path, kind):
    cfg = _cfg(tmp_path, f"objective.kind={kind}", "train.steps=60", "train.batch_size=16",
               "train.eval_every=60", "train.eval_examples=32", "data.toy_task=copy")
    result = run_training(cfg)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < 0.7 * first
    model, tok, meta = load_model(result.model_dir)
    assert meta.mode == kind and meta.noise_vocab == len(tok)
    assert result.final_eval_loss is not None


def test_micro_batch_size_does_not_change_the_result(tmp_path):
    a = run_training(_cfg(tmp_path / "a", "train.steps=3", "train.batch_size=8"))
    b = run_training(_cfg(tmp_path / "b", "train.steps=3", "train.batch_size=8",
                          "train.micro_batch_size=2"))
    wa, wb = _weights(a.model_dir), _weights(b.model_dir)
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5, rtol=1e-4), name  # Adam amplifies rounding
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5)


def test_resume_reaches_the_same_weights(tmp_path):
    full = run_training(_cfg(tmp_path / "full", "train.steps=6", "train.batch_size=4"))
    part = _cfg(tmp_path / "part", "train.steps=6", "train.batch_size=4", "train.save_every=3")
    run_training(part)
    # as if the run had died right after the checkpoint at step 3
    shutil.rmtree(tmp_path / "part" / "model")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-00000006")
    resumed = run_training(_cfg(tmp_path / "part", "train.steps=6", "train.batch_size=4",
                                "train.save_every=3"), resume=True)
    wf, wr = _weights(full.model_dir), _weights(resumed.model_dir)
    for name in wf:
        assert torch.equal(wf[name], wr[name]), name
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run_training(_cfg(tmp_path, "train.steps=4", "train.batch_size=2", "train.save_every=1",
                      "train.keep_last=2"))
    names = [p.name for p in checkpoints(tmp_path)]
    assert names == ["step-00000003", "step-00000004"]
    leftovers = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    (tmp_path / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(Ar2DiffError, match="corrupted"):
        load_model(tmp_path / "model")


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=3", "train.batch_size=2", "optim.lr=1e30",
               "optim.grad_clip=1e30", "optim.warmup_steps=1")
    with pytest.raises(Ar2DiffError, match="loss became"):
        run_training(cfg)


def test_unwritable_output_is_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Ar2DiffError, match="not writable"):
        run_training(_cfg(blocker / "out", "train.steps=1"))


def test_default_corpus_mixes_books_and_code_or_falls_back_to_code(monkeypatch):
    import ar2diff.training.assemble as runs

    cfg = load_config(None, ["data.source=corpus"])
    monkeypatch.setattr(runs, "default_text_files", lambda: [Path("a.txt")])
    streams = runs.corpus_files(cfg)
    assert [w for _, w in streams] == [pytest.approx(0.8), pytest.approx(0.2)]
    assert all(p.suffix == ".py" for p in streams[1][0]) and len(streams[1][0]) > 100
    monkeypatch.setattr(runs, "default_text_files", lambda: [])
    assert [w for _, w in runs.corpus_files(cfg)] == [1.0]


def test_causal_input_diffusion_is_saved_and_sampled_with_its_mask(tmp_path):
    cfg = _cfg(tmp_path, "objective.kind=diffusion", "objective.input_attention=causal",
               "objective.shift=true", "objective.anneal_steps=2", "train.steps=3",
               "train.batch_size=4")
    result = run_training(cfg)
    from ar2diff.generation import DecodeOptions, TextGenerator

    gen = TextGenerator.load(str(result.model_dir))
    assert gen.meta.layout == "diffusion-causal-input"
    opts = DecodeOptions(mode="diffusion", max_new_tokens=6, steps=2)
    assert gen.diffusion_config(opts).layout == "diffusion-causal-input"
    assert len(gen.generate(["1 2 3"], opts)[0]) == 1


@pytest.mark.parametrize("attention,expected", [("diffusion-causal-input", "causal"),
                                                ("diffusion", "prefix")])
def test_finetune_keeps_the_layout_the_model_was_adapted_with(tmp_path, attention, expected):
    import json

    from ar2diff.recipes import adapt_config, finetune_config

    assert adapt_config("smollm2-135m", 5, str(tmp_path)).objective.input_attention == "causal"
    (tmp_path / "ar2diff.json").write_text(json.dumps(  # a folder of the first schema
        {"kind": "diffusion", "shift": False, "attention": attention}))
    cfg = finetune_config(str(tmp_path), "squad", "diffusion", str(tmp_path / "ft"))
    assert (cfg.objective.input_attention, cfg.objective.shift) == (expected, False)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "t5"])
def test_mask_token_is_added_without_changing_other_logits(arch, toy_tokenizer):
    from conftest import tiny_model

    from ar2diff.noise.mask import add_mask_token

    n = len(toy_tokenizer)
    model = tiny_model(arch, vocab=n)
    ids = torch.tensor([[1, 5, 6, 7]])
    kwargs = {"decoder_input_ids": ids} if arch == "t5" else {}
    with torch.no_grad():
        before = model(input_ids=ids, **kwargs).logits
    mask_id = add_mask_token(model, toy_tokenizer)
    assert mask_id == n and toy_tokenizer.mask_token_id == n and len(toy_tokenizer) == n + 1
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] >= n + 1
    assert torch.allclose(emb[mask_id], emb[:mask_id].mean(0))
    with torch.no_grad():
        after = model(input_ids=ids, **kwargs).logits
    assert float((after[..., :n] - before[..., :n]).abs().max()) <= 1e-5
    assert add_mask_token(model, toy_tokenizer) == mask_id and len(toy_tokenizer) == n + 1


def test_masked_diffusion_trains_saves_and_samples_with_its_mask_token(tmp_path):
    from ar2diff.generation import DecodeOptions, TextGenerator
    from ar2diff.recipes import finetune_config

    cfg = _cfg(tmp_path, "objective.noise=mask", "objective.unroll=1", "train.steps=40",
               "train.batch_size=16", "train.eval_every=40", "train.eval_examples=32",
               "data.toy_task=copy")
    result = run_training(cfg)
    first = sum(r["loss"] for r in result.history[:5]) / 5
    last = sum(r["loss"] for r in result.history[-5:]) / 5
    assert last < 0.7 * first
    gen = TextGenerator.load(str(result.model_dir))
    mask_id = gen.tokenizer.mask_token_id
    assert gen.meta.noise == "mask" and gen.meta.mask_id == mask_id
    assert gen.backbone.model.get_input_embeddings().weight.shape[0] == len(gen.tokenizer)
    opts = DecodeOptions(mode="diffusion", max_new_tokens=6, steps=3)
    assert gen.noise.name == "mask" and gen.noise.banned_ids == (mask_id,)
    ids = gen.generate_ids([gen.encode_prompt("copy : 1 2 3", chat=False)], opts)[0][0]
    assert mask_id not in ids and len(ids) <= 6
    with pytest.raises(Ar2DiffError, match="--block-length -1"):
        gen.diffusion_config(DecodeOptions(mode="diffusion", block_length=-1))
    ft = finetune_config(str(result.model_dir), "squad", "diffusion", str(tmp_path / "ft"))
    assert ft.objective.noise == "mask"
    with pytest.raises(Ar2DiffError, match="objective.noise='gaussian'"):
        run_training(_cfg(tmp_path / "bad", "objective.noise=gaussian"))
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_adapt_preset_adapts_a_local_model_with_masked_noise_and_resumes(tmp_path,
                                                                          toy_tokenizer):
    from conftest import tiny_model

    from ar2diff.recipes import adapt

    folder = tmp_path / "base"
    tiny_model("llama", vocab=len(toy_tokenizer)).save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    text = tmp_path / "digits.txt"
    gen = torch.Generator().manual_seed(0)
    text.write_text(" ".join(str(int(d)) for d in torch.randint(0, 10, (3000,), generator=gen)))
    small = ["data.segment_length=16", "train.batch_size=4", "train.micro_batch_size=2",
             "train.eval_every=0", "train.save_every=2", "train.progress=false"]

    def run(out: str, resume: bool = False):
        return adapt(str(folder), 4, str(tmp_path / out), [str(text)], small, resume=resume)

    full = run("full")
    run("part")
    shutil.rmtree(tmp_path / "part" / "model")  # as if it had died after the step-2 checkpoint
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-00000004")
    resumed = run("part", resume=True)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    wf, wr = _weights(full.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    _, tok, meta = load_model(full.model_dir)
    assert meta.noise == "mask" and meta.mask_id == tok.mask_token_id == len(toy_tokenizer)
    assert meta.layout == "diffusion-causal-input" and meta.shift is True


class _RunsCode:
    """Unpickling this creates a file: a stand-in for a crafted checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_objects(tmp_path):
    out = tmp_path / "run"
    run_training(_cfg(out, "train.steps=2", "train.batch_size=2", "train.save_every=1"))
    shutil.rmtree(out / "model")
    latest = sorted((out / "checkpoints").iterdir())[-1]
    marker = tmp_path / "pwned"
    state = torch.load(latest / "trainer_state.pt", weights_only=True)
    torch.save({**state, "history": [_RunsCode(marker)]}, latest / "trainer_state.pt")
    sums = {p.name: sha256(p) for p in latest.iterdir() if p.is_file() and p.name != CHECKSUMS}
    (latest / CHECKSUMS).write_text(json.dumps(sums))  # a crafted folder checks out
    with pytest.raises(Ar2DiffError, match="trainer_state.pt holds objects other than tensors"):
        run_training(_cfg(out, "train.steps=2", "train.batch_size=2", "train.save_every=1"),
                     resume=True)
    assert not marker.exists()


def test_trainer_state_without_its_keys_is_refused(tmp_path):
    torch.save({"step": 1}, tmp_path / "trainer_state.pt")
    with pytest.raises(Ar2DiffError, match="lacks the trainer state keys"):
        load_trainer_state(tmp_path / "trainer_state.pt")
    (tmp_path / "trainer_state.pt").write_bytes(b"not a zip")
    with pytest.raises(Ar2DiffError, match="trainer_state.pt (holds objects|is not a readable)"):
        load_trainer_state(tmp_path / "trainer_state.pt")
