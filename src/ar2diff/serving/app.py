"""``ar2diff serve``: an OpenAI-compatible ASGI app over one model, AR and diffusion decoding.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST
/v1/chat/completions`` (both with ``stream: true`` as server-sent events ending in ``[DONE]``),
``POST /v1/steps`` (the canvas after every decoding step, as server-sent events) and ``GET /``
(the step viewer page). Decoding choices travel as extra body fields (``mode``, ``steps``,
``candidates``, ``block_length``, ``seed``…); unset ones take the model folder's defaults.
OpenAI's ``stop`` (up to 4 sequences) and log-probabilities (``logprobs`` on completions,
``logprobs``/``top_logprobs`` on chat) are honoured: AR log-probabilities are the model's, each
token given all before it; a diffusion token's is the one the sampler drew it with (no
alternatives: ``top_logprobs`` needs AR).
Requests are decoded by a :class:`~ar2diff.serving.batcher.Batcher`. Every error is an
OpenAI-style JSON body ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from ar2diff.decoding import DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.generation import TextGenerator
from ar2diff.sampling.steps import BLANK, StepRecord, ar_canvas, ar_start, diffusion_start
from ar2diff.serving.batcher import Abandoned, Batcher, Job, JobResult, QueueFull
from ar2diff.serving.schemas import MAX_PROMPTS, ChatRequest, CompletionRequest, DecodeFields, StepsRequest
from ar2diff.stops import find_stop, streamable, token_pieces


@dataclass
class ServeSettings:
    """How the server runs: its model's name, limits, and the optional API key."""

    model_name: str
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    max_tokens: int = 1024  # the most new tokens (AR) or target positions (diffusion) a request gets
    timeout: float = 300.0  # seconds a request may take, waiting included
    batch_wait: float = 0.02  # seconds the worker waits for more requests to join a group


