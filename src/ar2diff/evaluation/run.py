"""Evaluate a model on a task: the one path used by ``ar2diff evaluate`` and the experiment grid.

:func:`evaluate_model` decodes the task's prompts (or :func:`score_predictions_file` reads
predictions made elsewhere), scores them, and returns the results with the full setup that
produced them; both write the results file atomically when given ``out``. A results file
explains itself: ``units`` of each metric, ``seconds`` (decoding and scoring) and
``wall_seconds`` (loading included), each prediction's raw ``completion`` beside the scored
``prediction``, and in ``setup`` the decoding, prompt format, ar2diff version and commit.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

from ar2diff.atomic import write_json_atomic
from ar2diff.data.tasks import load_task
from ar2diff.decoding import DecodeOptions
from ar2diff.devices import resolve_dtype
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.scoring import evaluate_task, generic_metric, score_predictions
from ar2diff.generation import TextGenerator
from ar2diff.provenance import git_commit, version

PASS_AT_K_TEMPERATURE = 0.8  # AR sampling temperature when pass@k asks for several completions


def evaluation_options(opts: DecodeOptions, mode: str, ks: Sequence[int]) -> DecodeOptions:
    """The decoding an evaluation runs: ``opts`` with enough completions for the largest k and
    AR greedy turned into sampling when there are several. Prompts are encoded as ``generate``
    encodes them: in the model's recorded prompt format unless ``opts.chat`` says otherwise."""
    completions = max(opts.completions, *ks)
    opts = dataclasses.replace(opts, completions=completions)
    if completions > 1 and opts.strategy == "greedy" and mode == "ar":
        opts = dataclasses.replace(opts, strategy="sample",
                                   temperature=opts.temperature or PASS_AT_K_TEMPERATURE)
    return opts


def evaluate_model(
    model: str | TextGenerator,
    task: str,
    opts: DecodeOptions | None = None,
    *,
    split: str = "test",
    data: str | None = None,
    limit: int | None = None,
    ks: Sequence[int] = (1,),
    batch_size: int = 8,
    dtype: str | None = None,
    device: str | None = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    metric: str | None = None,
) -> dict:
    """Decode ``task`` with ``model`` (a spec ``--model`` accepts, or a loaded generator), score
    it, and return (and write to ``out``) the results with their setup.

    ``task`` ``jsonl`` (or None with ``data``) is your own JSONL file ``data``, scored by
    ``metric`` (see :data:`ar2diff.evaluation.scoring.GENERIC_METRICS`). ``dtype`` None loads
    the weights as stored; ``device`` ``auto`` picks the accelerator when there is one."""
    began = time.perf_counter()
    resolve_dtype(dtype)  # a bad value fails before any work
    task = task_for(task, data)
    examples = load_task(task, split, data, limit)
    metric = generic_metric(task, examples, metric)
    gen = model if isinstance(model, TextGenerator) else TextGenerator.load(str(model), dtype,
                                                                           device)
    opts = opts or DecodeOptions()
    mode = gen.mode(opts)
    opts = evaluation_options(opts, mode, ks)
    start = time.perf_counter()
    results = evaluate_task(examples, lambda prompts, n: gen.generate(prompts, opts), task,
                            num_samples=opts.completions, ks=ks, batch_size=batch_size,
                            progress=progress, metric=metric)
    results["seconds"] = time.perf_counter() - start
    results["wall_seconds"] = time.perf_counter() - began
    setup = {"model": str(model) if not isinstance(model, TextGenerator) else None,
             "mode": mode, "dtype": dtype, "device": str(gen.backbone.device),
             "prompt_format": gen.prompt_format(opts.chat),
             "decoding": dataclasses.asdict(opts)}
    if mode == "diffusion":
        setup["diffusion"] = dataclasses.asdict(gen.diffusion_config(opts))
        setup["noise"] = gen.noise.name
    return _finish(results, setup, task, split, limit, data, batch_size, out)


def score_predictions_file(
    task: str,
    predictions: str | os.PathLike,
    *,
    split: str = "test",
    data: str | None = None,
    limit: int | None = None,
    ks: Sequence[int] = (1,),
    out: str | os.PathLike | None = None,
    metric: str | None = None,
) -> dict:
    """Score a JSONL file of predictions made elsewhere, as :func:`evaluate_model` scores."""
    began = time.perf_counter()
    task = task_for(task, data)
    examples = load_task(task, split, data, limit)
    results = score_predictions(task, examples, predictions, ks, metric=metric)
    results["wall_seconds"] = time.perf_counter() - began
    return _finish(results, {"predictions": str(predictions)}, task, split, limit, data, None, out)


def task_for(task: str | None, data: str | None) -> str:
    """The task to load: the named one, or ``jsonl`` (your own file) when only data is given."""
    if task is None:
        if data is None:
            raise Ar2DiffError("name a task (--task) or give your own JSONL file (--data FILE)")
        return "jsonl"
    return task


def _finish(results: dict, setup: dict, task: str, split: str, limit: int | None,
            data: str | None, batch_size: int | None, out: str | os.PathLike | None) -> dict:
    results["setup"] = {**setup, "task": task, "split": split, "limit": limit, "data": data,
                        "batch_size": batch_size, "ar2diff_version": version(),
                        "commit": git_commit()}
    if out is not None:
        write_json_atomic(out, results)
    return results
