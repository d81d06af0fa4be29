"""Task loaders: real shared data, user paths, the Hub path (faked), and bad input."""

from __future__ import annotations

import json
import sys
import types
from functools import cache
from pathlib import Path

import pytest
from conftest import DATA, needs_data

from ar2diff.data.tasks import TRANSLATION_PREFIX, TaskExample, load_task, task_names, task_splits
from ar2diff.errors import Ar2DiffError
from ar2diff.paths import shared_data_dir


@cache
def _load(name: str, split: str = "test") -> tuple[TaskExample, ...]:
    return tuple(load_task(name, split))


# ---------------------------------------------------------------- shared data


def test_shared_data_dir_is_beside_the_repo_and_env_var_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("AR2DIFF_DATA", raising=False)
    found = shared_data_dir()
    expected = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    assert found == (expected if expected.is_dir() else None)
    monkeypatch.setenv("AR2DIFF_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv("AR2DIFF_DATA", str(tmp_path / "missing"))
    assert shared_data_dir() is None


@needs_data
@pytest.mark.parametrize(
    ("name", "split", "count", "first_id"),
    [
        ("wmt14-en-fr", "test", 3003, "newstest2014:1"),
        ("wmt14-en-fr", "validation", 3000, "newstest2013:1"),
        ("wmt14-en-fr", "train", 42573, "multi30k_train:1"),
        ("multi30k", "test", 1000, "multi30k_test_2016_flickr:1"),
        ("multi30k", "validation", 1014, "multi30k_val:1"),
        ("squad", "test", 10570, "56be4db0acb8001400a502ec"),
        ("squad", "validation", 10570, "56be4db0acb8001400a502ec"),
        ("squad", "train", 11877, None),
        ("mbpp", "prompt", 10, "1"),
        ("mbpp", "test", 500, "11"),
        ("mbpp", "validation", 90, "511"),
        ("mbpp", "train", 374, "601"),
        ("mbpp-plus", "test", 399, "Mbpp/2"),
    ],
)
def test_split_sizes_on_shared_data(name, split, count, first_id):
    examples = _load(name, split)
    assert len(examples) == count
    assert len({ex.id for ex in examples}) == count
    if first_id is not None:
        assert examples[0].id == first_id


def test_humaneval_from_the_package():
    examples = _load("humaneval")
    assert len(examples) == 164
    first = examples[0]
    assert first.id == "HumanEval/0"
    assert first.input.startswith("from typing import List")
    assert first.meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.meta["test"]


@needs_data
def test_translation_format_and_alignment():
    examples = _load("wmt14-en-fr")
    assert examples[0].input == TRANSLATION_PREFIX + "Spectacular Wingsuit Jump Over Bogota"
    assert examples[0].target == 'Spectaculaire saut en "wingsuit" au-dessus de Bogota'
    en = (DATA / "translation/en-fr/newstest2014.en").read_text(encoding="utf-8").split("\n")
    assert examples[-1].input == TRANSLATION_PREFIX + en[3002]


@needs_data
def test_squad_format_keeps_every_gold_answer():
    first = _load("squad")[0]
    assert first.input.endswith(" question: Which NFL team represented the AFC at Super Bowl 50?")
    assert first.input.startswith("context: Super Bowl 50 was an American football game")
    assert first.target == "Denver Broncos"
    assert first.meta["answers"] == ["Denver Broncos"] * 3


@needs_data
def test_mbpp_prompt_has_text_and_first_assert():
    first = _load("mbpp")[0]
    assert first.input == (
        '"""\nWrite a python function to remove first and last occurrence of a given '
        'character from the string.\nassert remove_Occ("hello","l") == "heo"\n"""\n'
    )
    assert first.target.startswith("def remove_Occ(s,ch):")
    assert "\r" not in first.target
    assert len(first.meta["test_list"]) == 3 and first.meta["task_id"] == 11


@needs_data
def test_mbpp_plus_prompt_names_the_function():
    examples = _load("mbpp-plus")
    first = examples[0]
    assert first.input == (
        '"""\nWrite a function to find the shared elements from the given two lists.\n'
        'assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"""\n'
    )
    assert first.meta["entry_point"] == "similar_elements"
    assert all(ex.meta["entry_point"] in ex.input for ex in examples)
    by_id = {ex.id: ex for ex in examples}
    assert by_id["Mbpp/793"].meta["plus_input"] == []  # written {} in the release file


@needs_data
def test_limit_and_task_lists():
    assert [ex.id for ex in load_task("mbpp", "test", limit=3)] == ["11", "12", "13"]
    assert set(task_names()) == {
        "wmt14-en-fr",
        "multi30k",
        "squad",
        "mbpp",
        "mbpp-plus",
        "humaneval",
        "jsonl",
    }
    assert task_splits("mbpp") == ("prompt", "test", "validation", "train")
    assert task_splits("humaneval") == ("test",)


# ---------------------------------------------------------------- user paths


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _mbpp_line(task_id: int, **changes) -> str:
    record = {
        "task_id": task_id,
        "text": "Add one.",
        "code": "def inc(x):\r\n    return x + 1",
        "test_list": ["assert inc(1) == 2", "assert inc(2) == 3"],
        "test_setup_code": "",
        "challenge_test_list": [],
    }
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def test_translation_prefix_pair_and_folder(tmp_path):
    _write(tmp_path / "news.en", "Hello\nGood night\n")
    _write(tmp_path / "news.fr", "Bonjour\nBonne nuit\n")
    by_prefix = load_task("wmt14-en-fr", path=str(tmp_path / "news"))
    assert [(ex.id, ex.input, ex.target) for ex in by_prefix] == [
        ("news:1", TRANSLATION_PREFIX + "Hello", "Bonjour"),
        ("news:2", TRANSLATION_PREFIX + "Good night", "Bonne nuit"),
    ]
    by_pair = load_task("wmt14-en-fr", path=f"{tmp_path / 'news.en'},{tmp_path / 'news.fr'}")
    assert [ex.target for ex in by_pair] == ["Bonjour", "Bonne nuit"]
    _write(tmp_path / "multi30k_test_2016_flickr.en", "A dog\n")
    _write(tmp_path / "multi30k_test_2016_flickr.fr", "Un chien\n")
    assert load_task("multi30k", path=str(tmp_path))[0].target == "Un chien"


def test_mbpp_file_is_used_whole_and_folder_is_split(tmp_path):
    _write(tmp_path / "mbpp.jsonl", "\n".join(_mbpp_line(i) for i in (5, 20, 600)) + "\n")
    whole = load_task("mbpp", "test", path=str(tmp_path / "mbpp.jsonl"))
    assert [ex.id for ex in whole] == ["5", "20", "600"]
    assert whole[0].target == "def inc(x):\n    return x + 1"
    assert [ex.id for ex in load_task("mbpp", "test", path=str(tmp_path))] == ["20"]


@needs_data
def test_shared_layout_folder_as_path():
    assert len(load_task("squad", "test", path=str(DATA), limit=5)) == 5
    assert len(load_task("wmt14-en-fr", "test", path=str(DATA))) == 3003


def test_humaneval_user_file(tmp_path):
    record = {
        "task_id": "T/0",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(c):\n    assert c() == 1\n",
        "entry_point": "f",
    }
    file = _write(tmp_path / "he.jsonl", json.dumps(record) + "\n")
    (example,) = load_task("humaneval", path=str(file))
    assert example == TaskExample(
        "T/0", "def f():\n", "    return 1\n", {"test": record["test"], "entry_point": "f"}
    )


# ---------------------------------------------------------------- Hub path (datasets faked)


def _fake_datasets(monkeypatch, rows_by_name: dict[str, list[dict]]) -> list[tuple]:
    calls: list[tuple] = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return rows_by_name[name]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("AR2DIFF_DATA", "/nonexistent/ar2diff-data")
    return calls


def test_hub_rows_are_converted(monkeypatch):
    calls = _fake_datasets(
        monkeypatch,
        {
            "rajpurkar/squad": [
                {
                    "id": "q1",
                    "title": "t",
                    "context": "C.",
                    "question": "Q?",
                    "answers": {"text": ["a1", "a2"], "answer_start": [0, 1]},
                }
            ],
            "wmt/wmt14": [{"translation": {"en": "Hi", "fr": "Salut"}}],
            "evalplus/mbppplus": [
                {
                    "task_id": 2,
                    "prompt": "Write f.",
                    "code": "def f():\n  return 1",
                    "test_list": ["assert f() == 1"],
                    "test_imports": [],
                    "test": "assert f() == 1\n",
                    "source_file": "x",
                }
            ],
        },
    )
    (qa,) = load_task("squad", "test", limit=1)
    assert (qa.id, qa.input, qa.target, qa.meta) == (
        "q1",
        "context: C. question: Q?",
        "a1",
        {"answers": ["a1", "a2"]},
    )
    (tr,) = load_task("wmt14-en-fr", "test")
    assert (tr.id, tr.input, tr.target) == ("newstest2014:1", TRANSLATION_PREFIX + "Hi", "Salut")
    (code,) = load_task("mbpp-plus")
    assert code.id == "Mbpp/2" and code.input == '"""\nWrite f.\nassert f() == 1\n"""\n'
    assert calls == [
        ("rajpurkar/squad", None, "validation[:1]"),
        ("wmt/wmt14", "fr-en", "test"),
        ("evalplus/mbppplus", None, "test"),
    ]


def test_no_data_and_no_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    monkeypatch.setenv("AR2DIFF_DATA", "/nonexistent/ar2diff-data")
    with pytest.raises(Ar2DiffError, match="datasets"):
        load_task("squad")


# ---------------------------------------------------------------- bad input


def _error(name: str, path: Path | str, split: str = "test") -> str:
    with pytest.raises(Ar2DiffError) as info:
        load_task(name, split, path=str(path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_malformed_json_line_names_file_and_line(tmp_path):
    file = _write(tmp_path / "m.jsonl", _mbpp_line(11) + "\n{not json\n")
    assert f"{file}:2:" in _error("mbpp", file)


def test_non_object_line_names_file_and_line(tmp_path):
    file = _write(tmp_path / "m.jsonl", "\n" + _mbpp_line(11) + "\n[1, 2]\n")
    assert f"{file}:3:" in _error("mbpp", file)


def test_missing_field_names_file_line_and_field(tmp_path):
    file = _write(tmp_path / "m.jsonl", _mbpp_line(11) + "\n" + _mbpp_line(12, code=None) + "\n")
    message = _error("mbpp", file)
    assert f"{file}:2:" in message and "'code'" in message


def test_wrong_field_type_names_file_line_and_field(tmp_path):
    file = _write(tmp_path / "m.jsonl", _mbpp_line(11, test_list="assert True") + "\n")
    message = _error("mbpp", file)
    assert f"{file}:1:" in message and "'test_list'" in message


def test_missing_field_in_mbpp_plus_and_humaneval(tmp_path):
    file = _write(tmp_path / "plus.jsonl", json.dumps({"task_id": "Mbpp/2", "prompt": "x"}) + "\n")
    assert f"{file}:1:" in _error("mbpp-plus", file)
    file = _write(tmp_path / "he.jsonl", json.dumps({"task_id": "T/0", "prompt": "x"}) + "\n")
    message = _error("humaneval", file)
    assert f"{file}:1:" in message and "missing field" in message


@pytest.mark.parametrize(
    "name,filename", [("mbpp", "m.jsonl"), ("squad", "s.json"), ("humaneval", "h.jsonl")]
)
def test_empty_file(tmp_path, name, filename):
    file = _write(tmp_path / filename, "\n")
    message = _error(name, file)
    assert str(file) in message and "empty" in message


def test_squad_malformed_json_names_line(tmp_path):
    file = _write(tmp_path / "s.json", '{"data": [\n  {"title": "x",\n  oops}\n]}\n')
    assert f"{file}:3:" in _error("squad", file)


def test_squad_missing_field_names_the_field_path(tmp_path):
    doc = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "c",
                        "qas": [
                            {"id": "1", "question": "q", "answers": [{"text": "a"}]},
                            {"id": "2", "question": "q"},
                        ],
                    }
                ],
            }
        ]
    }
    file = _write(tmp_path / "s.json", json.dumps(doc))
    message = _error("squad", file)
    assert str(file) in message and "data[0].paragraphs[0].qas[1]" in message
    assert "'answers'" in message


