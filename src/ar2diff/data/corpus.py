"""Pretraining corpora: English books + Python source, tokenised once and cached.

The default mix follows the paper's 80 % web text / 20 % code: the Project Gutenberg books of the
shared data folder and the running interpreter's standard library. Any text files or folders
can be given instead; a ``.jsonl`` file of examples (:mod:`ar2diff.data.generic`) counts as one
document per example (input, a newline, target). Each stream reads at most ``data.max_chars``
characters (0: all) and holds its last ``data.held_out`` fraction (2 % by default) out for the
evaluation loss; :func:`describe_stream` says what was used.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ar2diff.errors import Ar2DiffError
from ar2diff.paths import shared_data_dir

HELD_OUT_FRACTION = 0.02  # the default of data.held_out


def default_text_files() -> list[Path]:
    """The English books of the shared data folder (empty if it is absent)."""
    root = shared_data_dir()
    return sorted((root / "corpus" / "books").glob("*.txt")) if root else []


def default_code_files() -> list[Path]:
    """Python source of the standard library, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg licence header and footer when present."""
    start = text.find("*** START OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1:]
    end = text.find("*** END OF")
    return text[:end] if end >= 0 else text


def expand(paths: list[str]) -> list[Path]:
    """Files named directly, and the text / source files inside named folders."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.suffix in (".txt", ".py", ".md", ".jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise Ar2DiffError(f"corpus path {raw} does not exist; pass text files or folders")
    if not files:
        raise Ar2DiffError(f"corpus {paths} contains no .txt/.py/.md/.jsonl files")
    return files


def read_texts(files: list[Path], max_chars: int) -> Iterator[str]:
    """File contents (undecodable bytes replaced) until ``max_chars`` characters are read
    (0: no limit)."""
    total = 0
    for path in files:
        if path.suffix == ".jsonl":
            from ar2diff.data.generic import load_jsonl_task

            text = "\n\n".join(f"{ex.input}\n{ex.target}" for ex in load_jsonl_task(path))
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".txt":
            text = strip_gutenberg(text)
        if max_chars:
            text = text[: max_chars - total]
        total += len(text)
        yield text
        if max_chars and total >= max_chars:
            return


@dataclass
class TokenStream:
    """A tokenised stream split into training and held-out parts."""

    train: torch.Tensor
    held_out: torch.Tensor
    files: int = 0  # files read (the rest cut off by the character limit)
    files_given: int = 0
    chars: int = 0  # characters read


def tokenize_stream(files: list[Path], tokenizer: PreTrainedTokenizerBase, max_chars: int,
                    cache_dir: Path | None, held_out: float = HELD_OUT_FRACTION) -> TokenStream:
    """Tokenise files (documents separated by EOS), cached by content and tokenizer; the last
    ``held_out`` fraction of the tokens is held out."""
    key = hashlib.sha256(b"v2")
    for f in files:
        st = f.stat()
        key.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    key.update(f"{max_chars}:{tokenizer.name_or_path}:{len(tokenizer)}".encode())
    key.update(str(sorted(tokenizer.get_vocab().items())[:50]).encode())
    cache = cache_dir / f"tokens-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        stored = torch.load(cache)
    else:
        ids: list[int] = []
        eos = tokenizer.eos_token_id
        n_files = n_chars = 0
        for text in read_texts(files, max_chars):
            for start in range(0, len(text), 100_000):
                ids += tokenizer.encode(text[start:start + 100_000], add_special_tokens=False)
            ids.append(eos)
            n_files, n_chars = n_files + 1, n_chars + len(text)
        stored = {"tokens": torch.tensor(ids, dtype=torch.int32), "files": n_files,
                  "chars": n_chars}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save(stored, tmp)
            tmp.replace(cache)
    tokens = stored["tokens"]
    cut = int(len(tokens) * (1 - held_out))
    return TokenStream(tokens[:cut], tokens[cut:], stored["files"], len(files), stored["chars"])


def describe_stream(stream: TokenStream, max_chars: int, segment_length: int) -> str:
    """One line saying how much of a stream is used: files, characters, tokens, segments."""
    cut = (f"; cut at data.max_chars={max_chars:,}" if max_chars and stream.files < stream.files_given
           or max_chars and stream.chars >= max_chars else "")
    n_train, n_held = len(stream.train), len(stream.held_out)
    return (f"{stream.files} of {stream.files_given} files, {stream.chars:,} characters{cut}; "
            f"{n_train + n_held:,} tokens: {n_train:,} for training "
            f"(~{n_train // max(segment_length, 1):,} segments of {segment_length}), "
            f"{n_held:,} held out")
