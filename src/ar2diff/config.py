"""Run configuration: dataclasses loaded from YAML and overridden with ``key=value`` pairs.

A run is fully described by its :class:`RunConfig`; it is saved next to every checkpoint.
Unknown keys and wrong types are rejected before any work starts, naming the field.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ar2diff.decoding import DEFAULT_TARGET_LENGTH, DecodingDefaults, check_rules
from ar2diff.errors import Ar2DiffError


@dataclass
class ModelConfig:
    """The backbone: a named architecture and size, or a pretrained checkpoint."""

    arch: str = "llama"  # llama | qwen2 | gpt2 | t5
    size: str = "tiny"  # see ar2diff.models.presets.SIZES
    pretrained: str | None = None  # HF folder, .gguf file, hub id, smollm2-135m, ar2diff model
    overrides: dict[str, Any] = field(default_factory=dict)
    max_positions: int = 2048


@dataclass
class TokenizerConfig:
    """Tokenizer for from-scratch runs (a pretrained model brings its own)."""

    kind: str = "bpe"  # bpe (trained on the corpus) | toy (word level, toy tasks) | a HF folder
    vocab_size: int = 4096
    sentinels: int = 100


@dataclass
class DataConfig:
    """Where examples come from.

    ``source`` follows from what is given (``task`` / ``task_path`` → task, ``corpus`` →
    corpus, neither → the toy task); a ``source`` that contradicts the given fields is refused.
    """

    source: str | None = None  # toy | corpus | task; default: follows from the fields given
    toy_task: str = "reverse"  # copy | reverse | sort
    toy_min_len: int = 3
    toy_max_len: int = 10
    corpus: list[str] = field(default_factory=list)  # text files / folders; empty = books + stdlib
    code_fraction: float = 0.2
    segment_length: int = 128
    max_chars: int = 8_000_000  # corpus: characters read per stream (0 = no limit)
    held_out: float = 0.02  # fraction held out for the evaluation loss (corpus: each stream's end)
    task: str | None = None  # wmt14-en-fr | multi30k | squad | mbpp | mbpp-plus | humaneval | jsonl
    task_path: str | None = None  # the task's file / folder; a generic JSONL file for task jsonl
    split: str = "train"
    eval_split: str | None = None  # task: the evaluation loss on this split, not a held-out slice
    prompt_format: str = "raw"  # raw | chat (the tokenizer's chat template); recorded with the model
    input_length: int = 256  # longer inputs are truncated from the left
    target_length: int = DEFAULT_TARGET_LENGTH  # diffusion targets are padded to this length


@dataclass
class ObjectiveConfig:
    """What is learned: AR or diffusion, on which example format."""

    kind: str = "diffusion"  # ar | diffusion
    format: str = "prefix"  # causal | prefix | span (span corruption) | task
    input_attention: str = "prefix"  # how the input attends to itself: prefix (both ways) | causal
    noise: str = "uniform"  # diffusion: a process of ar2diff.noise: uniform (SUNDAE) | mask
    unroll: int = 2  # SUNDAE L(1:unroll); 1 = single pass (uniform noise only)
    unroll_input: str = "argmax"  # SUNDAE: later passes are fed the argmax or a sample (original)
    mask_rate_min: float = 0.001  # mask noise: training rates t ~ U(min, max); BD3-LM clips them
    mask_rate_max: float = 1.0
    shift: bool = False  # diffusion: position i predicts token i+1, as an AR head
    anneal_steps: int = 0  # diffusion: anneal attention from causal to bidirectional over K steps
    block_size: int = 0  # diffusion: > 0 trains block diffusion (BD3-LM) with blocks of this size


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and a decay schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 50
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """The loop: steps, batches, precision, evaluation and checkpoints."""

    steps: int = 500
    batch_size: int = 32
    micro_batch_size: int = 0  # 0 = batch_size (no gradient accumulation)
    bf16: bool = False
    eval_every: int = 100
    eval_examples: int = 64
    save_every: int = 0  # 0 = only at the end
    keep_last: int = 2
    seed: int = 0
    out_dir: str = "runs/run"
    progress: bool = True
    tensorboard: bool = False  # also log the metrics as TensorBoard scalars (extra: tensorboard)
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    parallel: str = "ddp"  # with several processes: ddp (replicas) | fsdp (sharded, decoder-only)


SampleConfig = DecodingDefaults  # the ``sample:`` section: decoding defaults saved with the model


@dataclass
class RunConfig:
    """Everything a run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ("llama", "qwen2", "gpt2", "t5"),
    "data.source": ("toy", "corpus", "task"),
    "data.prompt_format": ("raw", "chat"),
    "data.toy_task": ("copy", "reverse", "sort"),
    "objective.kind": ("ar", "diffusion"),
    "objective.format": ("causal", "prefix", "span", "task"),
    "objective.input_attention": ("causal", "prefix"),
    "objective.unroll_input": ("argmax", "sample"),
    "optim.decay": ("cosine", "linear", "constant"),
    "train.parallel": ("ddp", "fsdp"),
}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting ints to floats; name ``where`` on error."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return _coerce(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            raise Ar2DiffError(f"config field {where}: expected a list, got {value!r}")
        return [_coerce(v, typing.get_args(hint)[0], where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise Ar2DiffError(f"config field {where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise Ar2DiffError(f"config field {where}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise Ar2DiffError(f"config field {where}: expected an integer, got {value!r}")
    if hint in (float, str) and not isinstance(value, hint):
        raise Ar2DiffError(f"config field {where}: expected a {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise Ar2DiffError(f"config section {prefix or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise Ar2DiffError(
            f"unknown config key '{prefix}{unknown[0]}'; known keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        where = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, where + ".")
        else:
            kwargs[name] = _coerce(value, hint, where)
            if where in CHOICES and kwargs[name] not in CHOICES[where]:
                raise Ar2DiffError(
                    f"config field {where}: {value!r} is not one of {', '.join(CHOICES[where])}"
                )
    return cls(**kwargs)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.steps=10", "model.size=small"]`` → a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise Ar2DiffError(f"override {pair!r} is not of the form section.key=value")
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if not all(parts):
            raise Ar2DiffError(f"override {pair!r}: the key has an empty part; use section.key=value")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            raise Ar2DiffError(f"override {pair!r}: the value is not valid YAML ({first}); "
                               "quote it, e.g. key='text'") from None
        if not isinstance(node, dict):
            raise Ar2DiffError(f"override {pair!r}: {'.'.join(parts[:-1])} is not a section")
    return nested


# Keys an earlier release used; configs and experiment specs that name them still load.
ALIASES = {("objective", "attention"): "input_attention", ("sample", "samples"): "candidates"}


def _rename_aliases(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, old), new in ALIASES.items():
        part = out.get(section)
        if isinstance(part, dict) and old in part:
            part.setdefault(new, part.pop(old))
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise Ar2DiffError(f"config file {path} not found; pass an existing YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise Ar2DiffError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from exc
        if not isinstance(data, dict):
            raise Ar2DiffError(f"config file {path}: the top level must be a mapping of sections "
                               "(model:, data:, train:, …)")
    data = _merge(_rename_aliases(data), _rename_aliases(parse_overrides(overrides or [])))
    config = _build(RunConfig, data, "")
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    t, o = config.train, config.objective
    if t.steps < 1 or t.batch_size < 1:
        raise Ar2DiffError(f"train.steps ({t.steps}) and train.batch_size ({t.batch_size}) must be "
                           "at least 1")
    micro = t.micro_batch_size or t.batch_size
    if micro < 1 or t.batch_size % micro:
        raise Ar2DiffError(
            f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size ({micro})"
        )
    if o.unroll < 1:
        raise Ar2DiffError("objective.unroll must be at least 1 (1 = L(1:1), 2 = L(1:2))")
    _validate_blocks(config)
    if not 0 < o.mask_rate_min < o.mask_rate_max <= 1:
        raise Ar2DiffError(f"objective.mask_rate_min={o.mask_rate_min}, mask_rate_max="
                           f"{o.mask_rate_max}: need 0 < min < max <= 1 (e.g. 0.3 and 0.8)")
    if config.sample.block_length < 0:
        raise Ar2DiffError("sample.block_length must be 0 (one block) or more")
    sample = config.sample
    check_rules(sample.threshold, sample.factor, sample.confidence, sample.eos_penalty, "sample.",
                order=sample.order)
    if config.optim.lr <= 0:
        raise Ar2DiffError("optim.lr must be positive")
    resolve_source(config)
    if not 0 <= config.data.held_out < 0.5:
        raise Ar2DiffError(f"data.held_out={config.data.held_out}: give a fraction in [0, 0.5)")
    if config.data.max_chars < 0:
        raise Ar2DiffError("data.max_chars must be 0 (no limit) or a number of characters")
    if config.data.toy_min_len < 1 or config.data.toy_max_len < config.data.toy_min_len:
        raise Ar2DiffError("data.toy_min_len must be ≥ 1 and ≤ data.toy_max_len")
    _check_ranges(config)
    for name in ("beta1", "beta2"):
        beta = getattr(config.optim, name)
        if not 0 <= beta < 1:
            raise Ar2DiffError(f"config field optim.{name}: {beta!r} must be in [0, 1)")
    _check_positions(config)
    _check_device(t.device)


# field: (smallest allowed, largest allowed or None, inclusive low?) for numbers in a config
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "data.target_length": (1, None, True),
    "data.input_length": (1, None, True),
    "data.segment_length": (2, None, True),
    "data.code_fraction": (0, 1, True),
    "model.max_positions": (1, None, True),
    "tokenizer.vocab_size": (1, None, True),
    "tokenizer.sentinels": (0, None, True),
    "objective.anneal_steps": (0, None, True),
    "objective.block_size": (0, None, True),
    "optim.warmup_steps": (0, None, True),
    "optim.grad_clip": (0, None, False),
    "optim.weight_decay": (0, None, True),
    "optim.min_lr_ratio": (0, 1, True),
    "train.micro_batch_size": (0, None, True),
    "train.eval_every": (0, None, True),
    "train.eval_examples": (1, None, True),
    "train.save_every": (0, None, True),
    "train.keep_last": (1, None, True),
    "train.seed": (0, None, True),
    "sample.steps": (1, None, True),
    "sample.temperature": (0, None, True),
    "sample.candidates": (1, None, True),
    "sample.max_new_tokens": (1, None, True),
    "sample.repetition_penalty": (0, None, False),
}


def _check_ranges(config: RunConfig) -> None:
    for where, (low, high, inclusive) in _RANGES.items():
        section, name = where.split(".")
        value = getattr(getattr(config, section), name)
        bad_low = value < low if inclusive else value <= low
        if bad_low or (high is not None and value > high) or value != value:
            bound = f"at least {low}" if inclusive else f"above {low}"
            span = f"{bound}{'' if high is None else f' and at most {high}'}"
            raise Ar2DiffError(f"config field {where}: {value!r} is out of range; it must be {span}")


def _check_positions(config: RunConfig) -> None:
    """A model built from scratch must have positions for the longest sequence it is fed."""
    m, d, o = config.model, config.data, config.objective
    if m.pretrained is not None or m.arch == "t5":
        return
    longest = d.segment_length if o.format in ("causal", "span") else d.input_length + d.target_length
    if m.max_positions < longest:
        raise Ar2DiffError(
            f"config field model.max_positions: {m.max_positions} is below the longest sequence "
            f"({longest} tokens: data.input_length + data.target_length, or data.segment_length); "
            "raise it or shorten the data"
        )


def _check_device(name: str) -> None:
    """The device's spelling (whether this machine has it is checked when the run starts)."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise Ar2DiffError(f"config field train.device: {name!r} is not a device; use auto, cpu, "
                           "cuda or cuda:N")


def _validate_blocks(config: RunConfig) -> None:
    """Block diffusion: masked noise, a decoder-only model, no annealing."""
    o = config.objective
    if not o.block_size:
        return
    if o.kind != "diffusion" or o.noise != "mask":
        raise Ar2DiffError("objective.block_size needs objective.kind=diffusion and objective.noise=mask")
    if o.anneal_steps:
        raise Ar2DiffError("objective.block_size: block diffusion does not anneal its attention; "
                           "set objective.anneal_steps=0")
    if config.model.arch == "t5" and not config.model.pretrained:
        raise Ar2DiffError("objective.block_size needs a decoder-only model, not model.arch=t5")


def resolve_source(config: RunConfig) -> None:
    """Set ``data.source`` from the fields given, or refuse a contradiction."""
    d = config.data
    given = {"task"} if (d.task or d.task_path) else set()
    given |= {"corpus"} if d.corpus else set()
    if len(given) > 1:
        raise Ar2DiffError("data.corpus and data.task / data.task_path are both set; a run "
                           "trains on one: drop one of them")
    if d.source is None:
        d.source = given.pop() if given else "toy"
    elif given and d.source not in given:
        field_name = "data.corpus" if "corpus" in given else "data.task / data.task_path"
        raise Ar2DiffError(f"data.source={d.source} but {field_name} is set; drop data.source "
                           f"(it follows from what is given) or set data.source={given.pop()}")
    if d.source == "task" and not d.task:
        if not d.task_path:
            raise Ar2DiffError("data.source=task needs data.task (e.g. data.task=squad) or "
                               "data.task_path=FILE (a JSONL file of your own)")
        d.task = "jsonl"


def save_config(config: RunConfig, path: Path) -> None:
    """Write the config as YAML (temporary file + rename: never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