def test_translation_line_counts_differ(tmp_path):
    _write(tmp_path / "x.en", "one\ntwo\nthree\n")
    _write(tmp_path / "x.fr", "un\ndeux\n")
    message = _error("wmt14-en-fr", tmp_path / "x")
    assert f"{tmp_path / 'x.fr'}:3:" in message and str(tmp_path / "x.en") in message


def test_translation_empty_and_missing_files(tmp_path):
    _write(tmp_path / "x.en", "")
    _write(tmp_path / "x.fr", "un\n")
    assert "empty" in _error("wmt14-en-fr", tmp_path / "x")
    assert str(tmp_path / "y.en") in _error("wmt14-en-fr", tmp_path / "y")


def test_invalid_utf8_names_line(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(_mbpp_line(11).encode() + b"\n\xff\xfe\n")
    assert f"{tmp_path / 'm.jsonl'}:2:" in _error("mbpp", tmp_path / "m.jsonl")


def test_unknown_task_split_and_limit():
    with pytest.raises(Ar2DiffError, match="unknown task 'wmt16'"):
        load_task("wmt16")
    with pytest.raises(Ar2DiffError, match="unknown split 'dev'.*test"):
        load_task("mbpp", "dev")
    with pytest.raises(Ar2DiffError, match="unknown split 'train'"):
        load_task("humaneval", "train")
    with pytest.raises(Ar2DiffError, match="limit"):
        load_task("humaneval", limit=0)


def test_missing_path(tmp_path):
    assert "no such file or folder" in _error("squad", tmp_path / "nope.json")
