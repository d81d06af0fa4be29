"""A run's logs: one JSON line of metrics per step (``metrics.jsonl``), a loss curve
(``loss.png``) and, with ``train.tensorboard=true``, TensorBoard scalars (``tensorboard/``), all
in the run folder and written by rank 0 only."""

from __future__ import annotations

import json
from numbers import Real
from pathlib import Path

from ar2diff.errors import Ar2DiffError

METRICS = "metrics.jsonl"
PLOT = "loss.png"
TENSORBOARD = "tensorboard"


class MetricsLog:
    """Appends step records to ``out/metrics.jsonl``; :meth:`plot` draws the loss curves."""

    def __init__(self, out: Path, tensorboard: bool = False):
        self.path = Path(out) / METRICS
        self.tensorboard = tensorboard
        if tensorboard:
            _summary_writer_class()  # a missing package is refused before the run starts
        self.writer = None

    def restart(self, history: list[dict]) -> None:
        """Rewrite the log as ``history`` (the steps a resumed run keeps; empty for a new run)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
        if self.tensorboard:  # events past the kept steps are purged
            step = history[-1]["step"] + 1 if history else 0
            self.writer = _summary_writer_class()(log_dir=str(self.path.parent / TENSORBOARD),
                                                  purge_step=step)

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, Real):
                    self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def plot(self, history: list[dict]) -> Path | None:
        """Training (and held-out) loss against step as ``loss.png``; None without steps."""
        if not history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss",
                linewidth=1)
        evals = [r for r in history if r.get("eval_loss") is not None]
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-",
                    label="held-out loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean per token)")
        ax.legend()
        fig.tight_layout()
        path = self.path.parent / PLOT
        fig.savefig(path)
        plt.close(fig)
        return path


def _summary_writer_class():
    """TensorBoard's writer class; one line naming the extra when it is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise Ar2DiffError("train.tensorboard=true needs the tensorboard package: pip install "
                           "'ar2diff[tensorboard]' (or set train.tensorboard=false)") from exc
    return SummaryWriter
