"""Your own data: generic JSONL tasks, their metrics, fine-tuning defaults by recipe, and one
prompt format from training to decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ar2diff.data.tasks import load_task
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.scoring import score_completions


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_the_three_shapes_of_a_generic_jsonl_file(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        {"input": "2 + 2 =", "target": "4"},
        {"prompt": "capital of France?", "completion": "Paris", "id": "fr"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Say hi"},
                      {"role": "assistant", "content": "hi"}], "answers": ["hi", "hello"]},
    ])
    a, b, c = load_task("jsonl", "train", path)
    assert (a.id, a.input, a.target) == ("1", "2 + 2 =", "4")
    assert (b.id, b.input, b.target) == ("fr", "capital of France?", "Paris")
    assert (c.input, c.target, c.meta["answers"]) == ("Be brief.\nSay hi", "hi", ["hi", "hello"])


@pytest.mark.parametrize("row,message", [
    ({"question": "x"}, r"mine.jsonl:1: no example fields"),
    ({"input": "x"}, r"mine.jsonl:1: missing field 'target'"),
    ({"input": "x", "target": 3}, r"field 'target' should be a string"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]},
     "the last message should be the assistant's"),
    ({"input": "x", "target": "y", "tests": 5}, "'tests' should be a string or a list"),
    ("{not json", r"mine.jsonl:1: invalid JSON"),
])
def test_bad_records_are_named_with_their_line(tmp_path, row, message):
    path = _write(tmp_path / "mine.jsonl", [row])
    with pytest.raises(Ar2DiffError, match=message):
        load_task("jsonl", "test", path)


def test_duplicate_ids_and_a_missing_file_are_refused(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [{"input": "a", "target": "b", "id": "x"},
                                            {"input": "c", "target": "d", "id": "x"}])
    with pytest.raises(Ar2DiffError, match="id 'x' appears twice"):
        load_task("jsonl", "test", path)
    with pytest.raises(Ar2DiffError, match="no such file"):
        load_task("jsonl", "test", tmp_path / "nope.jsonl")
    with pytest.raises(Ar2DiffError, match="--data FILE"):
        load_task("jsonl", "test")


def test_generic_text_metrics(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        {"input": "a", "target": "the cat sat on the mat"},
        {"input": "b", "target": "Paris", "answers": ["Paris", "paris, France"]},
    ])
    examples = load_task("jsonl", "test", path)
    completions = [["  the cat sat on a rug \n"], ["Paris"]]
    res = score_completions("jsonl", examples, completions)
    m = res["metrics"]
    assert m["metric"] == "exact_match" and m["exact_match"] == pytest.approx(50.0)
    assert 50 < m["f1"] < 100 and 0 < m["bleu"] < 100 and 0 < m["chrf"] < 100
    assert res["units"]["chrf"] == "percent (0-100)"
    first = res["predictions"][0]
    assert first["prediction"] == "the cat sat on a rug"  # stripped; the raw text is kept too
    assert first["completion"] == "  the cat sat on a rug \n"
    assert score_completions("jsonl", examples, completions, metric="chrf")["metrics"][
        "metric"] == "chrf"
    with pytest.raises(Ar2DiffError, match="pass@k needs a 'tests' field"):
        score_completions("jsonl", examples, completions, metric="pass@k")
    with pytest.raises(Ar2DiffError, match="--metric 'rouge'"):
        score_completions("jsonl", examples, completions, metric="rouge")
    with pytest.raises(Ar2DiffError, match="squad has its own metrics"):
        score_completions("squad", examples, completions, metric="f1")


def test_generic_code_tasks_are_scored_by_pass_at_k_in_the_sandbox(tmp_path):
    path = _write(tmp_path / "code.jsonl", [
        {"prompt": "def add(a, b):", "completion": "def add(a, b):\n    return a + b",
         "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
        {"prompt": "def neg(a):", "completion": "def neg(a):\n    return -a",
         "tests": "assert neg(2) == -2", "setup": "import math"},
    ])
    examples = load_task("jsonl", "test", path)
    completions = [["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"],
                   ["def neg(a):\n    return -a", "def neg(a):\n    return a"]]
    res = score_completions("jsonl", examples, completions, ks=[1, 2])
    m = res["metrics"]
    assert m["metric"] == "pass@k"
    assert m["pass@1"] == pytest.approx(50.0) and m["pass@2"] == pytest.approx(100.0)
    assert res["predictions"][0]["passed"] == [True, False]
    assert res["predictions"][0]["completions"][1].endswith("a - b")


def test_finetune_defaults_follow_the_recipe(tmp_path):
    from ar2diff.recipes import adapt_config, finetune_config

    adapt = adapt_config("smollm2-135m", 5, str(tmp_path / "a"))
    zero = finetune_config("smollm2-135m", "squad", "diffusion", str(tmp_path / "f"))
    # AR2Diff_0 by default: the adapt recipe's noise, layout and decoding (a fair comparison)
    for field in ("noise", "unroll", "shift", "input_attention"):
        assert getattr(zero.objective, field) == getattr(adapt.objective, field), field
    for field in ("steps", "block_length", "temperature", "candidates"):
        assert getattr(zero.sample, field) == getattr(adapt.sample, field), field
    paper = finetune_config("smollm2-135m", "squad", "diffusion", str(tmp_path / "f"),
                            recipe="paper")
    assert (paper.objective.noise, paper.objective.unroll, paper.sample.steps) == (
        "uniform", 2, 10)
    assert (paper.objective.input_attention, paper.objective.shift) == ("prefix", False)
    paper_adapt = adapt_config("smollm2-135m", 5, str(tmp_path / "a"), recipe="paper")
    o = paper_adapt.objective
    assert (o.noise, o.unroll, o.input_attention, o.shift, o.anneal_steps) == (
        "uniform", 2, "prefix", False, 0)
    assert (paper_adapt.sample.steps, paper_adapt.sample.block_length) == (10, 0)
    assert (adapt.objective.noise, adapt.objective.shift) == ("mask", True)  # the default recipe
    with pytest.raises(Ar2DiffError, match="--recipe 'magic'"):
        adapt_config("smollm2-135m", 5, str(tmp_path / "a"), recipe="magic")
    # an adapted model keeps its noise, layout and decoding defaults (its length is the task's)
    (tmp_path / "adapted").mkdir()
    (tmp_path / "adapted" / "ar2diff.json").write_text(json.dumps({
        "schema": 2, "mode": "diffusion", "layout": "diffusion", "shift": False, "noise": "mask",
        "decoding": {"steps": 24, "block_length": 8, "temperature": 0.5, "candidates": 2,
                     "max_new_tokens": 32, "repetition_penalty": 1.1}}))
    ft = finetune_config(str(tmp_path / "adapted"), None, "diffusion", str(tmp_path / "f"),
                         data=str(tmp_path / "mine.jsonl"), overrides=["sample.candidates=4"])
    assert (ft.objective.noise, ft.objective.unroll, ft.objective.input_attention,
            ft.objective.shift) == ("mask", 1, "prefix", False)
    assert (ft.sample.steps, ft.sample.block_length, ft.sample.temperature,
            ft.sample.repetition_penalty) == (24, 8, 0.5, 1.1)
    assert ft.sample.candidates == 4  # an override still wins
    assert (ft.data.source, ft.data.task, ft.data.task_path) == (
        "task", "jsonl", str(tmp_path / "mine.jsonl"))
    with pytest.raises(Ar2DiffError, match="--task NAME or --data FILE"):
        finetune_config("smollm2-135m", None, "diffusion", str(tmp_path / "f"))


CHAT = ("{% for m in messages %}user {{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %} answer{% endif %}")


def test_one_prompt_format_from_training_to_decoding(tmp_path, toy_tokenizer):
    from conftest import tiny_model

    from ar2diff.config import load_config
    from ar2diff.decoding import DecodeOptions
    from ar2diff.evaluation.run import evaluate_model
    from ar2diff.generation import TextGenerator
    from ar2diff.tokenization import encode_prompt_text
    from ar2diff.training.assemble import build_source, run_training

    toy_tokenizer.chat_template = CHAT
    base = tmp_path / "base"
    tiny_model("llama", vocab=len(toy_tokenizer)).save_pretrained(base)
    toy_tokenizer.save_pretrained(base)
    data = _write(tmp_path / "copy.jsonl", [{"input": f"copy : {i} {i + 1}",
                                             "target": f"{i} {i + 1}"} for i in range(8)])
    overrides = [f"model.pretrained={base}", f"data.task_path={data}", "data.prompt_format=chat",
                 "data.target_length=6", "train.steps=2", "train.batch_size=2",
                 "train.eval_every=0", "train.progress=false", "objective.kind=diffusion",
                 f"train.out_dir={tmp_path / 'ft'}"]
    config = load_config(None, overrides)
    source = build_source(config, toy_tokenizer)
    chat_ids = encode_prompt_text(toy_tokenizer, "copy : 0 1", "chat")
    assert chat_ids != encode_prompt_text(toy_tokenizer, "copy : 0 1", "raw")
    assert any(source.example(i).input_ids == tuple(chat_ids) for i in range(8))
    result = run_training(config)
    gen = TextGenerator.load(str(result.model_dir))
    assert gen.meta.prompt_format == "chat" and gen.prompt_format(None) == "chat"
    assert gen.encode_prompt("copy : 0 1", None) == chat_ids  # what it was trained on
    assert gen.encode_prompt("copy : 0 1", False) != chat_ids  # overridable
    opts = DecodeOptions(steps=2, max_new_tokens=4)
    res = evaluate_model(gen, None, opts, data=str(data), limit=2, progress=False)
    assert res["setup"]["prompt_format"] == "chat"
    expected = gen.generate([data_row["input"] for data_row in
                             map(json.loads, data.read_text().splitlines()[:2])], opts)
    assert [p["completion"] for p in res["predictions"]] == [row[0] for row in expected]


def test_folders_without_a_recorded_prompt_format_get_raw_prompts():
    from ar2diff.models.meta import ModelMeta

    old = ModelMeta.from_dict({"schema": 2, "mode": "diffusion", "layout": "diffusion"})
    assert old.prompt_format is None
    assert ModelMeta.from_dict({**old.to_dict(), "prompt_format": "chat"}).prompt_format == "chat"
    assert ModelMeta.pretrained("x", 10).prompt_format is None
