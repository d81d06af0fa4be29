"""The model folder's metadata (``ar2diff.json``): what ar2diff needs beyond the weights.

Read and written only here. Folders written by earlier releases (keys ``kind``, ``attention``
and ``sample``, and no ``schema``) still load: :meth:`ModelMeta.from_dict` maps them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ar2diff.config import RunConfig
from ar2diff.decoding import DEFAULT_AR_MAX_NEW_TOKENS, DEFAULT_TARGET_LENGTH, DecodingDefaults
from ar2diff.models.attention import diffusion_layout
from ar2diff.provenance import version

SCHEMA = 2
_OLD_KEYS = {"kind": "mode", "attention": "layout", "sample": "decoding"}
_OLD_DECODING_KEYS = {"samples": "candidates"}


@dataclass
class ModelMeta:
    """Facts about a model that decoding and further training depend on."""

    mode: str = "ar"  # ar | diffusion: what the model was trained for
    layout: str = "causal"  # the attention layout it was trained under (models.attention)
    shift: bool = True  # position i predicts token i + 1, as an AR head
    noise: str | None = None  # diffusion: the noise process (ar2diff.noise)
    encoder_decoder: bool = False
    noise_vocab: int | None = None  # uniform noise draws from the first noise_vocab ids
    mask_id: int | None = None  # mask noise: the id of the mask token
    target_length: int = DEFAULT_TARGET_LENGTH  # diffusion target length it was trained with
    block_size: int = 0  # diffusion: > 0 trained as block diffusion with blocks of this size
    decoding: DecodingDefaults = field(
        default_factory=lambda: DecodingDefaults(max_new_tokens=DEFAULT_AR_MAX_NEW_TOKENS))
    prompt_format: str | None = None  # raw | chat, as trained; None (not recorded): raw
    source: str | None = None  # the pretrained spec it was loaded from, if any
    config: dict[str, Any] | None = None  # the full run config that produced it
    ar2diff_version: str | None = None

    @property
    def diffusion_layout(self) -> str:
        """The diffusion layout to denoise under (``diffusion`` for a model trained as AR)."""
        return self.layout if self.layout.startswith("diffusion") else "diffusion"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """From a parsed ``ar2diff.json`` of any schema; unknown keys are ignored."""
        data = {_OLD_KEYS.get(k, k): v for k, v in data.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("layout", "diffusion" if kwargs.get("mode") == "diffusion" else "causal")
        kwargs.setdefault("shift", False)  # folders that predate the shift option did not shift
        if isinstance(kwargs.get("decoding"), dict):
            stored = {_OLD_DECODING_KEYS.get(k, k): v for k, v in kwargs["decoding"].items()}
            known = {f.name for f in dataclasses.fields(DecodingDefaults)}
            kwargs["decoding"] = DecodingDefaults(**{k: v for k, v in stored.items() if k in known})
        return cls(**kwargs)

    @classmethod
    def pretrained(cls, spec: str, vocab: int) -> ModelMeta:
        """A plain pretrained causal LM (not written by ar2diff): AR, causal, shifted."""
        return cls(noise_vocab=vocab, source=spec)

    def for_run(self, config: RunConfig) -> ModelMeta:
        """What a model trained by ``config`` is, starting from this one."""
        o = config.objective
        diffusion = o.kind == "diffusion"
        if diffusion:
            layout = diffusion_layout(o.input_attention)
        else:
            layout = "causal" if o.format == "causal" else o.input_attention
        return dataclasses.replace(
            self, mode=o.kind, layout=layout, shift=o.shift if diffusion else True,
            noise=o.noise if diffusion else None, target_length=config.data.target_length,
            block_size=o.block_size if diffusion else 0,
            decoding=dataclasses.replace(config.sample), config=config.to_dict(),
            prompt_format=config.data.prompt_format,
            ar2diff_version=version(),
        )