class ApiError(Exception):
    """An answer with a 4xx status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param,
                          "code": self.code}}


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(gen: TextGenerator, settings: ServeSettings) -> FastAPI:
    """The ASGI app serving ``gen`` (its batcher stops when the app shuts down)."""
    batcher = Batcher(gen, settings.max_batch, settings.max_queue, settings.batch_wait)
    server = _Server(gen, settings, batcher)
    app = FastAPI(title="ar2diff", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.router.on_shutdown.append(batcher.close)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("ar2diff.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.authorize(request)
        return {"object": "list", "data": [server.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        server.authorize(request)
        server.check_model(name)
        return server.model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        server.authorize(request)
        return await server.complete(body, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        server.authorize(request)
        return await server.complete(body, request, chat=True)

    @app.post("/v1/steps")
    async def steps(body: StepsRequest, request: Request):
        server.authorize(request)
        return server.stream_steps(body, request)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        else:
            message = f"{param or 'body'}: {first.get('msg')}"
        return _error_response(ApiError(400, message, param=param))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(ApiError(exc.status_code, str(exc.detail), kind))


class _Server:
    """The request handling behind the routes."""

    def __init__(self, gen: TextGenerator, settings: ServeSettings, batcher: Batcher):
        self.gen, self.settings, self.batcher = gen, settings, batcher

    # ---- checks ----------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {key}":
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", code="invalid_api_key")

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.settings.model_name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves "
                           f"{self.settings.model_name!r}", "not_found_error", "model",
                           "model_not_found")

    def model_card(self) -> dict[str, Any]:
        return {"id": self.settings.model_name, "object": "model", "created": 0, "owned_by": "ar2diff",
                "mode": self.gen.meta.mode}

    def options(self, body: DecodeFields) -> DecodeOptions:
        """The decoding options ``body`` asks for, checked against the server's limits."""
        self.check_model(body.model)
        try:
            opts = body.decode_options(self.gen.meta.mode)
            self.new_tokens(opts)  # the model's defaults merged in and checked
        except Ar2DiffError as exc:
            raise ApiError(400, str(exc)) from exc
        limit = self.settings.max_tokens
        if opts.max_new_tokens is not None and opts.max_new_tokens > limit:
            raise ApiError(400, f"max_tokens {opts.max_new_tokens} is over this server's limit of "
                           f"{limit}; ask for fewer", param="max_tokens")
        if opts.block_length is not None and opts.block_length > limit:
            raise ApiError(400, f"block_length {opts.block_length} is over {limit}",
                           param="block_length")
        self.check_logprobs(body, opts)
        return opts

    @staticmethod
    def check_logprobs(body: DecodeFields, opts: DecodeOptions) -> None:
        """Refuse log-probability requests this server cannot answer."""
        if isinstance(body, ChatRequest) and body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        top = body.top_logprobs_wanted()
        param = "top_logprobs" if isinstance(body, ChatRequest) else "logprobs"
        if top is not None and body.stream:
            raise ApiError(400, f"{param} with stream: true is not supported; ask without "
                           "streaming", param=param)
        if top and opts.mode == "diffusion":
            raise ApiError(400, f"{param}={top}: alternatives per token exist only in mode ar; "
                           "diffusion reports each token's own log-probability (use 0)", param=param)

    def new_tokens(self, opts: DecodeOptions) -> int:
        if opts.mode == "ar":
            return self.gen.ar_config(opts).max_new_tokens
        return self.gen.diffusion_config(opts).target_length

    def encode(self, text: str | None, messages: list[dict] | None, opts: DecodeOptions) -> list[int]:
        """Prompt ids, checked to fit the model's positions with the output."""
        try:
            ids = self.gen.encode_messages(messages) if messages is not None else \
                self.gen.encode_prompt(text, False)
        except Ar2DiffError as exc:
            raise ApiError(400, str(exc), param="messages" if messages else "prompt",
                           code="context_length_exceeded" if "too long" in str(exc) else None) from exc
        limit = self.gen.position_limit()
        wanted = len(ids) + self.new_tokens(opts)
        if limit and wanted > limit:
            raise ApiError(400, f"the prompt ({len(ids)} tokens) and the output ({self.new_tokens(opts)}"
                           f" tokens) need {wanted} positions, the model takes {limit}; shorten "
                           "the prompt or lower max_tokens", param="max_tokens",
                           code="context_length_exceeded")
        return ids

    def submit(self, job: Job) -> None:
        try:
            self.batcher.submit(job)
        except QueueFull as exc:
            raise ApiError(429, str(exc), "rate_limit_error", code="queue_full") from exc
        except Ar2DiffError as exc:
            raise ApiError(400, str(exc)) from exc

    # ---- completions -----------------------------------------------------------------------

    def prompts(self, body: CompletionRequest | ChatRequest, chat: bool,
                opts: DecodeOptions) -> list[list[int]]:
        if chat:
            return [self.encode(None, [m.model_dump() for m in body.messages], opts)]
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise ApiError(400, f"prompt: send 1 to {MAX_PROMPTS} prompts, not {len(prompts)}",
                           param="prompt")
        return [self.encode(p, None, opts) for p in prompts]

    async def complete(self, body: CompletionRequest | ChatRequest, request: Request, chat: bool):
        opts = self.options(body)
        inputs = self.prompts(body, chat, opts)
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in inputs]
        jobs = [Job(ids, opts, on_event=_sink(loop, q) if body.stream else None, stops=body.stop,
                    top_logprobs=body.top_logprobs_wanted())
                for ids, q in zip(inputs, queues, strict=True)]
        try:
            for job in jobs:
                self.submit(job)
        except ApiError:
            for job in jobs:
                job.cancelled.set()
            raise
        reply = _Reply(self, chat, opts, inputs, body.stop)
        if body.stream:
            for job, q in zip(jobs, queues, strict=True):
                job.future.add_done_callback(lambda _, q=q: loop.call_soon_threadsafe(q.put_nowait, None))
            return EventSourceResponse(self._stream(reply, jobs, queues), ping=10)
        results = await self._wait(jobs, request)
        return reply.whole(results)

    async def _wait(self, jobs: list[Job], request: Request) -> list[JobResult]:
        """The jobs' results; cancels them when the client leaves or time runs out."""
        deadline = time.monotonic() + self.settings.timeout
        futures = [asyncio.wrap_future(j.future) for j in jobs]
        try:
            while not all(f.done() for f in futures):
                if time.monotonic() > deadline:
                    raise ApiError(408, f"the request took longer than {self.settings.timeout:g} s; "
                                   "ask for fewer tokens or steps", "timeout", code="timeout")
                if await request.is_disconnected():
                    raise ApiError(499, "client closed the request")
                await asyncio.wait(futures, timeout=0.25)
            return [_result(f) for f in futures]
        finally:
            for job in jobs:
                job.cancelled.set()

    async def _stream(self, reply: _Reply, jobs: list[Job],
                      queues: list[asyncio.Queue]) -> AsyncIterator[str]:
        deadline = time.monotonic() + self.settings.timeout
        try:
            for i, (job, queue) in enumerate(zip(jobs, queues, strict=True)):
                while (event := await _get(queue, deadline)) is not None:
                    for chunk in reply.on_event(i, event):
                        yield json.dumps(chunk)
                for chunk in reply.finish(i, _result(job.future)):
                    yield json.dumps(chunk)
            yield json.dumps(reply.usage_chunk())
            yield "[DONE]"
        except (ApiError, Ar2DiffError) as exc:
            err = exc if isinstance(exc, ApiError) else ApiError(400, str(exc))
            yield json.dumps(err.body())
        finally:
            for job in jobs:
                job.cancelled.set()

    # ---- steps -----------------------------------------------------------------------------

    def stream_steps(self, body: StepsRequest, request: Request) -> EventSourceResponse:
        if body.stop:
            raise ApiError(400, "stop: the step stream shows every step of the whole output; "
                           "send stop sequences to /v1/completions", param="stop")
        opts = self.options(body)
        if body.chat:
            ids = self.encode(None, [{"role": "user", "content": body.prompt}], opts)
        else:
            ids = self.encode(body.prompt, None, opts)
        opts.completions = 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = Job(ids, opts, on_event=_sink(loop, queue))
        self.submit(job)
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        return EventSourceResponse(self._steps(job, queue, ids), ping=10)

    async def _steps(self, job: Job, queue: asyncio.Queue, ids: list[int]) -> AsyncIterator[str]:
        gen, opts = self.gen, job.opts
        if opts.mode == "ar":
            record = StepRecord(ar_start(1, self.new_tokens(opts)))
        else:
            cfg = gen.diffusion_config(opts)
            record = StepRecord(diffusion_start(gen.noise, cfg.seed, ids, cfg.candidates,
                                                cfg.target_length))
        text = self.token_texts()
        yield json.dumps({"type": "start", "mode": opts.mode, "prompt_tokens": len(ids),
                          "canvas": [[text(t) for t in r] for r in record.canvases[0]]})
        deadline = time.monotonic() + self.settings.timeout
        try:
            while (event := await _get(queue, deadline)) is not None:
                canvas = (ar_canvas(record.canvases[-1], event["step"], event["tokens"])
                          if event["kind"] == "token" else event["canvas"])
                changed = record.add(canvas)
                yield json.dumps({"type": "step", "step": record.steps, "changed": changed,
                                  "canvas": [[text(t) for t in r] for r in canvas]})
            res = _result(job.future)
            tokens = res.completions[0]
            yield json.dumps({"type": "done", "row": res.rows[0], "steps": record.steps,
                              "text": gen.tokenizer.decode(tokens, skip_special_tokens=True),
                              "usage": _usage(len(ids), len(tokens))})
        except (ApiError, Ar2DiffError) as exc:
            err = exc if isinstance(exc, ApiError) else ApiError(400, str(exc))
            yield json.dumps({"type": "error", **err.body()})
        finally:
            job.cancelled.set()

    def token_texts(self) -> Callable[[int], str | None]:
        """Token id → its text in a canvas (None for a mask or a position not yet generated)."""
        mask = getattr(self.gen.noise, "mask_id", None)
        return _token_text(self.gen.tokenizer, -2 if mask is None else mask)


