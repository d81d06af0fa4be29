"""Concurrent requests decoded together: one worker thread owns the model and runs groups.

A request becomes a :class:`Job` (prompt ids, decoding options, an optional event callback).
The worker takes the oldest waiting job and every other waiting job that may share its forward
passes (same :func:`group_key`), up to ``max_batch``, and decodes them in one go:

* diffusion: jobs with prompts of the same length and the same settings but any seeds
  (:func:`~ar2diff.sampling.diffusion_group.diffusion_generate_group`, each completion a member
  with its own seed); every row draws from its own keyed uniforms, so a job gets the same
  tokens as when served alone;
* AR: jobs with the same settings (greedy jobs any seed) are left-padded into one batch, as
  ``ar2diff generate`` batches its prompts (the padding is masked; sampling draws from one
  generator per prompt and completion).

Events (AR tokens, diffusion canvases) go to each job's callback from the worker thread. A job
whose client went away or whose time ran out is marked cancelled; a group stops as soon as all
of its jobs are. An AR completion ends at its job's first stop sequence (the rest of the group
goes on); diffusion completions are cut there afterwards. Log-probabilities, when a job asks for
them, come from the model in the worker thread: AR tokens scored given all before them, diffusion
tokens as the sampler drew them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ar2diff.decoding import DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.generation import TextGenerator
from ar2diff.likelihood import TokenLogprob, ar_token_logprobs
from ar2diff.sampling.autoregressive import ar_generate
from ar2diff.sampling.diffusion_group import diffusion_generate_group, mixes_lengths
from ar2diff.stops import StopWatch

EventSink = Callable[[dict[str, Any]], None]


class QueueFull(Ar2DiffError):
    """More jobs wait than the server takes."""


class Abandoned(Exception):
    """Every job of a group was cancelled: stop decoding."""


@dataclass
class JobResult:
    """Token ids of each completion, the chosen candidate row of each (diffusion) and steps run."""

    completions: list[list[int]]
    rows: list[int]
    steps: int
    logprobs: list[list[TokenLogprob]] | None = None  # per completion, when the job asked


@dataclass
class Job:
    """One request's decoding: ``ids`` with ``opts`` (mode resolved), events to ``on_event``."""

    ids: list[int]
    opts: DecodeOptions
    on_event: EventSink | None = None
    stops: list[str] = field(default_factory=list)  # stop sequences
    top_logprobs: int | None = None  # alternatives per token; None: no log-probabilities
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None and not self.cancelled.is_set():
            self.on_event(event)


def group_key(gen: TextGenerator, job: Job) -> tuple:
    """Jobs with equal keys may share forward passes without changing any job's tokens."""
    opts = job.opts
    if opts.mode == "ar":
        cfg = gen.ar_config(opts)
        if cfg.strategy == "greedy" or cfg.temperature == 0:
            cfg = replace(cfg, seed=0)  # greedy draws nothing
        return ("ar", *sorted(cfg.__dict__.items()))
    cfg = replace(gen.diffusion_config(opts), seed=0)
    width = None if mixes_lengths(gen.backbone, cfg) else len(job.ids)  # block models: any length
    return ("diffusion", width, opts.completions, *sorted(cfg.__dict__.items()))


