"""ar2diff model folders: Hugging Face format (config + safetensors + tokenizer) plus metadata.

``transformers`` can load the weights of any folder written here as usual; ``ar2diff.json``
adds what ar2diff needs (:class:`~ar2diff.models.meta.ModelMeta`: AR or diffusion, layout,
shift, noise, decoding defaults, the run config) and ``checksums.json`` the SHA-256 of every
file, verified on load. Folders are written to a temporary name and renamed into place, so a
crash never leaves a half-written folder that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from ar2diff.errors import Ar2DiffError
from ar2diff.models.meta import ModelMeta

META = "ar2diff.json"
CHECKSUMS = "checksums.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_folder_atomic(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``target`` by calling ``fill(tmp)`` on a fresh temporary folder, then renaming.

    Checksums of every file are written last; an existing ``target`` is replaced whole.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        fill(tmp)
        sums = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=2), encoding="utf-8")
        _fsync_folder(tmp)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync_folder(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_folder(folder: Path) -> None:
    """Raise if any file listed in ``checksums.json`` is missing or altered."""
    sums_path = folder / CHECKSUMS
    if not sums_path.is_file():
        raise Ar2DiffError(f"{folder} has no {CHECKSUMS}: it is incomplete; delete it or re-save")
    try:
        sums = json.loads(sums_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Ar2DiffError(f"{sums_path} is corrupted ({exc}); delete the folder") from exc
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file() or sha256(path) != expected:
            raise Ar2DiffError(f"{path} is missing or corrupted (checksum mismatch); "
                               "delete the folder or resume from an earlier checkpoint")


def save_model(target: Path, model, tokenizer, meta: ModelMeta,
               extra: Callable[[Path], None] | None = None,
               state_dict: dict[str, Any] | None = None) -> Path:
    """Save model + tokenizer + metadata atomically; ``extra(tmp)`` may add files (e.g. state).

    ``state_dict`` replaces the model's own weights (e.g. weights gathered from FSDP shards); it
    is left as it was (``save_pretrained`` empties the dict it is given), so it can be saved again.
    """
    def fill(tmp: Path) -> None:
        weights = None if state_dict is None else dict(state_dict)
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps(meta.to_dict(), indent=2), encoding="utf-8")
        if extra is not None:
            extra(tmp)

    return write_folder_atomic(Path(target), fill)


def is_ar2diff_folder(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def load_meta(folder: str | Path) -> ModelMeta:
    """The metadata of an ar2diff model folder (any schema version)."""
    path = Path(folder) / META
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Ar2DiffError(f"{path} cannot be read ({exc})") from exc
    if not isinstance(data, dict):
        raise Ar2DiffError(f"{path} should hold a JSON object; re-save the model with ar2diff")
    try:
        return ModelMeta.from_dict(data)
    except TypeError as exc:
        raise Ar2DiffError(f"{path} has a malformed field ({exc}); re-save the model") from exc


def placement(device: torch.device | None) -> dict[str, Any]:
    """``from_pretrained`` arguments that load the weights straight onto ``device``."""
    if device is None or device.type == "cpu":
        return {}
    return {"device_map": {"": device}}


def load_model(folder: str | Path, dtype: torch.dtype | None = None,
               device: torch.device | None = None):
    """Load an ar2diff model folder: ``(model, tokenizer, meta)``, checksums verified.

    The weights go straight onto ``device`` (default the CPU) in ``dtype`` (default: as saved).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise Ar2DiffError(f"model folder {folder} not found; pass a folder written by ar2diff")
    if not any(folder.glob("*.safetensors")):
        raise Ar2DiffError(f"model folder {folder} has no *.safetensors weights; "
                           "point --model at a trained model folder")
    verify_folder(folder)
    meta = load_meta(folder)
    cls = AutoModelForSeq2SeqLM if meta.encoder_decoder else AutoModelForCausalLM
    kwargs = {"attn_implementation": "sdpa", **placement(device)}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = cls.from_pretrained(folder, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer, meta
