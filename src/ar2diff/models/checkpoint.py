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
import sys
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
CARD = "README.md"
TRUST_ENV = "AR2DIFF_TRUST_EDITED"  # "1": load folders whose checksums fail, with a warning
_trust_edited = os.environ.get(TRUST_ENV) == "1"


def trust_edited_folders(trust: bool = True) -> None:
    """Load model folders whose files changed since ar2diff wrote them (a warning instead)."""
    global _trust_edited
    _trust_edited = trust


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
        sums = {p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*"))
                if p.is_file()}
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


def _verify_or_trust(folder: Path) -> None:
    """Checksums verified; a changed folder loads only when edited folders are trusted."""
    try:
        verify_folder(folder)
    except Ar2DiffError as exc:
        if not _trust_edited:
            raise Ar2DiffError(f"{exc}; if you changed it on purpose, pass --trust-edited") from None
        print(f"warning: {exc}; loading it anyway (--trust-edited)", file=sys.stderr)


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
        _describe(tmp, meta)
        if extra is not None:
            extra(tmp)

    return write_folder_atomic(Path(target), fill)


def _describe(folder: Path, meta: ModelMeta) -> None:
    """Say in what plain ``transformers`` reads (config.json, the model card) how to decode."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["ar2diff"] = {"mode": meta.mode, "noise": meta.noise, "layout": meta.layout,
                         "decoding": "diffusion (ar2diff generate)" if meta.mode == "diffusion"
                         else "autoregressive"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if meta.mode == "diffusion":
        how = (f"This is a **text diffusion model** (noise: {meta.noise or 'uniform'}, attention "
               f"layout: {meta.layout}). `transformers`' `generate()` would decode it "
               "autoregressively, which is not how it was trained: decode it with ar2diff, e.g. "
               "`ar2diff generate --model <this folder> --prompt ...` or "
               "`ar2diff.generation.TextGenerator.load(<folder>)`.")
    else:
        how = "An autoregressive language model; `generate()` decodes it as trained."
    card = (f"---\ntags:\n- ar2diff\n- {'text-diffusion' if meta.mode == 'diffusion' else 'causal-lm'}"
            f"\n---\n\n# ar2diff model ({meta.mode})\n\n{how}\n\nThe folder's `{META}` holds "
            f"ar2diff's metadata and `{CHECKSUMS}` the SHA-256 of every file.\n")
    (folder / CARD).write_text(card, encoding="utf-8")
    if meta.mode == "diffusion":
        (folder / "custom_generate").mkdir()
        (folder / "custom_generate" / "generate.py").write_text(CUSTOM_GENERATE, encoding="utf-8")


# transformers' custom_generate hook: model.generate(ids, custom_generate=<folder>,
# trust_remote_code=True) runs this file's generate(), which decodes by diffusion through ar2diff.
CUSTOM_GENERATE = '''"""Diffusion decoding of an ar2diff model through transformers' ``custom_generate``.

``model.generate(input_ids, custom_generate=<this folder>, trust_remote_code=True,
max_new_tokens=..., steps=..., candidates=..., seed=...)`` returns the prompt followed by the
tokens ar2diff's diffusion sampler draws (the folder's decoding defaults unless given), padded
with the pad token. Needs the ``ar2diff`` package.
"""

import torch


def generate(model, inputs=None, input_ids=None, attention_mask=None, **kwargs):
    from transformers import AutoTokenizer

    from ar2diff.decoding import DecodeOptions
    from ar2diff.generation import TextGenerator
    from ar2diff.models.checkpoint import load_meta

    folder = model.config.name_or_path
    ids = input_ids if input_ids is not None else inputs
    if attention_mask is None:
        attention_mask = torch.ones_like(ids, dtype=torch.bool)
    prompts = [row[mask.bool()].tolist() for row, mask in zip(ids, attention_mask)]
    gen = TextGenerator(model, AutoTokenizer.from_pretrained(folder), load_meta(folder))
    opts = DecodeOptions(mode="diffusion", max_new_tokens=kwargs.get("max_new_tokens"),
                         steps=kwargs.get("steps"), candidates=kwargs.get("candidates"),
                         temperature=kwargs.get("temperature"), seed=kwargs.get("seed", 0))
    outs = [row[0] for row in gen.generate_ids(prompts, opts)]
    width = max(len(p) + len(o) for p, o in zip(prompts, outs))
    rows = [p + o + [gen.ids["pad"]] * (width - len(p) - len(o)) for p, o in zip(prompts, outs)]
    return torch.tensor(rows, device=ids.device)
'''


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
    _verify_or_trust(folder)
    meta = load_meta(folder)
    cls = AutoModelForSeq2SeqLM if meta.encoder_decoder else AutoModelForCausalLM
    kwargs = {"attn_implementation": "sdpa", **placement(device)}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = cls.from_pretrained(folder, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer, meta