class Batcher:
    """A worker thread that decodes waiting jobs in groups of up to ``max_batch``."""

    def __init__(self, gen: TextGenerator, max_batch: int = 8, max_queue: int = 64,
                 batch_wait: float = 0.02):
        self.gen, self.max_batch, self.max_queue, self.batch_wait = gen, max_batch, max_queue, batch_wait
        self._queue: deque[tuple[tuple, Job]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.groups: list[int] = []  # size of every group run (for tests and benchmarks)
        self.abandoned = 0  # groups stopped because every request in them was cancelled
        self._thread = threading.Thread(target=self._work, name="ar2diff-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        """Queue ``job``; raises :class:`QueueFull` when ``max_queue`` jobs wait already."""
        key = group_key(self.gen, job)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (the limit is "
                                f"{self.max_queue}); retry later")
            self._queue.append((key, job))
            self._cond.notify()
        return job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while (group := self._next_group()) is not None:
            if group:
                self._run(group)

    def _next_group(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
        self._gather()
        with self._cond:
            key, first = self._queue.popleft()
            group = [first]
            for item in list(self._queue):
                if len(group) >= self.max_batch:
                    break
                if item[0] == key:
                    self._queue.remove(item)
                    group.append(item[1])
        live = [j for j in group if not j.cancelled.is_set() and j.future.set_running_or_notify_cancel()]
        for job in group:
            if job not in live and not job.future.done():
                job.future.set_exception(Abandoned("cancelled before it started"))
        return live

    def _gather(self) -> None:
        """Wait up to ``batch_wait`` for jobs that may join the oldest one, until a group is full
        (clients whose answers just came back send their next requests meanwhile)."""
        end = time.monotonic() + self.batch_wait
        while time.monotonic() < end:
            with self._cond:
                key = self._queue[0][0]
                if sum(k == key for k, _ in self._queue) >= self.max_batch:
                    return
            time.sleep(min(0.002, self.batch_wait))

    def _run(self, group: list[Job]) -> None:
        self.groups.append(len(group))
        try:
            runner = self._ar if group[0].opts.mode == "ar" else self._diffusion
            results = runner(group)
        except Abandoned as exc:
            self.abandoned += 1
            for job in group:
                job.future.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001  (handed to every waiting request)
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, res in zip(group, results, strict=True):
            job.future.set_result(res)

    def _check(self, group: list[Job]) -> None:
        if all(j.cancelled.is_set() for j in group):
            raise Abandoned("every request of the group was cancelled")

    def _ar(self, group: list[Job]) -> list[JobResult]:
        gen = self.gen
        cfg = gen.ar_config(group[0].opts)
        n = cfg.completions

        stopper = StopWatch(gen.tokenizer, [job.stops for job in group for _ in range(n)],
                            (gen.ids["eos"],))

        def on_token(t: int, tok: torch.Tensor) -> set[int]:
            self._check(group)
            rows = tok.tolist()
            for i, job in enumerate(group):
                job.emit({"kind": "token", "step": t, "tokens": rows[i * n:(i + 1) * n]})
            return stopper.ended(rows)

        out = ar_generate(gen.backbone, [j.ids for j in group], cfg, gen.ids["eos"], gen.ids["pad"],
                          on_token=on_token)
        results = []
        for job, o in zip(group, out, strict=True):
            logprobs = None if job.top_logprobs is None else [
                ar_token_logprobs(gen.backbone, job.ids, tokens, cfg.layout, job.top_logprobs)
                for tokens in o]
            results.append(JobResult(completions=o, rows=[0] * n, steps=max(map(len, o), default=0),
                                     logprobs=logprobs))
        return results

    def _diffusion(self, group: list[Job]) -> list[JobResult]:
        gen = self.gen
        cfg = gen.diffusion_config(group[0].opts)
        members = [(job, k) for job in group for k in range(job.opts.completions)]

        def on_step(m: int, step: int, canvas: torch.Tensor) -> None:
            self._check(group)
            job, k = members[m]
            if job.on_event is not None:  # a host read per step only for those who watch
                job.emit({"kind": "step", "completion": k, "step": step, "canvas": canvas.tolist()})

        res = diffusion_generate_group(
            gen.backbone, [job.ids for job, _ in members], [job.opts.seed + k for job, k in members],
            cfg, gen.noise, gen.ids["pad"], gen.ids["eos"], on_step=on_step)
        out, i = [], 0
        for job in group:
            mine = res[i:i + job.opts.completions]
            i += job.opts.completions
            logprobs = None if job.top_logprobs is None else \
                [[(lp, []) for lp in r.token_logprobs] for r in mine]
            out.append(JobResult(completions=[r.tokens for r in mine],
                                 rows=[r.all_scores.index(r.score) for r in mine],
                                 steps=max(r.steps for r in mine), logprobs=logprobs))
        return out

