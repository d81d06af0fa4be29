"""The server's request bodies (OpenAI's fields plus ar2diff's decoding fields), checked strictly.

A wrongly typed or out-of-range field is a 400 answer naming the field (see ``app.py``); fields
this server does not know are ignored, as OpenAI clients may send more than it uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ar2diff.decoding import DecodeOptions

MAX_STEPS = 1000
MAX_CANDIDATES = 64
MAX_COMPLETIONS = 8
MAX_PROMPTS = 16
MAX_STOPS = 4  # stop sequences per request, as OpenAI allows
MAX_TOP_LOGPROBS = 20


class DecodeFields(BaseModel):
    """What every generation request may set."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_COMPLETIONS)
    stream: bool = False
    seed: int | None = Field(None, ge=0, lt=2**63)
    # ar2diff's decoding choices, sent as extra body fields
    mode: Literal["ar", "diffusion"] | None = None
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    block_length: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, ge=1, le=10)
    threshold: float | None = Field(None, ge=0, lt=1)
    factor: float | None = Field(None, ge=0)
    confidence: Literal["probability", "margin", "entropy"] | None = None
    eos_stop: bool | None = None
    eos_penalty: float | None = Field(None, gt=0)
    order: Literal["confidence", "left-to-right"] | None = None
    freeze: float = Field(0.0, ge=0, lt=1)
    stop: str | list[str] | None = Field(None, validate_default=True)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"send at most {MAX_STOPS} stop sequences, not {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return stops

    def top_logprobs_wanted(self) -> int | None:
        """How many alternatives to report per token (None: no log-probabilities)."""
        return None

    def decode_options(self, default_mode: str) -> DecodeOptions:
        """The decoding options asked for (AR samples when a temperature above 0 is given)."""
        mode = self.mode or default_mode
        sample = mode == "ar" and bool(self.temperature)
        return DecodeOptions(
            mode=mode, steps=self.steps, completions=self.n, candidates=self.candidates,
            temperature=self.temperature, max_new_tokens=self.max_tokens, seed=self.seed or 0,
            strategy="sample" if sample else "greedy", top_p=1.0 if self.top_p is None else self.top_p,
            chat=False, repetition_penalty=self.repetition_penalty, block_length=self.block_length,
            threshold=self.threshold, factor=self.factor, confidence=self.confidence,
            eos_stop=self.eos_stop, eos_penalty=self.eos_penalty, freeze=self.freeze,
            order=self.order,
        )


class CompletionRequest(DecodeFields):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(DecodeFields):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class StepsRequest(DecodeFields):
    """The viewer's request: one prompt (chat template optional), its steps streamed."""

    model: str | None = None  # the served model
    prompt: str = Field(min_length=1)
    chat: bool = False
