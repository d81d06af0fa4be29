"""Pretraining corpora: English books + Python source, tokenised once and cached.

The default mix follows the paper's 80 % web text / 20 % code: the Project Gutenberg books of the
shared data folder and the running interpreter's standard library. Any text files or folders
(or a Hugging Face dataset name ``hf:NAME[:CONFIG]``, online only) can be given instead. The last
2 % of each stream is held out for evaluation.
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

HELD_OUT_FRACTION = 0.02


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
            files += sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".py", ".md"))
        elif path.is_file():
            files.append(path)
        else:
            raise Ar2DiffError(f"corpus path {raw} does not exist; pass text files or folders")
    if not files:
        raise Ar2DiffError(f"corpus {paths} contains no .txt/.py/.md files")
    return files


def read_texts(files: list[Path], max_chars: int) -> Iterator[str]:
    """File contents (undecodable bytes replaced) until ``max_chars`` characters are read."""
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".txt":
            text = strip_gutenberg(text)
        text = text[: max_chars - total]
        total += len(text)
        yield text
        if total >= max_chars:
            return


@dataclass
class TokenStream:
    """A tokenised stream split into training and held-out parts."""

    train: torch.Tensor
    held_out: torch.Tensor


def tokenize_stream(files: list[Path], tokenizer: PreTrainedTokenizerBase, max_chars: int,
                    cache_dir: Path | None) -> TokenStream:
    """Tokenise files (documents separated by EOS), cached by content and tokenizer."""
    key = hashlib.sha256()
    for f in files:
        st = f.stat()
        key.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    key.update(f"{max_chars}:{tokenizer.name_or_path}:{len(tokenizer)}".encode())
    key.update(str(sorted(tokenizer.get_vocab().items())[:50]).encode())
    cache = cache_dir / f"tokens-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        tokens = torch.load(cache)
    else:
        ids: list[int] = []
        eos = tokenizer.eos_token_id
        for text in read_texts(files, max_chars):
            for start in range(0, len(text), 100_000):
                ids += tokenizer.encode(text[start:start + 100_000], add_special_tokens=False)
            ids.append(eos)
        tokens = torch.tensor(ids, dtype=torch.int32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save(tokens, tmp)
            tmp.replace(cache)
    cut = int(len(tokens) * (1 - HELD_OUT_FRACTION))
    return TokenStream(tokens[:cut], tokens[cut:])
