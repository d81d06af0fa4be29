"""Task records: :class:`TaskExample`, and reading the files and Hub rows examples are built from.

Readers and field checks raise :class:`Ar2DiffError` naming the file and line (or JSON field).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ar2diff.errors import Ar2DiffError
from ar2diff.paths import shared_data_dir


@dataclass(frozen=True)
class TaskExample:
    """One example: the formatted prompt, the reference text, and what the metric needs."""

    id: str
    input: str
    target: str
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reading files, checking fields


def _read_text(path: Path) -> str:
    """Whole file as text (gzip when it ends in .gz); errors name the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise Ar2DiffError(f"{path}: cannot read ({e.strerror or e}); check the path") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise Ar2DiffError(f"{path}:{line}: not valid UTF-8; re-save the file as UTF-8") from e


def read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """(``file:line``, object) for each non-blank line of a JSON-lines file."""
    records = []
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise Ar2DiffError(
                f"{where}: invalid JSON ({e.msg}, column {e.colno}); fix or delete this line"
            ) from e
        records.append((where, _as_object(record, where)))
    if not records:
        raise Ar2DiffError(f"{path}: file is empty; expected one JSON object per line")
    return records


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    if not text.strip():
        raise Ar2DiffError(f"{path}: file is empty; expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Ar2DiffError(
            f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno}); fix the file"
        ) from e


def _as_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise Ar2DiffError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _field(record: dict, name: str, kind: type | tuple[type, ...], where: str, hint: str) -> Any:
    """``record[name]`` checked for presence and type; ``hint`` says what a record needs."""
    if name not in record:
        raise Ar2DiffError(f"{where}: missing field '{name}' ({hint}); fix this record")
    value = record[name]
    if not isinstance(value, kind):
        raise Ar2DiffError(
            f"{where}: field '{name}' should be {_kind_name(kind)}, not {type(value).__name__} "
            f"({hint}); fix this record"
        )
    return value


def _str_list(record: dict, name: str, where: str, hint: str) -> list[str]:
    values = _field(record, name, list, where, hint)
    if not all(isinstance(v, str) for v in values):
        raise Ar2DiffError(f"{where}: field '{name}' should be a list of strings ({hint})")
    return values


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", list: "a list", dict: "an object", int: "a number", float: "a number"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _find(path: str | None, default_rel: str, split_file: str) -> Path | None:
    """The file to read: ``path`` itself, the standard file inside folder ``path``, or the
    standard file in the shared data folder (``default_rel`` is its folder there); None when
    ``path`` is None and there is no shared data folder (the caller then uses the Hub)."""
    if path is None:
        root = shared_data_dir()
        return None if root is None else root / default_rel / split_file
    given = Path(path).expanduser()
    if given.is_file():
        return given
    if given.is_dir():
        for candidate in (given / split_file, given / default_rel / split_file):
            if candidate.is_file():
                return candidate
        raise Ar2DiffError(f"{given}: no {split_file} in this folder; pass the file itself")
    raise Ar2DiffError(f"{given}: no such file or folder; check the path")


# ---------------------------------------------------------------- Hugging Face Hub


def _hub_rows(name: str, config: str | None, split: str, limit: int | None) -> list[dict]:
    """Rows of a Hub data set (used when the shared data folder is absent)."""
    try:
        import datasets
    except ImportError as e:
        raise Ar2DiffError(
            f"no local copy of {name} (shared data folder not found) and the `datasets` package "
            "is missing; set AR2DIFF_DATA, pass a path, or pip install 'ar2diff[hub]'"
        ) from e
    hf_split = split if limit is None else f"{split}[:{limit}]"
    try:
        data = datasets.load_dataset(name, config, split=hf_split)
    except Exception as e:  # network, missing data set, old cache: all need the same user action
        raise Ar2DiffError(
            f"could not load {name} ({hf_split}) from the Hugging Face Hub: {e}; "
            "check the connection or pass a local path"
        ) from e
    return [dict(row) for row in data]