@lru_cache(maxsize=4)
def _token_text(tokenizer, mask_id: int) -> Callable[[int], str | None]:
    @lru_cache(maxsize=1 << 16)
    def text(tok: int) -> str | None:
        if tok in (BLANK, mask_id):
            return None
        return tokenizer.decode([tok])
    return text


class _Reply:
    """OpenAI response bodies and stream chunks for one request."""

    def __init__(self, server: _Server, chat: bool, opts: DecodeOptions, inputs: list[list[int]],
                 stops: list[str]):
        self.server, self.chat, self.opts, self.inputs, self.stops = server, chat, opts, inputs, stops
        self.model = server.settings.model_name
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.n = opts.completions
        self.sent: dict[int, str] = {}  # streamed text per choice
        self.tokens: dict[int, list[int]] = {}  # AR tokens so far per choice
        self.completion_tokens = 0

    def decode(self, tokens: list[int]) -> str:
        return self.server.gen.tokenizer.decode(tokens, skip_special_tokens=True)

    def ending(self, tokens: list[int]) -> tuple[str, str, bool]:
        """A completion's text up to its first stop sequence, its finish reason, and whether a
        stop sequence cut it."""
        text = self.decode(tokens)
        at = find_stop(text, self.stops)
        if at is not None:
            return text[:at], "stop", True
        return text, "length" if len(tokens) >= self.server.new_tokens(self.opts) else "stop", False

    def choice(self, index: int, text: str | None, finish: str | None, first: bool = False) -> dict:
        if not self.chat:
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    def chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        out = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
               "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def on_event(self, i: int, event: dict) -> list[dict]:
        """Stream chunks for an AR token event of input ``i`` (diffusion sends text at the end)."""
        if event["kind"] != "token":
            return []
        out = []
        eos = self.server.gen.ids["eos"]
        for k, tok in enumerate(event["tokens"]):
            index = i * self.n + k
            toks = self.tokens.setdefault(index, [])
            if (toks and toks[-1] == eos) or tok == eos or tok == self.server.gen.ids["pad"]:
                toks.append(eos)
                continue
            toks.append(tok)
            out += self.delta(index, streamable(self.decode(toks), self.stops), None)
        return out

    def delta(self, index: int, text: str, finish: str | None) -> list[dict]:
        sent = self.sent.get(index)
        new = text[len(sent or ""):] if text.startswith(sent or "") else ""
        if (not new or new.endswith("\ufffd")) and finish is None and (sent is not None or new):
            return []  # nothing new, or a character still incomplete
        self.sent[index] = (sent or "") + new
        return [self.chunk([self.choice(index, new, finish, first=sent is None)])]

    def finish(self, i: int, res: JobResult) -> list[dict]:
        out = []
        for k, tokens in enumerate(res.completions):
            self.completion_tokens += len(tokens)
            text, finish, _ = self.ending(tokens)
            out += self.delta(i * self.n + k, text, finish)
        return out

    def usage(self) -> dict[str, int]:
        return _usage(sum(map(len, self.inputs)), self.completion_tokens)

    def usage_chunk(self) -> dict:
        return self.chunk([], self.usage())

    def whole(self, results: list[JobResult]) -> dict:
        choices = []
        for i, res in enumerate(results):
            for k, tokens in enumerate(res.completions):
                self.completion_tokens += len(tokens)
                text, finish, cut = self.ending(tokens)
                logprobs = None if res.logprobs is None else \
                    self.logprobs(tokens, res.logprobs[k], text, cut)
                if self.chat:
                    choices.append({"index": i * self.n + k, "logprobs": logprobs, "finish_reason": finish,
                                    "message": {"role": "assistant", "content": text}})
                else:
                    choices.append({"index": i * self.n + k, "text": text, "logprobs": logprobs,
                                    "finish_reason": finish})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices,
                "usage": self.usage()}

    def logprobs(self, tokens: list[int], scores: list, text: str, cut: bool) -> dict:
        """OpenAI's ``logprobs`` object for the tokens that start within ``text`` (all of them
        unless a stop sequence ``cut`` it), each with the text it adds (cut where ``text`` ends)."""
        pieces, offsets, at = [], [], 0
        for piece in token_pieces(self.decode, tokens):
            if cut and at >= len(text):
                break
            offsets.append(at)
            pieces.append(piece[:len(text) - at] if cut else piece)
            at += len(piece)
        kept = scores[:len(pieces)]
        name = self.decode_one
        if self.chat:
            return {"content": [{"token": p, "logprob": lp, "bytes": list(p.encode()),
                                 "top_logprobs": [{"token": name(t), "logprob": v,
                                                   "bytes": list(name(t).encode())} for t, v in top]}
                                for p, (lp, top) in zip(pieces, kept, strict=True)], "refusal": None}
        # as OpenAI does, each position's alternatives include the chosen token
        return {"tokens": pieces, "token_logprobs": [lp for lp, _ in kept],
                "top_logprobs": [{**{name(t): v for t, v in top}, name(tok): lp}
                                 for tok, (lp, top) in zip(tokens[:len(kept)], kept, strict=True)],
                "text_offset": offsets}

    def decode_one(self, tok: int) -> str:
        return self.server.gen.tokenizer.decode([tok])


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[dict], None]:
    return lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)


async def _get(queue: asyncio.Queue, deadline: float) -> dict | None:
    try:
        return await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError as exc:
        raise ApiError(408, "the request ran out of time; ask for fewer tokens or steps", "timeout",
                       code="timeout") from exc


def _result(future) -> JobResult:
    try:
        return future.result()
    except Abandoned as exc:
        raise ApiError(499, "the request was cancelled") from exc
    except Ar2DiffError as exc:
        raise ApiError(400, str(exc)) from exc
