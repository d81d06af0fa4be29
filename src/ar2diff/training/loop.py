"""One training loop for every stage (pretrain, adapt, finetune), driven by a :class:`RunConfig`.

AdamW with warm-up and decay, gradient accumulation, optional bf16 autocast, a progress bar
with loss and tokens/s, periodic held-out evaluation, atomic checkpoints (weights, config,
optimizer, scheduler, RNG and step) and exact resume. The loss of a step is the sum of token
losses over the whole global batch divided by its token count, so the micro-batch size does not
change the result.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ar2diff.atomic import write_json_atomic
from ar2diff.config import RunConfig, save_config
from ar2diff.data.batching import Batch, collate
from ar2diff.data.sources import HELD_OUT, ExampleSource
from ar2diff.devices import resolve_device
from ar2diff.errors import Ar2DiffError
from ar2diff.losses.ar import ar_loss
from ar2diff.models.attention import diffusion_layout
from ar2diff.models.backbone import Backbone
from ar2diff.models.checkpoint import load_model, save_model, verify_folder
from ar2diff.models.meta import ModelMeta
from ar2diff.noise import noise_for
from ar2diff.noise.base import NoiseProcess
from ar2diff.rng import STREAM_ANNEAL, STREAM_CORRUPTION, example_generator
from ar2diff.tokenization import special_ids
from ar2diff.training import distributed
from ar2diff.training.logs import MetricsLog

STATE = "trainer_state.pt"


@dataclass
class TrainResult:
    """What a finished run left: the model folder and the loss history."""

    model_dir: Path
    history: list[dict] = field(default_factory=list)
    final_eval_loss: float | None = None
    best_step: int | None = None  # the step of the lowest held-out loss (saved in ``best/``)


def lr_lambda(config: RunConfig):
    """Multiplier of the base learning rate at each step: linear warm-up, then decay."""
    o, total = config.optim, config.train.steps

    def fn(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.decay == "constant":
            return 1.0
        frac = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        shape = 1 - frac if o.decay == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return fn


def objective_loss(backbone: Backbone, batch: Batch, indices: list[int], config: RunConfig,
                   noise: NoiseProcess | None, step: int | None = None) -> tuple[torch.Tensor, int]:
    """Summed token loss of the configured objective and its token count.

    ``noise`` is the diffusion run's noise process (None for AR); ``step`` (0-based, training
    only) drives attention-mask annealing over the first ``objective.anneal_steps`` steps;
    evaluation uses the final, fully bidirectional mask.
    """
    o = config.objective
    if noise is None:
        return ar_loss(backbone, batch, "causal" if o.format == "causal" else o.input_attention)
    seed = config.train.seed
    gens = [example_generator(seed, i, STREAM_CORRUPTION) for i in indices]
    anneal = None
    if step is not None and step < o.anneal_steps:
        anneal = ((step + 1) / (o.anneal_steps + 1),
                  example_generator(seed, indices[0], STREAM_ANNEAL))
    return noise.loss(backbone, batch, gens, o.shift, diffusion_layout(o.input_attention), anneal)


def autocast(config: RunConfig):
    if config.train.bf16:
        return torch.autocast(resolve_device(config.train.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Holds the model, optimizer and data of a run; :meth:`run` trains it to the end."""

    def __init__(self, config: RunConfig, model, tokenizer, meta: ModelMeta, source: ExampleSource):
        self.config, self.tokenizer, self.source = config, tokenizer, source
        self.out = Path(config.train.out_dir)
        self.meta = meta.for_run(config)
        o = config.objective
        self.noise = (noise_for(self.meta, len(tokenizer), o.unroll, o.unroll_input,
                                (o.mask_rate_min, o.mask_rate_max))
                      if self.meta.mode == "diffusion" else None)
        self.backbone = Backbone(model.to(resolve_device(config.train.device)),
                                 self.meta.block_size)
        self.pad_id = special_ids(tokenizer)["pad"]
        self.rank, self.world = distributed.setup()
        self.sharded = config.train.parallel == "fsdp" and self.world > 1
        if self.sharded:
            if self.backbone.is_encoder_decoder:
                raise Ar2DiffError("train.parallel=fsdp supports decoder-only models; use "
                                   "train.parallel=ddp for encoder-decoder (T5) models")
            distributed.shard(self.backbone)
        o = config.optim
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=(o.beta1, o.beta2),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.step = 0
        self.history: list[dict] = []
        self.log = MetricsLog(self.out, config.train.tensorboard) if self.rank == 0 else None

    # ---- one step --------------------------------------------------------------------------

    def train_step(self) -> dict:
        cfg = self.config.train
        model = self.backbone.model
        model.train()
        indices = [self.step * cfg.batch_size + j for j in range(cfg.batch_size)]
        indices = indices[self.rank::self.world]
        examples = [self.source.example(i) for i in indices]
        n_tokens, seen = distributed.sum_over_ranks(
            [sum(len(e.target_ids) for e in examples),
             sum(len(e.input_ids) + len(e.target_ids) for e in examples)])
        micro = cfg.micro_batch_size or cfg.batch_size
        total = 0.0
        for lo in range(0, len(examples), micro):
            if self.sharded:  # reduce-scatter gradients after the last micro-batch only
                self.backbone.set_requires_gradient_sync(lo + micro >= len(examples))
            batch = collate(examples[lo:lo + micro], self.pad_id)
            with autocast(self.config):
                loss_sum, _ = objective_loss(self.backbone, batch, indices[lo:lo + micro],
                                             self.config, self.noise, self.step)
            (loss_sum / n_tokens).backward()
            total += float(loss_sum.detach())
        if not self.sharded:
            distributed.sum_gradients(model.parameters())
        loss = distributed.sum_over_ranks([total])[0] / n_tokens
        if not math.isfinite(loss):
            raise Ar2DiffError(
                f"loss became {loss} at step {self.step + 1}; stopped. The last good checkpoint "
                f"is kept in {self.out / 'checkpoints'}; lower optim.lr or enable train.bf16=false"
            )
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.optim.grad_clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "loss": loss, "grad_norm": grad_norm,
                "lr": self.scheduler.get_last_lr()[0], "tokens": seen}

    @torch.no_grad()
    def eval_loss(self) -> float:
        """Mean token loss of the objective on the held-out examples."""
        cfg = self.config.train
        self.backbone.model.eval()
        indices = [HELD_OUT + i for i in range(cfg.eval_examples)][self.rank::self.world]
        total, count = 0.0, 0
        micro = cfg.micro_batch_size or cfg.batch_size
        for lo in range(0, len(indices), micro):
            chunk = indices[lo:lo + micro]
            batch = collate([self.source.example(i) for i in chunk], self.pad_id)
            with autocast(self.config):
                loss_sum, n = objective_loss(self.backbone, batch, chunk, self.config,
                                             self.noise)
            total, count = total + float(loss_sum.detach()), count + n
        total, count = distributed.sum_over_ranks([total, count])
        return total / max(count, 1)

    # ---- the loop ----------------------------------------------------------------------------

    def announce(self) -> None:
        """Print where and how the run trains: processes, device, and the resolved config."""
        if self.rank > 0:
            return
        cfg = self.config.train
        where = f"resuming at step {self.step}" if self.step else "from step 0"
        print(f"training {self.out}: {self.meta.mode} model, {self.world} process(es), device "
              f"{self.backbone.device}, {cfg.steps} steps {where}; config in "
              f"{self.out / 'config.yaml'}, metrics in {self.out / 'metrics.jsonl'}", flush=True)
        if cfg.progress:
            import yaml

            text = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
            print("resolved config:\n  " + text.rstrip().replace("\n", "\n  "), flush=True)

    def _keep_best(self, eval_loss: float) -> None:
        """Save the weights as ``best/`` when ``eval_loss`` is the lowest held-out loss yet."""
        earlier = [r["eval_loss"] for r in self.history if r.get("eval_loss") is not None]
        if earlier and eval_loss >= min(earlier):
            return
        weights = self._full_weights()
        if self.rank == 0:
            save_model(self.out / "best", self.backbone.model, self.tokenizer, self.meta,
                       state_dict=weights)
            write_json_atomic(self.out / "best.json", {"step": self.step, "eval_loss": eval_loss})
        distributed.barrier()

    def run(self) -> TrainResult:
        cfg = self.config.train
        self.announce()
        if self.log is not None:
            self.log.restart(self.history)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress or self.rank > 0,
                   desc="train",
                   dynamic_ncols=True)
        eval_loss = None
        while self.step < cfg.steps:
            start = time.perf_counter()
            record = self.train_step()
            record["tokens_per_s"] = record["tokens"] / (time.perf_counter() - start)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                eval_loss = record["eval_loss"] = self.eval_loss()
                self._keep_best(eval_loss)
            self.history.append(record)
            if self.log is not None:
                self.log.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                            **({"eval": f"{eval_loss:.3f}"} if eval_loss is not None else {}))
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        bar.close()
        weights = self._full_weights()  # gathered once for the last checkpoint and the model
        self.save_checkpoint(weights)
        model_dir = self.out / "model"
        if self.rank == 0:
            save_model(model_dir, self.backbone.model, self.tokenizer, self.meta,
                       state_dict=weights)
        if self.log is not None:
            self.log.plot(self.history)
            self.log.close()
        distributed.barrier()
        return TrainResult(model_dir, self.history, eval_loss, best_step(self.history))

    # ---- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, weights: dict[str, torch.Tensor] | None = None) -> Path:
        """Atomically write ``checkpoints/step-N`` and keep the last ``train.keep_last``.

        ``weights``: the FSDP-gathered weights when the caller has them already.
        """
        state = {
            "step": self.step,
            "optimizer": (distributed.full_optimizer_state(self.backbone.model, self.optimizer)
                          if self.sharded else self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }

        def extra(tmp: Path) -> None:
            torch.save(state, tmp / STATE)
            save_config(self.config, tmp / "config.yaml")

        folder = self.out / "checkpoints" / f"step-{self.step:08d}"
        if weights is None:
            weights = self._full_weights()
        if self.rank == 0:
            save_model(folder, self.backbone.model, self.tokenizer, self.meta, extra, weights)
            self._write_log()
            for old in checkpoints(self.out)[:-max(1, self.config.train.keep_last)]:
                shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
        return folder

    def _full_weights(self) -> dict[str, torch.Tensor] | None:
        """FSDP: the weights gathered from all ranks; otherwise None (the model's own)."""
        if not self.sharded:
            return None
        model = self.backbone.model
        weights = distributed.full_state_dict(model)
        own = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        return {k: v for k, v in weights.items() if k in own}  # tied copies are saved once

    def _write_log(self) -> None:
        write_json_atomic(self.out / "history.json", self.history)

    def load_checkpoint(self, folder: Path) -> None:
        model, _, _ = load_model(folder)
        state = load_trainer_state(folder / STATE)
        if self.sharded:
            distributed.load_sharded(self.backbone.model, self.optimizer, model.state_dict(),
                                     state["optimizer"])
        else:
            self.backbone.model.load_state_dict(model.state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.history = state["history"]


def load_trainer_state(path: Path) -> dict:
    """A checkpoint's trainer state, unpickled with torch's weights-only loader (no code runs).

    Only tensors and plain containers of numbers, strings and booleans load: a file holding
    any other object is refused, as is one without the keys a resume needs.
    """
    import pickle

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise Ar2DiffError(
            f"{path} holds objects other than tensors and plain values, refused (unpickling them "
            f"could run code: {first}); resume from a checkpoint ar2diff wrote, or start afresh"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise Ar2DiffError(f"{path} is not a readable trainer state ({exc}); "
                           "resume from an earlier checkpoint or start afresh") from None
    needed = {"step", "optimizer", "scheduler", "torch_rng", "history"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise Ar2DiffError(f"{path} lacks the trainer state keys {sorted(needed)}; "
                           "resume from a checkpoint ar2diff wrote, or start afresh")
    if not isinstance(state["step"], int) or not isinstance(state["torch_rng"], torch.Tensor):
        raise Ar2DiffError(f"{path}: step or torch_rng has the wrong type; start afresh")
    return state


def best_step(history: list[dict]) -> int | None:
    """The step with the lowest held-out loss (the first of equals), None without evaluations."""
    evals = [r for r in history if r.get("eval_loss") is not None]
    return min(evals, key=lambda r: r["eval_loss"])["step"] if evals else None


def checkpoints(out: Path) -> list[Path]:
    """Finished checkpoint folders of a run, oldest first."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"step-\d{8}", p.name)]
    return sorted(found)


def latest_valid_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint whose checksums verify (a damaged newer one is skipped)."""
    for folder in reversed(checkpoints(out)):
        try:
            verify_folder(folder)
            return folder
        except Ar2DiffError as exc:
            print(f"warning: skipping {folder}: {exc}")
    return None


def check_output_dir(out: Path) -> None:
    """Fail before training if the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as exc:
        raise Ar2DiffError(f"output folder {out} is not writable ({exc.strerror}); "
                           "choose another train.out_dir") from exc


def train(config: RunConfig, model, tokenizer, meta: ModelMeta, source: ExampleSource,
          resume: bool = False) -> TrainResult:
    """Train (or resume) a run to ``config.train.steps``; returns where the model was saved."""
    out = Path(config.train.out_dir)
    check_output_dir(out)
    trainer = Trainer(config, model, tokenizer, meta, source)
    if trainer.rank == 0:
        remove_partial_writes(out)
        save_config(config, out / "config.yaml")
    distributed.barrier()
    if resume:
        folder = latest_valid_checkpoint(out)
        if folder is not None:
            trainer.load_checkpoint(folder)
            if trainer.rank == 0:
                print(f"resumed from {folder} (step {trainer.step})")
    return trainer.run()


def remove_partial_writes(out: Path) -> None:
    """Delete temporary folders a killed run left behind (they never look like checkpoints)."""
    for parent in (out, out / "checkpoints"):
        if parent.is_dir():
            for p in parent.iterdir():
                if not (p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)):
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
