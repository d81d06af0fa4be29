"""Model metadata (ModelMeta), the noise-process registry, decoding words and their old names."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ar2diff.config import load_config
from ar2diff.decoding import DecodeOptions, DecodingDefaults, decode_options
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.run import evaluation_options
from ar2diff.models.checkpoint import load_meta
from ar2diff.models.meta import SCHEMA, ModelMeta
from ar2diff.noise import noise_class, noise_for
from ar2diff.noise.base import REGISTRY, NoiseProcess
from ar2diff.noise.mask import MaskNoise
from ar2diff.noise.uniform import UniformNoise


def test_meta_round_trips_through_its_json(tmp_path):
    meta = ModelMeta(mode="diffusion", layout="diffusion-causal-input", shift=True, noise="mask",
                     mask_id=41, noise_vocab=40, target_length=12,
                     decoding=DecodingDefaults(steps=32, block_length=4), source="x")
    (tmp_path / "ar2diff.json").write_text(json.dumps(meta.to_dict()))
    assert json.loads((tmp_path / "ar2diff.json").read_text())["schema"] == SCHEMA
    assert load_meta(tmp_path) == meta


def test_a_folder_of_the_first_schema_loads(tmp_path):
    old = {"kind": "diffusion", "attention": "diffusion-causal-input", "shift": True,
           "noise": "mask", "mask_id": 7, "noise_vocab": 40, "target_length": 16,
           "sample": {"steps": 32, "temperature": 0.2, "samples": 8, "max_new_tokens": 32,
                      "repetition_penalty": 1.0, "block_length": 4},
           "encoder_decoder": False, "config": {}, "ar2diff_version": "0.1.0", "extra": 1}
    (tmp_path / "ar2diff.json").write_text(json.dumps(old))
    meta = load_meta(tmp_path)
    assert (meta.mode, meta.layout, meta.noise, meta.mask_id) == (
        "diffusion", "diffusion-causal-input", "mask", 7)
    assert meta.decoding == DecodingDefaults(steps=32, candidates=8, max_new_tokens=32,
                                             block_length=4)
    bare = ModelMeta.from_dict({"kind": "diffusion"})  # the earliest folders: no layout, shift
    assert (bare.layout, bare.shift, bare.noise) == ("diffusion", False, None)


def test_unreadable_metadata_is_a_clear_error(tmp_path):
    (tmp_path / "ar2diff.json").write_text("[1, 2]")
    with pytest.raises(Ar2DiffError, match="ar2diff.json should hold a JSON object"):
        load_meta(tmp_path)
    (tmp_path / "ar2diff.json").write_text("{not json")
    with pytest.raises(Ar2DiffError, match="cannot be read"):
        load_meta(tmp_path)


def test_meta_for_a_run_follows_its_config():
    config = load_config(None, ["objective.kind=diffusion", "objective.input_attention=causal",
                                "objective.noise=mask", "objective.shift=true",
                                "data.target_length=20", "sample.steps=7"])
    meta = ModelMeta.pretrained("spec", 40).for_run(config)
    assert (meta.mode, meta.layout, meta.shift, meta.noise) == (
        "diffusion", "diffusion-causal-input", True, "mask")
    assert meta.target_length == 20 and meta.decoding.steps == 7 and meta.source == "spec"
    ar = ModelMeta().for_run(load_config(None, ["objective.kind=ar", "objective.format=causal"]))
    assert (ar.mode, ar.layout, ar.shift, ar.noise) == ("ar", "causal", True, None)


def test_noise_processes_are_chosen_by_name_and_from_metadata():
    assert noise_class("uniform") is UniformNoise and noise_class("mask") is MaskNoise
    with pytest.raises(Ar2DiffError, match="objective.noise='gauss': choose one of mask, uniform"):
        noise_class("gauss")
    assert isinstance(noise_for(ModelMeta(), 40), UniformNoise)  # an AR model: uniform
    assert noise_for(ModelMeta(noise_vocab=30), 40).vocab_size == 30
    masked = noise_for(ModelMeta(mode="diffusion", noise="mask", mask_id=5), 40)
    assert isinstance(masked, MaskNoise) and masked.banned_ids == (5,)
    with pytest.raises(Ar2DiffError, match="names no mask_id"):
        noise_for(ModelMeta(mode="diffusion", noise="mask"), 40)


def test_a_new_noise_process_registers_itself():
    class Absorb2(MaskNoise):
        name = "absorb2"

    try:
        assert noise_class("absorb2") is Absorb2 and issubclass(Absorb2, NoiseProcess)
        canvas = noise_class("absorb2")(3).initial_canvas(torch.rand(2, 4))
        assert torch.equal(canvas, torch.full((2, 4), 3))
    finally:
        REGISTRY.pop("absorb2")


def test_old_config_and_option_names_are_accepted():
    old = load_config(None, ["objective.attention=causal", "sample.samples=4"])
    assert old.objective.input_attention == "causal" and old.sample.candidates == 4
    both = load_config(None, ["objective.attention=causal", "objective.input_attention=prefix"])
    assert both.objective.input_attention == "prefix"  # the current name wins
    assert decode_options({"parallel": 4, "num_return": 2}) == DecodeOptions(candidates=4,
                                                                           completions=2)


def test_evaluation_options_draw_enough_completions_for_pass_at_k():
    ar = evaluation_options(DecodeOptions(), "ar", [1, 5])
    assert (ar.completions, ar.strategy, ar.temperature, ar.chat) == (5, "sample", 0.8, None)
    diffusion = evaluation_options(DecodeOptions(temperature=0.3), "diffusion", [1, 5])
    assert (diffusion.completions, diffusion.strategy, diffusion.temperature) == (5, "greedy", 0.3)
    one = evaluation_options(DecodeOptions(chat=True), "ar", [1])
    assert one == dataclasses.replace(DecodeOptions(chat=True), completions=1)


def test_keyed_uniforms_depend_only_on_their_keys():
    from ar2diff.rng import keyed_uniform

    inputs, pos = torch.tensor([[11], [12], [13]]), torch.arange(5)[None]
    batch = keyed_uniform(7, inputs, 2, pos)
    assert batch.shape == (3, 5) and batch.dtype == torch.float32
    assert torch.equal(keyed_uniform(7, inputs[1:2], 2, pos), batch[1:2])  # alone = in a batch
    assert torch.equal(keyed_uniform(7, inputs, 2, pos[:, 2:4]), batch[:, 2:4])  # any chunk
    assert not torch.equal(keyed_uniform(8, inputs, 2, pos), batch)  # the seed matters
    many = keyed_uniform(0, torch.arange(400)[:, None], torch.arange(500)[None])
    assert 0 <= float(many.min()) and float(many.max()) < 1
    assert float(many.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(many.var()) == pytest.approx(1 / 12, abs=0.002)
    assert torch.histc(many, 10, 0, 1).div(many.numel()).sub(0.1).abs().max() < 0.005


def test_model_folders_describe_themselves_and_edits_need_trust(tmp_path, capsys):
    import json as _json

    from ar2diff.cli import main

    out = tmp_path / "run"
    toy = ["data.source=toy", "tokenizer.kind=toy", "model.size=nano", "data.target_length=12",
           "train.progress=false", "train.eval_every=0", "train.steps=1", "train.batch_size=2"]
    assert main(["train", *toy, f"train.out_dir={out}"]) == 0
    folder = out / "model"
    config = _json.loads((folder / "config.json").read_text())
    assert config["ar2diff"]["mode"] == "diffusion"
    assert "text diffusion model" in (folder / "README.md").read_text()
    (folder / "tokenizer_config.json").write_text(
        (folder / "tokenizer_config.json").read_text().replace("{", "{\n", 1))
    argv = ["generate", "--model", str(folder), "--prompt", "copy : 1 2", "--steps", "2"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer_config.json" in err[0] and "--trust-edited" in err[0]
    assert main([*argv, "--trust-edited"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning:") and "tokenizer_config.json" in captured.err
    assert captured.out.strip()
    assert main(argv) == 2  # the permission does not outlive its command


def test_plain_transformers_generate_decodes_by_diffusion_through_custom_generate(tmp_path):
    from transformers import AutoModelForCausalLM

    from ar2diff.cli import main
    from ar2diff.decoding import DecodeOptions
    from ar2diff.generation import TextGenerator

    out = tmp_path / "run"
    toy = ["data.source=toy", "tokenizer.kind=toy", "model.size=nano", "data.target_length=12",
           "train.progress=false", "train.eval_every=0", "train.steps=1", "train.batch_size=2"]
    assert main(["train", *toy, f"train.out_dir={out}"]) == 0
    folder = out / "model"
    gen = TextGenerator.load(str(folder), device="cpu")
    prompt = gen.encode_prompt("copy : 1 2 3", None)
    ours = gen.generate_ids([prompt], DecodeOptions(mode="diffusion", steps=3, seed=5))[0][0]
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([prompt])
    theirs = model.generate(ids, custom_generate=str(folder), trust_remote_code=True, steps=3,
                            seed=5)
    assert theirs[0, len(prompt):len(prompt) + len(ours)].tolist() == ours
