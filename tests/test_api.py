"""The Python API and the journey of a user with their own model and data: the examples of
docs/api.md run as written, and the command line and Python give the same text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import ar2diff
from ar2diff.cli import main
from ar2diff.errors import Ar2DiffError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture
def own(tmp_path, toy_tokenizer):
    """A tiny random Llama saved as a Hugging Face folder, and train / test JSONL files."""
    from conftest import tiny_model

    base = tmp_path / "base"
    tiny_model("llama", vocab=len(toy_tokenizer)).save_pretrained(base)
    toy_tokenizer.save_pretrained(base)
    gen = torch.Generator().manual_seed(0)

    def rows(n: int) -> str:
        out = []
        for _ in range(n):
            digits = " ".join(str(int(d)) for d in torch.randint(0, 10, (3,), generator=gen))
            out.append(json.dumps({"input": f"copy : {digits}", "target": digits}))
        return "\n".join(out) + "\n"

    (tmp_path / "train.jsonl").write_text(rows(1200))
    (tmp_path / "test.jsonl").write_text(rows(3))
    return {"BASE": str(base), "TRAIN": str(tmp_path / "train.jsonl"),
            "TEST": str(tmp_path / "test.jsonl"), "WORK": str(tmp_path / "work")}


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown page, without those that start ``# setup``."""
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if not b.startswith("# setup")]


# three short trainings and two evaluations: about 1 s on an idle 2-core CPU
def test_the_examples_of_docs_api_run(own, capsys):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    names = dict(own)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), names)  # noqa: S102 - our own documentation
    assert names["model"].meta.noise == "mask"  # adapted, then fine-tuned under the same noise
    assert Path(names["WORK"], "results.json").is_file()
    assert "percent (0-100)" in capsys.readouterr().out


def test_the_journey_from_the_command_line_and_from_python(own, tmp_path, capsys):
    work = Path(own["WORK"])
    small = ["train.progress=false", "train.bf16=false"]
    assert main(["adapt", "--model", own["BASE"], "--data", own["TRAIN"], "--steps", "2",
                 "--out", str(work / "adapted"), *small]) == 0
    adapted = work / "adapted" / "model"
    assert main(["finetune", "--model", str(adapted), "--data", own["TRAIN"], "--steps", "2",
                 "--out", str(work / "tuned"), *small, "train.eval_every=2",
                 "data.target_length=8", "train.eval_examples=4"]) == 0
    tuned = work / "tuned" / "model"
    meta = ar2diff.load(tuned, device="cpu").meta
    before = ar2diff.load(adapted, device="cpu").meta
    assert (meta.noise, meta.layout, meta.shift) == (before.noise, before.layout, before.shift)
    assert (meta.decoding.steps, meta.decoding.block_length) == (
        before.decoding.steps, before.decoding.block_length)
    assert meta.prompt_format == "raw" and (work / "tuned" / "best" / "ar2diff.json").is_file()
    # refused, not silently reused
    assert main(["finetune", "--model", str(adapted), "--data", own["TRAIN"], "--steps", "2",
                 "--out", str(work / "tuned")]) == 2
    assert "not empty" in capsys.readouterr().err
    results = work / "results.json"
    assert main(["evaluate", "--model", str(tuned), "--data", own["TEST"], "--steps", "3",
                 "--metric", "f1", "--out", str(results), "--device", "cpu"]) == 0
    saved = json.loads(results.read_text())
    assert saved["metrics"]["metric"] == "f1" and saved["units"]["f1"] == "percent (0-100)"
    assert saved["wall_seconds"] > 0 and saved["setup"]["ar2diff_version"] == ar2diff.__version__
    assert saved["setup"]["commit"] is None or len(saved["setup"]["commit"]) == 40
    # the command line and Python give the same text for the same prompt and seed
    prompt = json.loads(Path(own["TEST"]).read_text().splitlines()[0])["input"]
    capsys.readouterr()
    assert main(["generate", "--model", str(tuned), "--prompt", prompt, "--seed", "5",
                 "--steps", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    model = ar2diff.load(tuned, device="cpu")
    assert printed == model.generate(prompt, seed=5, steps=3) + "\n"
    # and evaluation decoded its prompts as generate does
    first = saved["predictions"][0]
    assert first["completion"] == model.generate(prompt, steps=3)


def test_generate_returns_shapes_and_refuses_unknown_options(own):
    model = ar2diff.load(own["BASE"], device="cpu")
    assert isinstance(model.generate("copy : 1", mode="ar", max_new_tokens=2), str)
    two = model.generate(["copy : 1", "copy : 2"], mode="ar", max_new_tokens=2)
    assert isinstance(two, list) and len(two) == 2
    many = model.generate("copy : 1", mode="ar", max_new_tokens=2, completions=3,
                          strategy="sample")
    assert len(many) == 3 and all(isinstance(t, str) for t in many)
    with pytest.raises(Ar2DiffError, match="unknown decoding option 'stepz'"):
        model.generate("copy : 1", stepz=3)
    with pytest.raises(AttributeError):
        ar2diff.nothing_here  # noqa: B018
