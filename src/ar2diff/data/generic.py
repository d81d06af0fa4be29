"""Your own task as a JSON-lines file: one example per line, in any of three shapes.

- ``{"input": ..., "target": ...}``
- ``{"prompt": ..., "completion": ...}``
- ``{"messages": [{"role": ..., "content": ...}, ...]}``: the last message (the assistant's)
  is the target, the contents of the earlier ones, joined by newlines, the input.

Optional fields: ``id`` (default: the line number), ``answers`` (a list of acceptable targets,
for exact match and F1), ``tests`` (Python test code, a string or a list of lines, run after
the completion for pass@k) and ``setup`` (code run before the completion).
"""

from __future__ import annotations

from pathlib import Path

from ar2diff.data.records import TaskExample, _field, _str_list, read_jsonl
from ar2diff.errors import Ar2DiffError

SHAPES = (("input", "target"), ("prompt", "completion"))
HINT = 'each line needs "input"/"target", "prompt"/"completion" or chat "messages"'


def load_jsonl_task(path: str | Path | None) -> list[TaskExample]:
    """The examples of a generic JSONL file (shapes in the module docstring)."""
    if path is None:
        raise Ar2DiffError("task jsonl needs a file of your own: pass --data FILE.jsonl")
    file = Path(path).expanduser()
    if not file.is_file():
        raise Ar2DiffError(f"{file}: no such file; pass a JSONL file of examples")
    examples = [_example(record, where, n)
                for n, (where, record) in enumerate(read_jsonl(file), 1)]
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise Ar2DiffError(f"{file}: id {dup!r} appears twice; give every example its own id")
    return examples


def _example(record: dict, where: str, n: int) -> TaskExample:
    if "messages" in record:
        source, target = _from_messages(record, where)
    else:
        shape = next((s for s in SHAPES if s[0] in record), None)
        if shape is None:
            raise Ar2DiffError(f"{where}: no example fields ({HINT}); fix this line")
        source = _field(record, shape[0], str, where, HINT)
        target = _field(record, shape[1], str, where, HINT)
    meta: dict = {}
    if "answers" in record:
        meta["answers"] = _str_list(record, "answers", where, "a list of acceptable answers")
    if "tests" in record:
        tests = record["tests"]
        if isinstance(tests, list):
            tests = "\n".join(_str_list(record, "tests", where, "Python test lines"))
        elif not isinstance(tests, str):
            raise Ar2DiffError(f"{where}: field 'tests' should be a string or a list of strings")
        meta["tests"] = tests
        meta["setup"] = _field(record, "setup", str, where, "Python code") if "setup" in record \
            else ""
    ex_id = record.get("id", str(n))
    if isinstance(ex_id, bool) or not isinstance(ex_id, (str, int)):
        raise Ar2DiffError(f"{where}: field 'id' should be a string or a number")
    return TaskExample(str(ex_id), source, target, meta)


def _from_messages(record: dict, where: str) -> tuple[str, str]:
    messages = _field(record, "messages", list, where, HINT)
    if len(messages) < 2:
        raise Ar2DiffError(f"{where}: 'messages' needs at least a user and an assistant message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise Ar2DiffError(f"{where}: messages[{i}] needs a string 'content'")
    if messages[-1].get("role") != "assistant":
        raise Ar2DiffError(f"{where}: the last message should be the assistant's (the target)")
    return "\n".join(m["content"] for m in messages[:-1]), messages[-1]["content"]


def has_tests(examples: list[TaskExample]) -> bool:
    """Whether every example carries tests (then pass@k can score it)."""
    return bool(examples) and all("tests" in ex.meta for ex in examples)
